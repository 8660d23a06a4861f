"""The Reasoner's batching policy: a lone dialogue never waits; dialogues in step decode together.

The batcher's clock is the event loop's, so these tests run it on ``VirtualClockLoop``: an event
loop whose clock stands still while anything can run and jumps to the next timer when every task
waits. ``run`` executes inline and the model's work is a step of that clock, so every time below
is exact and hand-checkable, and the machine's speed plays no part.
"""

import asyncio
import selectors

import pytest

from serving.replicas.batching import DialogueBatcher

WORK = 0.01  # the model's work per batch, in virtual seconds


class _JumpingSelector(selectors.DefaultSelector):
    """Never sleeps: when the loop would wait for a timer, the clock jumps to it."""

    def __init__(self, loop: "VirtualClockLoop"):
        super().__init__()
        self.loop = loop

    def select(self, timeout=None):
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # nothing scheduled and no thread at work: it would hang
            raise RuntimeError("deadlock: every task waits and no timer is set")
        self.loop.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, with ``run_in_executor`` (so ``asyncio.to_thread``) run inline."""

    def __init__(self):
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now

    def run_in_executor(self, executor, func, *args):
        future = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as e:
            future.set_exception(e)
        return future


def run_virtual(main):
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(main())


class Model:
    """A stand-in ``run``: records each batch's items and takes ``WORK`` of the loop's clock."""

    def __init__(self, fail: Exception | None = None):
        self.batches: list[list] = []
        self.fail = fail

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        asyncio.get_running_loop().now += WORK
        if self.fail:
            raise self.fail
        return [f"answer to {item}" for item in items]


async def timed(batcher: DialogueBatcher, dialogue: str, item) -> float:
    """Submit one round; how long it took on the loop's clock."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await batcher.submit(dialogue, item) == f"answer to {item}"
    return loop.time() - start


def test_the_virtual_clock_moves_only_by_timers_and_the_models_work():
    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.25)
        Model()([1])
        return loop.time()

    assert run_virtual(main) == pytest.approx(0.25 + WORK, abs=1e-12)


def test_a_lone_dialogue_never_waits_for_others():
    model = Model()

    async def main():
        batcher = DialogueBatcher(model, max_wait_s=1.0)
        latencies = []
        for k in range(4):
            latencies.append(await timed(batcher, "s1", k))
            await asyncio.sleep(0.005)  # the client reads the answer and asks again
        return latencies, batcher.batches

    latencies, batches = run_virtual(main)
    assert model.batches == [[0], [1], [2], [3]] and batches == 4
    assert latencies == pytest.approx([WORK] * 4, abs=1e-9)  # the model's work only, never max_wait_s


def test_dialogues_in_step_are_decoded_together_not_in_fragments():
    model = Model()

    async def main():
        batcher = DialogueBatcher(model, max_wait_s=1.0)

        async def dialogue(i: int):
            for k in range(4):
                await timed(batcher, f"s{i}", (i, k))
                await asyncio.sleep(0.004 * ((i + k) % 6))  # staggered: 0 to 20 ms to send the next round

        await asyncio.gather(*(dialogue(i) for i in range(6)))

    run_virtual(main)
    # in the order they arrived; one batch per round, all six dialogues in it
    assert [sorted(batch) for batch in model.batches] == [[(i, k) for i in range(6)] for k in range(4)]


def test_a_dialogue_that_stops_coming_is_dropped_from_the_due_set_after_max_wait():
    model = Model()

    async def main():
        batcher = DialogueBatcher(model, max_wait_s=0.5)
        await asyncio.gather(timed(batcher, "a", "a0"), timed(batcher, "b", "b0"))  # then b ends
        latencies = []
        for k in (1, 2):
            await asyncio.sleep(0.1)
            latencies.append(await timed(batcher, "a", f"a{k}"))
        return latencies

    waited_for_b, after = run_virtual(main)
    assert model.batches == [["a0", "b0"], ["a1"], ["a2"]]
    assert waited_for_b == pytest.approx(0.5 - 0.1 + WORK, abs=1e-9)  # b was due until max_wait_s after its answer
    assert after == pytest.approx(WORK, abs=1e-9)  # then b is no longer waited for


def test_with_slow_turnarounds_a_batch_still_waits_at_most_max_wait_and_a_silent_dialogue_is_dropped():
    """Dialogues that take 300 ms to come back make the window 450 ms, longer than max_wait_s (200 ms)."""
    model = Model()

    async def main():
        batcher = DialogueBatcher(model, max_wait_s=0.2)
        for k in range(8):  # eight turnarounds of 300 ms
            await timed(batcher, "a", k)
            await asyncio.sleep(0.3)
        await asyncio.gather(timed(batcher, "a", "a8"), timed(batcher, "b", "b"))  # then b ends
        latencies = []
        for k in (9, 10):
            await asyncio.sleep(0.1)
            latencies.append(await timed(batcher, "a", f"a{k}"))
        return latencies

    capped, after = run_virtual(main)
    assert model.batches[-3:] == [["a8", "b"], ["a9"], ["a10"]]
    assert capped == pytest.approx(0.2 + WORK, abs=1e-9)  # b was due for 450 ms; a waited only max_wait_s
    assert after == pytest.approx(WORK, abs=1e-9)  # silent for over max_wait_s: b is no longer due


def test_a_batch_never_exceeds_max_batch_size():
    model = Model()

    async def main():
        batcher = DialogueBatcher(model, max_batch_size=3, max_wait_s=0.2)
        await asyncio.gather(*(timed(batcher, f"s{i}", i) for i in range(7)))
        return batcher.batches

    assert run_virtual(main) == 3
    assert model.batches == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_failing_run_gives_every_round_in_that_batch_the_error_and_the_next_batch_runs():
    error = RuntimeError("out of memory")
    model = Model(fail=error)

    async def main():
        batcher = DialogueBatcher(model, max_wait_s=0.2)
        failed = await asyncio.gather(batcher.submit("a", "a0"), batcher.submit("b", "b0"), batcher.submit(None, "x"))
        model.fail = None
        after = await asyncio.gather(batcher.submit("a", "a1"), batcher.submit("b", "b1"))
        return failed, after

    failed, after = run_virtual(main)
    assert failed == [error, error, error] and all(r is error for r in failed)
    assert after == ["answer to a1", "answer to b1"]
    assert model.batches == [["a0", "b0", "x"], ["a1", "b1"]]


# A dialogue's turnarounds (answer back -> next round sent), then the last one before the decision.
SEVEN = [0.03, 0.01, 0.06, 0.02, 0.08, 0.04, 0.05]
EIGHT = [0.03, 0.01, 0.06, 0.02, 0.08, 0.04, 0.07, 0.05]


@pytest.mark.parametrize("turnarounds, window", [
    (SEVEN, 1.0),  # fewer than 8 known: a due dialogue is waited for up to max_wait_s
    # 8 known: 1.5 x their 90th percentile, 81 ms (statistics.quantiles extrapolates past the largest, 80 ms)
    (EIGHT, 1.5 * 0.081),
], ids=["7 turnarounds", "8 turnarounds"])
def test_a_due_dialogue_is_waited_for_max_wait_until_8_turnarounds_then_1_5_times_their_p90(turnarounds, window):
    model = Model()

    async def main():
        batcher = DialogueBatcher(model, max_wait_s=1.0)
        for k, think in enumerate(turnarounds[:-1]):
            await timed(batcher, "a", k)
            await asyncio.sleep(think)
        # b joins for one round alongside a, then stops coming: its answer makes it due
        await asyncio.gather(timed(batcher, "a", "a last but one"), timed(batcher, "b", "b"))
        await asyncio.sleep(turnarounds[-1])
        return await timed(batcher, "a", "a last")  # the turnaround that makes the count

    waited = run_virtual(main)
    assert model.batches[-2:] == [["a last but one", "b"], ["a last"]]
    assert waited == pytest.approx(window - turnarounds[-1] + WORK, abs=1e-9)
