"""The token buckets of :mod:`felix.web.edge.ratelimit`, sans-IO: time is a number we pass."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import given

from felix import RateLimited
from felix.web.edge.ratelimit import RateLimiter, RateLimiterStatistics


def test_off_when_rate_is_zero() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert not limiter.enabled
    assert all(limiter.take("a:1.2.3.4", 0.0) == 0.0 for _ in range(1000))
    assert limiter.statistics() == RateLimiterStatistics(clients=0, refused=0, evicted=0)


def test_burst_then_refused_until_refilled() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.take("a", 10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 10.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert limiter.take("a", 10.25) == pytest.approx(0.25)
    assert limiter.take("a", 10.5) == 0.0
    assert limiter.take("a", 10.5) == pytest.approx(0.5)
    assert limiter.statistics().refused == 3


def test_a_refused_request_takes_nothing() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.take("a", 0.0) == 0.0
    for _ in range(100):
        assert limiter.take("a", 0.5) == pytest.approx(0.5)
    assert limiter.take("a", 1.0) == 0.0


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    limiter = RateLimiter(rate=100, burst=2)
    limiter.take("a", 0.0)
    granted = [limiter.take("a", 3600.0) for _ in range(3)]
    assert granted[:2] == [0.0, 0.0]
    assert granted[2] > 0


def test_clients_are_independent() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.take("a:10.0.0.1", 0.0) == 0.0
    assert limiter.take("a:10.0.0.1", 0.0) > 0
    assert limiter.take("a:10.0.0.2", 0.0) == 0.0
    assert limiter.take("k:0", 0.0) == 0.0


def test_check_raises_rate_limited_with_whole_seconds() -> None:
    limiter = RateLimiter(rate=0.25, burst=1)
    limiter.check("k:0", 0.0, what="publishes with this key")
    with pytest.raises(RateLimited) as info:
        limiter.check("k:0", 1.0, what="publishes with this key")
    error = info.value
    assert (error.http_status, error.code) == (429, "rate_limited")
    assert error.retry_after == 3  # 3 s to go at 0.25/s: rounded up, never 0
    assert error.to_json() == {"error": "rate_limited", "message": error.message}
    assert "publishes with this key" in error.message
    assert "k:0" not in error.message
    # A wait under a second is still "retry in 1 s", never 0.
    fast = RateLimiter(rate=1000, burst=1)
    fast.check("a", 0.0, what="x")
    with pytest.raises(RateLimited) as info:
        fast.check("a", 0.0, what="x")
    assert info.value.retry_after == 1


def test_memory_is_bounded_by_evicting_the_least_recently_used() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_clients=3)
    for client in "abc":
        limiter.take(client, 0.0)  # each now empty
    limiter.take("a", 0.1)  # "a" is now the most recently used
    limiter.take("d", 0.2)  # full map: "b", the least recently used, goes
    assert limiter.statistics() == RateLimiterStatistics(clients=3, refused=1, evicted=1)
    assert limiter.take("a", 0.3) > 0  # still remembered, still limited
    assert limiter.take("c", 0.3) > 0
    assert limiter.take("b", 0.3) == 0.0  # forgotten: starts again with a full bucket
    for i in range(10_000):
        limiter.take(f"flood-{i}", 0.5)
    assert limiter.statistics().clients == 3


def test_refilled_buckets_are_dropped_first() -> None:
    limiter = RateLimiter(rate=1, burst=2, max_clients=100)
    for i in range(50):
        limiter.take(f"old-{i}", 0.0)
    assert limiter.statistics().clients == 50
    # Two seconds later every old bucket is full again, the same as no bucket:
    # the next newcomer clears them out instead of evicting anything.
    limiter.take("new", 2.0)
    assert limiter.statistics() == RateLimiterStatistics(clients=1, refused=0, evicted=0)


@pytest.mark.parametrize(
    ("rate", "burst", "max_clients"), [(-1, 1, 1), (1, 0, 1), (1, 1, 0), (0.5, -3, 10)]
)
def test_bad_parameters(rate: float, burst: int, max_clients: int) -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=rate, burst=burst, max_clients=max_clients)


@given(
    rate=st.floats(0.1, 100),
    burst=st.integers(1, 20),
    steps=st.lists(
        st.tuples(st.sampled_from("abc"), st.floats(0, 2, allow_nan=False)), max_size=200
    ),
)
def test_never_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, steps: list[tuple[str, float]]
) -> None:
    limiter = RateLimiter(rate=rate, burst=burst, max_clients=2)
    now = 0.0
    granted: dict[str, list[float]] = {}
    for client, delay in steps:
        now += delay
        wait = limiter.take(client, now)
        assert wait >= 0
        if wait == 0:
            granted.setdefault(client, []).append(now)
    # Eviction can forgive a debt, so the bound holds per client between two
    # evictions; with no eviction it holds over the whole run.
    if limiter.statistics().evicted == 0:
        for times in granted.values():
            for i, start in enumerate(times):
                for j in range(i, len(times)):
                    assert j - i + 1 <= burst + rate * (times[j] - start) + 1e-6


async def test_with_trio_time(autojump_clock: trio.testing.MockClock) -> None:
    # How the web layer uses it: trio.current_time() as the clock.
    limiter = RateLimiter(rate=1, burst=3)
    for _ in range(3):
        limiter.check("a:127.0.0.1", trio.current_time(), what="x")
    with pytest.raises(RateLimited) as info:
        limiter.check("a:127.0.0.1", trio.current_time(), what="x")
    await trio.sleep(info.value.retry_after)  # virtual time: instant
    limiter.check("a:127.0.0.1", trio.current_time(), what="x")
