"""A round whose model replica is lost or slow: retried by the front, answered UNAVAILABLE (never held until the
caller's deadline) when no replica takes its place in time or a step hangs, and waited for while a replica works
on it. Real Redis and the shipped model in-process; the replicas' behaviour is scripted on the reasoning step as
``serving.pipeline.ServePipeline`` shows it (``StepUnavailable``; ``test_service`` holds the real one to it)."""

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
LIMITS = Limits(replica_retry_s=1.0, model_timeout_s=3.0)


class ScriptedReplica:
    """The shipped pipeline whose reasoning step's replica is: "replaced", lost mid-round, then one answers;
    "never replaced", lost, then no replica takes the step (each try answered after the pipeline's wait for
    one); "slow", a replica holds the step past the retry budget (a queue before it) and answers; "hung", a
    replica holds it and never answers."""

    def __init__(self, pipeline, *, case: str):
        self.pipeline, self.case, self.calls = pipeline, case, 0

    async def encode(self, *args):
        return await self.pipeline.encode(*args)

    async def decode(self, request):
        return await self.pipeline.decode(request)

    async def reason(self, request):
        self.calls += 1
        if self.case == "replaced" and self.calls == 1:
            raise StepUnavailable("a model replica was lost mid-round (RayActorError)")
        if self.case == "never replaced":
            if self.calls > 1:
                await asyncio.sleep(0.3)
                raise StepUnavailable("no model replica took the step within 0.3 s")
            raise StepUnavailable("a model replica was lost mid-round (RayActorError)")
        if self.case == "slow":
            await asyncio.sleep(2 * LIMITS.replica_retry_s)
        if self.case == "hung":
            await asyncio.Event().wait()
        return await self.pipeline.reason(request)


@pytest.fixture(scope="module")
def pipeline(redis_url):
    return LocalPipeline(str(SHIPPED_TINY), redis_url=redis_url)


@pytest.mark.parametrize("case", ["replaced", "never replaced", "slow", "hung"])
def test_a_lost_replica_is_retried_a_slow_one_waited_for_and_neither_outlasts_its_budget(redis_url, pipeline, case):
    async def scenario():
        store = RedisSessionStore(redis_url)
        steps = ScriptedReplica(pipeline, case=case)
        dialogue = Dialogue(store, steps, LIMITS)
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
        assert not isinstance(outcome, Exception), outcome
        assert outcome.number == 1 and calls == 2 and len(stored) == 1
    elif case == "slow":  # held by a replica past the 1 s retry budget: answered, not UNAVAILABLE
        assert outcome.number == 1 and calls == 1 and len(stored) == 1 and waited >= 2 * LIMITS.replica_retry_s
    else:  # UNAVAILABLE after the 1 s retry budget or the 3 s model timeout, not at the call's 30 s deadline
        assert isinstance(outcome, StepUnavailable) and "retry with the same request_id" in str(outcome)
        assert waited < 6 and stored == []
        assert calls > 1 if case == "never replaced" else calls == 1
