"""The per-venue request queue: token bucket, FIFO, retries, venue pauses.

A fake clock stands in for time (``monotonic`` reads it, ``sleep`` advances
it and records the sleep), so nothing waits for real time and no assertion
depends on the wall clock. Errors are real ccxt exception classes.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.live.ccxt.ratelimit import MAX_PAUSE_S, RequestQueue, parse_retry_after


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        # A queue that can never serve a call would sleep forever: fail instead of hanging.
        if len(self.sleeps) >= 10_000:
            raise RuntimeError("runaway sleeping")
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would


class TopRng(random.Random):
    """Always draws the upper bound, so back-off delays are exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


def make_queue(clock: FakeClock, **kw: Any) -> RequestQueue:
    kw.setdefault("rate_per_second", 10.0)
    kw.setdefault("burst", 5.0)
    kw.setdefault("rng", random.Random(7))
    return RequestQueue("testvenue", monotonic=clock.monotonic, sleep=clock.sleep, **kw)


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    # The queue owns an asyncio.Lock: build it inside the loop that uses it.
    return asyncio.run(coro_fn())


def flaky(errors: list[Exception], result: str = "ok") -> Callable[..., Awaitable[str]]:
    """An async ccxt-like method raising ``errors`` in turn, then returning ``result``."""
    pending = list(errors)

    async def fetch_balance(*args: Any, **kwargs: Any) -> str:
        fetch_balance.calls += 1  # type: ignore[attr-defined]
        if pending:
            raise pending.pop(0)
        return result

    fetch_balance.calls = 0  # type: ignore[attr-defined]
    return fetch_balance


def stamped(clock: FakeClock, log: list[tuple[float, Any]]) -> Callable[..., Awaitable[Any]]:
    async def fetch_ticker(tag: Any) -> Any:
        log.append((clock.t, tag))
        return tag

    return fetch_ticker


# --- token bucket -----------------------------------------------------------

def test_burst_runs_at_once_then_the_next_call_waits_one_interval():
    clock = FakeClock()
    log: list[tuple[float, Any]] = []

    async def main() -> RequestQueue:
        q = make_queue(clock, rate_per_second=10.0, burst=5.0)
        for i in range(6):
            await q.call(stamped(clock, log), i)
        return q

    q = run(main)
    times = [t for t, _ in log]
    assert times[:5] == [1000.0] * 5
    assert times[5] == pytest.approx(1000.1)
    assert clock.sleeps == [pytest.approx(0.1)]
    assert q.stats.throttled == 1 and q.stats.calls == 6 and q.stats.attempts == 6


def test_bucket_throttles_a_long_run_to_the_rate():
    clock = FakeClock()
    log: list[tuple[float, Any]] = []

    async def main() -> RequestQueue:
        q = make_queue(clock, rate_per_second=20.0, burst=1.0)
        await asyncio.gather(*(q.call(stamped(clock, log), i) for i in range(41)))
        return q

    q = run(main)
    times = [t for t, _ in log]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g == pytest.approx(0.05) for g in gaps)
    assert times[-1] - times[0] == pytest.approx(2.0)
    assert q.stats.throttled == 40


def test_weight_costs_that_many_tokens():
    clock = FakeClock()
    log: list[tuple[float, Any]] = []

    async def main() -> None:
        q = make_queue(clock, rate_per_second=2.0, burst=5.0)
        await q.call(stamped(clock, log), "heavy", weight=5)
        await q.call(stamped(clock, log), "next", weight=3)

    run(main)
    assert [t for t, _ in log] == [1000.0, pytest.approx(1001.5)]


@pytest.mark.parametrize("weight", [5.5, 100.0, 0.0, -1.0])
def test_weight_above_burst_or_not_positive_is_refused(weight: float):
    clock = FakeClock()
    fn = flaky([])

    async def main() -> None:
        await make_queue(clock, burst=5.0).call(fn, weight=weight)

    with pytest.raises(ValueError, match="testvenue fetch_balance: weight"):
        run(main)
    assert fn.calls == 0 and clock.sleeps == []  # type: ignore[attr-defined]


def test_calls_are_served_in_arrival_order_a_heavy_call_is_not_starved():
    clock = FakeClock()
    log: list[tuple[float, Any]] = []
    weights = [1, 1, 5, 1, 1]

    async def main() -> None:
        q = make_queue(clock, rate_per_second=1.0, burst=5.0)
        await asyncio.gather(*(q.call(stamped(clock, log), i, weight=w) for i, w in enumerate(weights)))

    run(main)
    # Without FIFO the two light calls would slip into the 3 tokens the heavy one waits on.
    assert [tag for _, tag in log] == [0, 1, 2, 3, 4]
    assert [t for t, _ in log] == [1000.0, 1000.0, pytest.approx(1002.0), pytest.approx(1003.0), pytest.approx(1004.0)]


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.5, 50.0),
    burst=st.integers(1, 10),
    steps=st.lists(st.tuples(st.floats(0.0, 2.0), st.floats(0.1, 1.0)), min_size=1, max_size=40),
)
def test_tokens_taken_in_any_window_never_exceed_burst_plus_rate_times_window(rate, burst, steps):
    clock = FakeClock()
    log: list[tuple[float, Any]] = []

    async def main() -> None:
        q = make_queue(clock, rate_per_second=rate, burst=float(burst))
        fn = stamped(clock, log)
        for gap, fraction in steps:
            await clock.sleep(gap)
            await q.call(fn, fraction * burst, weight=fraction * burst)

    run(main)
    for i in range(len(log)):
        taken = 0.0
        for j in range(i, len(log)):
            taken += log[j][1]
            window = log[j][0] - log[i][0]
            assert taken <= burst + rate * window + 1e-6


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.integers(1, 4), min_size=1, max_size=25))
def test_any_mix_of_concurrent_weights_runs_in_arrival_order(weights):
    clock = FakeClock()
    log: list[tuple[float, Any]] = []

    async def main() -> None:
        q = make_queue(clock, rate_per_second=3.0, burst=4.0)
        await asyncio.gather(*(q.call(stamped(clock, log), i, weight=w) for i, w in enumerate(weights)))

    run(main)
    assert [tag for _, tag in log] == list(range(len(weights)))


# --- retries ----------------------------------------------------------------

@pytest.mark.parametrize("error", [ccxt.RequestTimeout, ccxt.ExchangeNotAvailable, ccxt.InvalidNonce,
                                   ccxt.NetworkError, ccxt.OnMaintenance])
def test_network_errors_are_retried_then_succeed(error: type[Exception]):
    clock = FakeClock()
    fn = flaky([error("boom"), error("boom")])

    async def main() -> tuple[str, RequestQueue]:
        q = make_queue(clock)
        return await q.call(fn), q

    result, q = run(main)
    assert result == "ok" and fn.calls == 3  # type: ignore[attr-defined]
    assert (q.stats.calls, q.stats.attempts, q.stats.retries) == (1, 3, 2)
    assert len(clock.sleeps) == 2 and q.stats.paused_s == pytest.approx(sum(clock.sleeps))
    assert q.stats.last_error == f"testvenue fetch_balance: {error.__name__} (attempt 2)"


@pytest.mark.parametrize("error", [ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.AuthenticationError,
                                   ccxt.BadRequest, ccxt.ExchangeError, ccxt.OperationFailed, KeyError])
def test_other_errors_are_raised_at_once(error: type[Exception]):
    clock = FakeClock()
    raised = error("nope")
    fn = flaky([raised])

    async def main() -> None:
        await make_queue(clock).call(fn)

    with pytest.raises(error) as info:
        run(main)
    assert info.value is raised
    assert fn.calls == 1 and clock.sleeps == []  # type: ignore[attr-defined]


def test_retry_false_raises_a_timeout_at_once():
    clock = FakeClock()
    fn = flaky([ccxt.RequestTimeout("slow")])

    async def main() -> RequestQueue:
        q = make_queue(clock)
        with pytest.raises(ccxt.RequestTimeout):
            await q.call(fn, retry=False)
        return q

    q = run(main)
    assert fn.calls == 1 and q.stats.retries == 0 and clock.sleeps == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("error", [ccxt.RequestTimeout, ccxt.ExchangeNotAvailable, ccxt.RateLimitExceeded])
def test_exhausted_attempts_reraise_the_last_error_unchanged(error: type[Exception]):
    clock = FakeClock()
    errors = [error(f"try {i}") for i in range(3)]
    fn = flaky(errors)

    async def main() -> None:
        await make_queue(clock, max_attempts=3).call(fn)

    with pytest.raises(error) as info:
        run(main)
    assert info.value is errors[-1] and type(info.value) is error
    assert fn.calls == 3  # type: ignore[attr-defined]


def test_backoff_is_full_jitter_doubling_up_to_the_cap():
    clock = FakeClock()
    fn = flaky([ccxt.RequestTimeout("x")] * 5)

    async def main() -> None:
        q = make_queue(clock, rng=TopRng(), max_attempts=6, base_delay_s=1.0, max_delay_s=5.0)
        await q.call(fn)

    run(main)
    assert clock.sleeps == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_comes_from_the_injected_rng():
    def delays(seed: int) -> list[float]:
        clock = FakeClock()

        async def main() -> None:
            await make_queue(clock, rng=random.Random(seed), max_attempts=5).call(flaky([ccxt.RequestTimeout("x")] * 4))

        run(main)
        return clock.sleeps

    first, again, other = delays(3), delays(3), delays(4)
    assert first == again and first != other
    expected = random.Random(3)
    assert first == [expected.uniform(0, min(8.0, 0.25 * 2 ** n)) for n in range(4)]


def test_messages_never_carry_request_arguments():
    clock = FakeClock()
    fn = flaky([ccxt.RequestTimeout("GET https://x/?signature=SECRET-SIG")] * 2)

    async def main() -> RequestQueue:
        q = make_queue(clock, max_attempts=2)
        with pytest.raises(ccxt.RequestTimeout):
            await q.call(fn, "BTC/USDT", params={"apiKey": "SECRET-KEY"})
        return q

    q = run(main)
    assert "SECRET" not in q.stats.last_error and "BTC" not in q.stats.last_error
    assert "testvenue" in q.stats.last_error and "fetch_balance" in q.stats.last_error


# --- Retry-After and venue pauses -------------------------------------------

def pausing_pair(clock: FakeClock, headers: dict[str, str] | None, *, retry: bool = True,
                 error: type[Exception] = ccxt.RateLimitExceeded) -> tuple[RequestQueue, list[tuple[float, Any]], float]:
    """Call A hits a rate limit at t0; call B starts right after. Returns the queue, the
    (time, tag) log of the successful runs of A and B, and t0."""
    log: list[tuple[float, Any]] = []
    t0 = clock.t

    async def main() -> RequestQueue:
        q = make_queue(clock, headers=lambda: headers, rng=random.Random(1))
        failed = asyncio.Event()

        async def create_order() -> str:
            if not failed.is_set():
                failed.set()
                raise error("429")
            log.append((clock.t, "A"))
            return "A"

        async def a() -> None:
            try:
                await q.call(create_order, retry=retry)
            except error:
                pass

        async def b() -> None:
            await failed.wait()
            await q.call(stamped(clock, log), "B")

        await asyncio.gather(a(), b())
        return q

    q = run(main)
    return q, log, t0


@pytest.mark.parametrize("key", ["Retry-After", "retry-after", "RETRY-AFTER"])
@pytest.mark.parametrize("error", [ccxt.RateLimitExceeded, ccxt.DDoSProtection])
def test_retry_after_pauses_the_failing_call_and_every_other_call(key: str, error: type[Exception]):
    clock = FakeClock()
    q, log, t0 = pausing_pair(clock, {key: "7"}, error=error)
    starts = {tag: t for t, tag in log}
    assert starts["A"] >= t0 + 7 and starts["B"] >= t0 + 7
    assert q.stats.paused_s >= 7
    assert q.stats.retries == 1


def test_fractional_retry_after_is_honoured():
    clock = FakeClock()
    _, log, t0 = pausing_pair(clock, {"Retry-After": "2.5"})
    assert min(t for t, _ in log) >= t0 + 2.5


def test_retry_false_still_pauses_later_calls():
    clock = FakeClock()
    q, log, t0 = pausing_pair(clock, {"Retry-After": "3"}, retry=False)
    assert [tag for _, tag in log] == ["B"]
    assert log[0][0] >= t0 + 3
    assert q.stats.attempts == 2 and q.stats.retries == 0


def test_rate_limit_without_header_pauses_for_the_backoff_only():
    clock = FakeClock()
    q, log, t0 = pausing_pair(clock, None)
    first_delay = random.Random(1).uniform(0, 0.25)
    assert min(t for t, _ in log) >= t0 + first_delay
    assert q.stats.paused_s == pytest.approx(first_delay)


@pytest.mark.parametrize("value", ["soon", "", "-5", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_garbage_retry_after_is_ignored(value: str):
    clock = FakeClock()
    q, log, t0 = pausing_pair(clock, {"Retry-After": value})
    assert q.stats.paused_s <= 0.25  # the first back-off bound, not the header
    assert max(t for t, _ in log) <= t0 + 0.25 + 0.2  # plus at most two token intervals


def test_parse_retry_after():
    assert parse_retry_after({"retry-after": " 12 "}) == 12.0
    assert parse_retry_after({"Content-Type": "x", "Retry-After": "0.5"}) == 0.5
    assert parse_retry_after({"Retry-After": "0"}) == 0.0
    assert parse_retry_after({"Retry-After": "-1"}) is None
    assert parse_retry_after({"Content-Type": "x"}) is None
    assert parse_retry_after(None) is None


def test_bucket_restarts_empty_after_a_pause():
    clock = FakeClock()
    log: list[tuple[float, Any]] = []

    async def main() -> None:
        q = make_queue(clock, rate_per_second=10.0, burst=5.0, headers=lambda: {"Retry-After": "4"})
        await q.call(flaky([ccxt.RateLimitExceeded("429")]))
        for i in range(3):
            await q.call(stamped(clock, log), i)

    run(main)
    times = [t for t, _ in log]
    # A full bucket after the pause would send all three at once.
    assert times[1] - times[0] == pytest.approx(0.1) and times[2] - times[1] == pytest.approx(0.1)


def test_retry_after_above_the_cap_raises_and_bans_the_venue():
    clock = FakeClock()
    fn = flaky([ccxt.DDoSProtection("418")])
    later = flaky([])

    async def main() -> None:
        q = make_queue(clock, headers=lambda: {"Retry-After": "3600"})
        with pytest.raises(ccxt.DDoSProtection, match=r"testvenue fetch_balance: Retry-After 3600 s"):
            await q.call(fn)
        with pytest.raises(ccxt.DDoSProtection, match=r"testvenue fetch_balance: venue banned"):
            await q.call(later)
        assert later.calls == 0  # type: ignore[attr-defined]
        clock.t += 3600
        assert await q.call(later) == "ok"

    run(main)
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert all(s <= MAX_PAUSE_S for s in clock.sleeps)


def test_retry_after_at_the_cap_is_waited():
    clock = FakeClock()
    _, log, t0 = pausing_pair(clock, {"Retry-After": str(MAX_PAUSE_S)})
    assert min(t for t, _ in log) >= t0 + MAX_PAUSE_S


# --- construction -------------------------------------------------------------

@pytest.mark.parametrize("kw", [{"rate_per_second": 0.0}, {"burst": 0.0}, {"max_attempts": 0}])
def test_bad_settings_are_refused(kw: dict[str, float]):
    with pytest.raises(ValueError):
        make_queue(FakeClock(), **kw)


def test_for_exchange_reads_rate_id_and_live_headers_from_a_ccxt_client():
    clock = FakeClock()

    async def main() -> None:
        ex = ccxt_async.binance()
        try:
            q = RequestQueue.for_exchange(ex, monotonic=clock.monotonic, sleep=clock.sleep)
            assert ex.rateLimit == 50
            assert (q.venue, q.rate, q.burst) == ("binance", 20.0, 20.0)
            ex.last_response_headers = {"Retry-After": "500"}  # as ccxt sets it before raising
            with pytest.raises(ccxt.DDoSProtection, match="binance fetch_balance: Retry-After 500"):
                await q.call(flaky([ccxt.DDoSProtection("418")]))
            small = RequestQueue.for_exchange(ex, burst=3, max_attempts=2)
            assert (small.rate, small.burst, small.max_attempts) == (20.0, 3, 2)
        finally:
            await ex.close()

    run(main)
