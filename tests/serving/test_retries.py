"""Retry with backoff: the schedule of pauses, and the loop that follows it (blocking and asyncio)."""

import asyncio
import itertools
import random

import pytest

from serving.retries import Backoff, retry, retry_async


def test_pauses_double_up_to_the_longest_for_at_most_the_retries():
    assert list(Backoff(first_s=0.5, longest_s=2.0, retries=5).pauses()) == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert list(Backoff(first_s=0.1, retries=0).pauses()) == []


def test_pauses_stop_where_the_budget_or_the_deadline_would_be_overrun():
    assert list(Backoff(first_s=0.1, budget_s=0.75).pauses()) == [0.1, 0.2, 0.4]  # 0.8 would end past 0.75
    assert list(Backoff(first_s=0.1, budget_s=10.0).pauses(deadline=0.0)) == []  # a deadline already passed


def test_jitter_shortens_each_pause_by_at_most_its_fraction():
    pauses = list(Backoff(first_s=1.0, longest_s=1.0, retries=50, jitter=0.5).pauses(rng=random.Random(0)))
    assert all(0.5 <= p <= 1.0 for p in pauses) and len(set(pauses)) > 1
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)


def test_only_retryable_errors_are_retried_and_the_last_one_is_raised():
    calls = itertools.count(1)

    def flaky():
        n = next(calls)
        if n < 3:
            raise ConnectionError(f"try {n}")
        return n

    fast = Backoff(first_s=0.0, retries=5)
    assert retry(flaky, lambda e: isinstance(e, ConnectionError), fast) == 3
    tries = []

    def down():
        tries.append(1)
        raise ConnectionError(f"try {len(tries)}")

    with pytest.raises(ConnectionError, match="try 3"):  # the first try and two retries, then its error
        retry(down, lambda e: True, Backoff(first_s=0.0, retries=2))
    with pytest.raises(ValueError):
        retry(lambda: int("x"), lambda e: isinstance(e, ConnectionError), fast)  # not retryable: raised at once


def test_the_asyncio_loop_retries_the_same_way():
    tries = []

    async def attempt():
        tries.append(len(tries))
        if len(tries) < 2:
            raise TimeoutError
        return "done"

    assert asyncio.run(retry_async(attempt, lambda e: isinstance(e, TimeoutError), Backoff(first_s=0.0))) == "done"
    assert tries == [0, 1]
