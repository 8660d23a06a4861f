"""Retry with backoff, written once: a schedule of pauses (``Backoff``) and the loop that follows it, blocking
(``retry``: the Python client, the PACS client, the chaos harness) and asyncio (``retry_async``: the dialogue's
store and replica retries). Only what is safe to send again is retried: each caller says which errors are.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """When to try again after a retryable failure."""

    first_s: float = 0.1
    """The first pause; each later one doubles, up to ``longest_s``."""
    longest_s: float = float("inf")
    retries: int | None = None
    """At most this many retries; None: as many as the time allows."""
    budget_s: float | None = None
    """No retry whose pause would end more than this after the first try began; None: no time limit."""
    jitter: float = 0.0
    """Each pause is shortened by a random fraction up to this (0.5: between half and all of it), so that
    clients that failed together do not retry together."""

    def __post_init__(self):
        if self.first_s < 0 or self.longest_s < self.first_s or not 0 <= self.jitter < 1:
            raise ValueError(f"need 0 <= first_s <= longest_s and 0 <= jitter < 1, got {self.first_s}, "
                             f"{self.longest_s} and {self.jitter}")

    def pauses(self, *, deadline: float | None = None, rng: random.Random | None = None) -> Iterator[float]:
        """The pauses before each retry, from now; they stop where the retries, the budget or ``deadline``
        (``time.monotonic()``) would be overrun."""
        give_up = None if self.budget_s is None else time.monotonic() + self.budget_s
        if deadline is not None:
            give_up = deadline if give_up is None else min(give_up, deadline)
        draw = rng or random

        def schedule() -> Iterator[float]:
            pause, n = self.first_s, 0
            while self.retries is None or n < self.retries:
                wait = pause * (1 - self.jitter * draw.random()) if self.jitter else pause
                if give_up is not None and time.monotonic() + wait >= give_up:
                    return
                yield wait
                pause, n = min(2 * pause, self.longest_s), n + 1

        return schedule()


def retry(attempt: Callable[[], T], retryable: Callable[[Exception], bool], backoff: Backoff, *,
          deadline: float | None = None, rng: random.Random | None = None) -> T:
    """``attempt()``, again after each pause of ``backoff`` while it raises an error ``retryable`` says may be
    retried; then that error."""
    pauses = backoff.pauses(deadline=deadline, rng=rng)
    while True:
        try:
            return attempt()
        except Exception as e:
            pause = next(pauses, None) if retryable(e) else None
            if pause is None:
                raise
        time.sleep(pause)


async def retry_async(attempt: Callable[[], Awaitable[T]], retryable: Callable[[Exception], bool], backoff: Backoff,
                      *, deadline: float | None = None) -> T:
    """``retry`` for a coroutine: ``await attempt()``, pausing with ``asyncio.sleep``."""
    pauses = backoff.pauses(deadline=deadline)
    while True:
        try:
            return await attempt()
        except Exception as e:
            pause = next(pauses, None) if retryable(e) else None
            if pause is None:
                raise
        await asyncio.sleep(pause)
