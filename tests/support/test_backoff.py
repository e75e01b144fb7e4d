"""The shared back-off policy and Retry-After reader (``fundarb.support.backoff``)
and the numbers each of its users keeps: the history fetcher, the live
request queue and the live feed's reconnects."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundarb.data.fetch import Backoff
from fundarb.live.ccxt.feed import MarketFeed
from fundarb.live.ccxt.ratelimit import MAX_PAUSE_S, RequestQueue
from fundarb.support.backoff import BackoffPolicy, parse_retry_after


class TopRng(random.Random):
    """Always draws the upper bound."""

    def uniform(self, a: float, b: float) -> float:
        return b


class BottomRng(random.Random):
    """Always draws the lower bound."""

    def uniform(self, a: float, b: float) -> float:
        return a


bases = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
caps = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False)
factors = st.floats(min_value=1.0, max_value=10.0, allow_nan=False)
jitters = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
attempts = st.integers(min_value=0, max_value=5000)
retry_afters = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@st.composite
def policies(draw: st.DrawFn, jitter: st.SearchStrategy[float] = jitters) -> BackoffPolicy:
    return BackoffPolicy(base=draw(bases), cap=draw(caps), factor=draw(factors), jitter=draw(jitter),
                         rng=random.Random(draw(st.integers(0, 2**32))))


# --- the policy ---------------------------------------------------------------

@given(policies(), attempts)
def test_a_delay_never_exceeds_the_cap_plus_jitter(policy: BackoffPolicy, attempt: int):
    d = policy.delay(attempt)
    assert 0.0 <= d <= policy.cap * (1 + max(policy.jitter, 0.0)) * (1 + 1e-12)
    assert d >= policy.backoff(attempt) * (1 + min(policy.jitter, 0.0)) * (1 - 1e-12)


@given(policies(jitter=st.just(0.0)), attempts, attempts)
def test_without_jitter_the_delay_grows_with_the_attempt(policy: BackoffPolicy, a: int, b: int):
    low, high = sorted((a, b))
    assert policy.delay(low) <= policy.delay(high) <= policy.cap
    assert policy.delay(high) == policy.backoff(high)


@given(policies(), attempts, retry_afters, st.none() | st.floats(min_value=0.0, max_value=1e4, allow_nan=False))
def test_retry_after_is_honoured_up_to_its_cap(policy: BackoffPolicy, attempt: int, asked: float, ceiling: float | None):
    policy = BackoffPolicy(base=policy.base, cap=policy.cap, factor=policy.factor, jitter=policy.jitter,
                           retry_after_cap=ceiling, rng=policy.rng)
    d = policy.delay(attempt, asked)
    assert d >= (asked if ceiling is None else min(asked, ceiling))
    if ceiling is not None:
        assert d <= ceiling
    else:
        assert d <= max(asked, policy.cap) * (1 + max(policy.jitter, 0.0)) * (1 + 1e-12)


@pytest.mark.parametrize("asked", [None, -1.0, float("nan"), float("-inf")])
def test_an_unusable_retry_after_is_the_back_off_alone(asked: float | None):
    policy = BackoffPolicy(base=1.0, cap=8.0)
    assert [policy.delay(a, asked) for a in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_draws_from_the_injected_rng_and_only_when_asked():
    def delays(seed: int, jitter: float) -> list[float]:
        policy = BackoffPolicy(base=0.5, cap=8.0, jitter=jitter, rng=random.Random(seed))
        return [policy.delay(a) for a in range(6)]

    assert delays(3, 0.25) == delays(3, 0.25) != delays(4, 0.25)
    assert delays(3, 0.0) == delays(4, 0.0) == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert BackoffPolicy(base=1.0, cap=8.0, jitter=0.25, rng=TopRng()).delay(2) == 5.0
    assert BackoffPolicy(base=1.0, cap=8.0, jitter=-1.0, rng=BottomRng()).delay(2) == 0.0


def test_a_retry_loop_that_runs_for_ever_stays_at_the_cap():
    assert BackoffPolicy(base=0.5, cap=10.0).delay(10**6) == 10.0
    assert BackoffPolicy(base=0.0, cap=10.0).delay(10**6) == 0.0


def test_the_budget():
    policy = BackoffPolicy(base=1.0, cap=8.0, budget=10.0)
    assert not policy.over_budget(4.0, 6.0) and policy.over_budget(4.0, 6.5)
    assert not BackoffPolicy(base=1.0, cap=8.0).over_budget(1e9, 1e9)


@pytest.mark.parametrize("kw", [{"base": -1.0}, {"cap": float("nan")}, {"factor": 0.5}, {"jitter": -1.5},
                                {"jitter": float("inf")}, {"budget": -1.0}, {"retry_after_cap": -1.0}])
def test_bad_settings_are_refused(kw: dict[str, float]):
    with pytest.raises(ValueError):
        BackoffPolicy(**{"base": 1.0, "cap": 8.0, **kw})


# --- the parser ---------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("headers", "seconds"), [
    (None, None),
    ({}, None),
    ({"Content-Type": "application/json"}, None),  # absent
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": " 12 "}, 12.0),
    ({"RETRY-AFTER": "2.5"}, 2.5),
    ({"rEtRy-AfTeR": 3}, 3.0),  # mixed case key, a number rather than text
    ({"Retry-After": b"4"}, 4.0),
    ({"Retry-After": "0"}, 0.0),
    ({"Retry-After": "soon"}, None),  # garbage
    ({"Retry-After": ""}, None),
    ({"Retry-After": None}, None),
    ({"Retry-After": "-1"}, None),  # negative
    ({"Retry-After": "-0.5"}, None),
    ({"Retry-After": "nan"}, None),
    ({"Retry-After": "inf"}, None),
    ({"Retry-After": "1e400"}, None),  # huge: beyond a float
    ({"Retry-After": "86400000"}, 86_400_000.0),  # huge but a number: the caller decides (the queue bans the venue)
    ({1: "5", "Retry-After": "6"}, 6.0),  # a key that is not text is skipped
])
def test_parse_retry_after(headers: dict | None, seconds: float | None):
    assert parse_retry_after(headers, now=lambda: NOW) == seconds


def test_an_http_date_is_the_seconds_until_then():
    later = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert parse_retry_after({"Retry-After": later}, now=lambda: NOW) == pytest.approx(90.0)
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=lambda: NOW) == 0.0  # past: now
    assert parse_retry_after({"Retry-After": "Wed, 99 Foo 2015 07:28:00 GMT"}, now=lambda: NOW) is None


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=30), max_size=5))
def test_the_parser_never_raises_and_never_answers_a_negative_or_infinite_wait(headers: dict[str, str]):
    seconds = parse_retry_after(headers)
    assert seconds is None or 0.0 <= seconds < float("inf")


# --- the numbers each user keeps ------------------------------------------------

def test_the_history_fetcher_keeps_its_numbers():
    b = Backoff()
    assert (b.attempts, b.base, b.cap, b.budget_s, b.jitter) == (8, 0.5, 8.0, 120.0, 0.25)
    p = Backoff(rng=TopRng()).policy
    assert (p.base, p.cap, p.factor, p.jitter, p.budget, p.retry_after_cap) == (0.5, 8.0, 2.0, 0.25, 120.0, None)
    # 0.5, 1, 2, 4, 8, 8, 8 s, each plus up to 25 %
    assert [Backoff(rng=BottomRng()).delay(a, None) for a in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [Backoff(rng=TopRng()).delay(a, None) for a in range(7)] == [0.625, 1.25, 2.5, 5.0, 10.0, 10.0, 10.0]
    # a Retry-After longer than the step wins, jittered upward too, and is not capped
    assert Backoff(rng=TopRng()).delay(0, 20.0) == 25.0
    # the same numbers as before the policy was shared: d * (1 + 0.25 * random())
    ours, theirs = Backoff(), random.Random(0)
    assert [ours.delay(a, None) for a in range(7)] == [min(8.0, 0.5 * 2**a) * (1.0 + 0.25 * theirs.random()) for a in range(7)]


def test_the_request_queue_keeps_its_numbers():
    q = RequestQueue("v", rate_per_second=10, burst=5, rng=TopRng())
    p = q.backoff
    assert (q.max_attempts, p.base, p.cap, p.factor, p.jitter, p.retry_after_cap) == (5, 0.25, 8.0, 2.0, -1.0, 120.0)
    assert MAX_PAUSE_S == 120.0
    assert [p.delay(n) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    # a venue pause: min(MAX_PAUSE_S, max(retry_after, delay_n))
    assert p.delay(0, 7.0) == 7.0 and p.delay(6, 3.0) == 8.0 and p.delay(0, 500.0) == MAX_PAUSE_S
    # the same numbers as before the policy was shared: rng.uniform(0, bound)
    ours, theirs = RequestQueue("v", rate_per_second=10, burst=5, rng=random.Random(5)).backoff, random.Random(5)
    assert [ours.delay(n) for n in range(6)] == [theirs.uniform(0.0, min(8.0, 0.25 * 2**n)) for n in range(6)]


def test_the_feed_keeps_its_numbers():
    class Exchange:
        id = "stub"
        has = {"watchBidsAsks": True}

        async def watch_bids_asks(self, symbols): ...

        async def fetch_ticker(self, symbol): ...

    feed = MarketFeed(Exchange(), account="stub:spot", symbol="X/Y", kind="spot", on_event=lambda e: None)
    p = feed.backoff
    assert (p.base, p.cap, p.factor, p.jitter) == (0.5, 10.0, 2.0, 0.0)
    # the wait after the n-th failure in a row: reconnect_delay_s * 2**(n-1), at most max_reconnect_delay_s
    assert [p.delay(n - 1) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    with pytest.raises(ValueError):
        MarketFeed(Exchange(), account="stub:spot", symbol="X/Y", kind="spot", on_event=lambda e: None,
                   reconnect_delay_s=-1.0)
