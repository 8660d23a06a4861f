"""The servicer's own rules: a call's deadline is DEADLINE_EXCEEDED, any other timeout inside a round
is an internal error; a round finished after its deadline is not appended (real Redis, the shipped
model in-process)."""

import asyncio
import time

import grpc
import pytest

from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from serving.errors import DeadlinePassed
from serving.front.dialogue import Dialogue
from serving.front.servicer import MediRoundServicer
from serving.front.status import status_of
from serving.replicas.steps import LocalPipeline
from serving.store import RedisSessionStore


class CallContext:
    """The one thing ``_bounded`` asks of grpc's servicer context: the time left before the deadline."""

    def __init__(self, remaining: float | None):
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def test_the_calls_own_deadline_is_deadline_exceeded():
    async def slow():
        await asyncio.sleep(5)

    with pytest.raises(DeadlinePassed, match="deadline passed") as caught:
        asyncio.run(MediRoundServicer(None)._bounded(CallContext(0.01), slow))
    assert status_of(caught.value) is grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_timeout_inside_a_round_is_not_the_callers_deadline():
    async def times_out_inside():
        raise TimeoutError("a step's own wait timed out")

    for remaining in (30.0, None):
        with pytest.raises(TimeoutError, match="own wait") as caught:
            asyncio.run(MediRoundServicer(None)._bounded(CallContext(remaining), times_out_inside))
        assert not isinstance(caught.value, DeadlinePassed)
        assert status_of(caught.value) is grpc.StatusCode.INTERNAL


def test_a_round_finished_after_its_deadline_is_not_appended(redis_url):
    image = (REAL_SLICES / load(REAL_DIALOGUES)[0].image).read_bytes()

    async def scenario():
        store = RedisSessionStore(redis_url)
        try:
            dialogue = Dialogue(store, LocalPipeline(str(SHIPPED_TINY), redis_url=redis_url))
            session = await dialogue.create_session(image)
            with pytest.raises(DeadlinePassed, match="nothing was appended"):
                await dialogue.run_round(session.session_id, "Segment the liver.", deadline=time.monotonic())
            assert (await dialogue.get_session(session.session_id)).round_count == 0
            assert await dialogue.list_rounds(session.session_id) == []
            return await dialogue.run_round(session.session_id, "Segment the liver.")
        finally:
            await store.close()

    assert asyncio.run(scenario()).number == 1


def test_an_internal_error_is_logged_by_kind_and_place_never_by_its_message(caplog):
    from serving.front.servicer import _abort

    class Aborted(Exception):
        pass

    class Context:
        async def abort(self, code, details):
            raise Aborted(code, details)

    patient = "".join(["Ja", "ne^Doe"])  # not in this file's source, which the traceback may show
    try:
        raise ValueError(f"'{patient}' is not a valid PatientSexValues")  # what a library may quote from a header
    except ValueError as e:
        error = e
    with pytest.raises(Aborted) as aborted:
        asyncio.run(_abort(Context(), "GetSegmentation", error))
    assert aborted.value.args == (grpc.StatusCode.INTERNAL, "internal error (ValueError); the request was not applied")
    logged = caplog.text
    assert "GetSegmentation failed with ValueError" in logged and "test_servicer.py" in logged
    assert "Jane" not in logged
