"""The Reasoner's scheduling policy: which rounds of which dialogues decode together, and when.

Only the policy lives here, on asyncio alone (no Ray, no model): ``DialogueBatcher`` queues rounds
and hands them to a ``run`` callable in batches. Its clock is the running event loop's
(``loop.time()``, and the timers ``asyncio.wait_for`` sets), so a test can drive it with an event
loop whose clock it controls.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections import deque
from collections.abc import Callable

from serving.replicas import metrics


class DialogueBatcher:
    """Batches rounds of different dialogues for lockstep decoding, one batch at a time.

    A generation step costs about the same for one dialogue as for thirty, so a batch should hold
    every dialogue that is about to send its next round. ``serve.batch`` waits a fixed time after
    the first request; here a batch waits only for dialogues that are due: those whose last round
    came back within the recent turnaround (the time dialogues take to send their next round,
    90th percentile, times 1.5; ``max_wait_s`` until 8 turnarounds are known), and never past
    ``max_wait_s``. A lone dialogue never waits, and
    dialogues in step decode together instead of in fragments.
    """

    def __init__(self, run: Callable[[list], list], *, max_batch_size: int = 32, max_wait_s: float = 0.1):
        self.run = run  # list of items -> list of results, called in a worker thread
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.queue: list[tuple[str | None, object, asyncio.Future]] = []
        self.returned: dict[str, float] = {}  # session id -> when its last round came back
        self.turnarounds: deque[float] = deque(maxlen=64)
        self.worker: asyncio.Task | None = None
        self.arrived = asyncio.Event()
        self.batches = 0

    async def submit(self, session_id: str | None, item) -> object:
        """Queue one round; its result, or the exception its batch raised (returned, not raised)."""
        loop = asyncio.get_running_loop()
        if session_id in self.returned:
            self.turnarounds.append(loop.time() - self.returned.pop(session_id))
        future = loop.create_future()
        self.queue.append((session_id, item, future))
        self.arrived.set()
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._work())
        return await future

    def _expected_until(self, now: float) -> float | None:
        """Until when a due dialogue may still send its round; None when none is due."""
        if not self.returned:
            return None
        horizon = self.max_wait_s  # until the turnaround is known from a few rounds
        if len(self.turnarounds) >= 8:
            horizon = 1.5 * statistics.quantiles(self.turnarounds, n=10)[-1]
        for session_id, t in list(self.returned.items()):
            if now - t > min(horizon, self.max_wait_s):
                del self.returned[session_id]  # not coming soon: a person reading, or the dialogue ended
        return max((t + horizon for t in self.returned.values()), default=None)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while self.queue:
            first = loop.time()
            while len(self.queue) < self.max_batch_size:
                until = self._expected_until(loop.time())
                if until is None or loop.time() >= min(until, first + self.max_wait_s):
                    break
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), min(until, first + self.max_wait_s) - loop.time())
            batch, self.queue = self.queue[:self.max_batch_size], self.queue[self.max_batch_size:]
            metrics.BATCH_SIZE.observe(len(batch), tags={"stage": "reason"})
            self.batches += 1
            try:
                results = await asyncio.to_thread(self.run, [item for _, item, _ in batch])
            except Exception as e:  # the batch failed as a whole: every round in it gets the error
                results = [e] * len(batch)
            done = loop.time()
            for (session_id, _, future), result in zip(batch, results, strict=True):
                if session_id is not None:
                    self.returned[session_id] = done
                if not future.done():
                    future.set_result(result)
