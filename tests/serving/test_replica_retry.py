"""A round whose model replica is lost: retried by the front, and answered UNAVAILABLE (never held until the
caller's deadline) when no replica takes its place in time. Real Redis and the shipped model in-process; the
loss is scripted on the reasoning step, as Ray Serve shows it (``StepUnavailable``)."""

import asyncio
import time

import pytest

from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from serving.errors import StepUnavailable
from serving.front.dialogue import Dialogue, Limits
from serving.replicas.steps import LocalPipeline
from serving.store import RedisSessionStore

IMAGE = (REAL_SLICES / load(REAL_DIALOGUES)[0].image).read_bytes()


class LosesItsReplica:
    """The shipped pipeline whose reasoning step has lost its replica: "replaced", it dies mid-round and then
    answers again; "never replaced", it dies and then waits as Serve waits for a replica that never comes;
    "queued", the round's first request already waits so (the replica died before it was sent)."""

    def __init__(self, pipeline, *, case: str):
        self.pipeline, self.case, self.calls = pipeline, case, 0

    async def encode(self, *args):
        return await self.pipeline.encode(*args)

    async def decode(self, request):
        return await self.pipeline.decode(request)

    async def reason(self, request):
        self.calls += 1
        if self.calls == 1 and self.case != "queued":
            raise StepUnavailable("the reasoner's replica died mid-round")
        if self.case != "replaced":
            await asyncio.Event().wait()
        return await self.pipeline.reason(request)


@pytest.fixture(scope="module")
def pipeline(redis_url):
    return LocalPipeline(str(SHIPPED_TINY), redis_url=redis_url)


@pytest.mark.parametrize("case", ["replaced", "never replaced", "queued"])
def test_a_lost_replica_is_retried_and_answered_unavailable_in_time_if_none_comes(redis_url, pipeline, case):
    async def scenario():
        store = RedisSessionStore(redis_url)
        steps = LosesItsReplica(pipeline, case=case)
        dialogue = Dialogue(store, steps, Limits(replica_retry_s=1.0))
        try:
            session = await dialogue.create_session(IMAGE)
            start = time.monotonic()
            try:
                outcome = await dialogue.run_round(session.session_id, "Segment the liver.", request_id="r1",
                                                   deadline=time.monotonic() + 30)
            except StepUnavailable as e:
                outcome = e
            waited = time.monotonic() - start
            return outcome, waited, steps.calls, await dialogue.list_rounds(session.session_id)
        finally:
            await store.close()

    outcome, waited, calls, stored = asyncio.run(scenario())
    if case == "replaced":
        assert outcome.number == 1 and calls == 2 and len(stored) == 1
    else:  # UNAVAILABLE after the 1 s retry budget, not at the call's 30 s deadline; nothing appended
        assert isinstance(outcome, StepUnavailable) and "retry with the same request_id" in str(outcome)
        assert waited < 5 and stored == []
