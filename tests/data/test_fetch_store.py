"""The fetch store and retry rules (SYNTHETIC series; the end-to-end fetch is
tested against the loopback emulator)."""

from __future__ import annotations

import ccxt
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.data.fetch import (
    FUNDING_SCHEMA,
    Backoff,
    FetchError,
    call_with_retry,
    check_funding,
    funding_rows,
    merge_into_store,
    read_store,
)

H = 3_600_000


def frame(ts, rates=None, marks=None):
    rates = rates if rates is not None else [0.0001] * len(ts)
    marks = marks if marks is not None else [None] * len(ts)
    return pl.DataFrame({"timestamp_ms": ts, "funding_rate": rates, "mark_price": marks}, schema=FUNDING_SCHEMA)


@settings(max_examples=40, deadline=None)
@given(pages=st.lists(st.lists(st.integers(0, 300), max_size=40), min_size=1, max_size=8))
def test_merging_pages_in_any_order_gives_one_sorted_series_without_duplicates(tmp_path_factory, pages):
    path = tmp_path_factory.mktemp("store") / "f.parquet"
    seen: set[int] = set()
    for page in pages:
        ts = sorted(set(page))
        added, dupes = merge_into_store(path, frame([t * 8 * H for t in ts]))
        assert added == len(set(ts) - seen) and dupes == len(ts) - added
        seen |= set(ts)
    stored = read_store(path, FUNDING_SCHEMA)
    assert stored["timestamp_ms"].to_list() == sorted(t * 8 * H for t in seen)
    assert not list(path.parent.glob(".*tmp*"))  # no temporary file left behind


def test_the_stored_row_wins_over_a_refetched_one(tmp_path):
    path = tmp_path / "f.parquet"
    merge_into_store(path, frame([0, 8 * H], [0.0001, 0.0002]))
    merge_into_store(path, frame([8 * H, 16 * H], [0.0009, 0.0003]))
    assert read_store(path, FUNDING_SCHEMA)["funding_rate"].to_list() == [0.0001, 0.0002, 0.0003]


def test_funding_rows_refuses_a_missing_rate():
    with pytest.raises(FetchError, match="no usable rate at 28800000"):
        funding_rows([{"timestamp": 0, "fundingRate": 0.0001}, {"timestamp": 8 * H, "fundingRate": None, "info": {}}])


class Venue:
    """Stands in for a ccxt client's response headers."""

    def __init__(self):
        self.last_response_headers = {}


def test_network_errors_back_off_and_honour_retry_after():
    venue, calls = Venue(), []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            venue.last_response_headers = {"Retry-After": "7"}
            raise ccxt.DDoSProtection("429")
        if len(calls) == 2:
            venue.last_response_headers = {}
            raise ccxt.ExchangeNotAvailable("502")
        return "ok"

    slept = []
    backoff = Backoff(sleep=slept.append)
    assert call_with_retry(venue, backoff, "test", flaky) == "ok"
    assert len(slept) == 2
    assert 7.0 <= slept[0] <= 7.0 * 1.25  # Retry-After beats the 0.5 s first step
    assert 1.0 <= slept[1] <= 1.25  # then 0.5 * 2**1, plus jitter


def test_retries_give_up_with_a_clear_error_and_other_errors_do_not_retry():
    backoff = Backoff(attempts=3, sleep=lambda s: None)

    def down():
        raise ccxt.RequestTimeout("timed out")

    with pytest.raises(FetchError, match="gave up after 3 attempts: RequestTimeout"):
        call_with_retry(Venue(), backoff, "funding", down)
    calls = []

    def bad_symbol():
        calls.append(1)
        raise ccxt.BadSymbol("no such market")

    with pytest.raises(FetchError, match="BadSymbol"):
        call_with_retry(Venue(), Backoff(sleep=lambda s: None), "funding", bad_symbol)
    assert len(calls) == 1


def test_backoff_is_capped():
    b = Backoff(cap=10.0)
    assert all(b.delay(a, None) <= 12.5 for a in range(20))


def test_checks_find_gaps_out_of_range_rates_and_off_schedule_rows(tmp_path):
    path = tmp_path / "f.parquet"
    ts = [i * 8 * H for i in range(10)] + [12 * 8 * H, 12 * 8 * H + 30 * 60_000 + 8 * H]
    rates = [0.0001] * 10 + [0.05, 0.0001]
    merge_into_store(path, frame(ts, rates))
    c = check_funding(path)
    assert c["rows"] == 12 and c["nominal_interval_hours"] == 8.0
    assert c["gaps"] == [[9 * 8 * H, 12 * 8 * H]]
    assert c["out_of_range"] == [12 * 8 * H]
    assert c["off_schedule"] == 1 and c["duplicates"] == 0
