"""Loading the shipped real history: window edges, alignment, provenance."""

import numpy as np
import pytest

from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import DataError, fmt_time, load_history, parse_time

SPOT = ("binance", "BTC/USDT")
PERP = ("binanceusdm", "BTC/USDT:USDT")


def test_shipped_window_keeps_its_last_hour():
    # the last bar opening before 2024-07-01 opens 2024-06-30 22:00 and closes at 23:00
    h = load_history(SPOT, PERP, "2021-07-01", "2024-07-01", 6)
    assert fmt_time(h.start) == "2021-07-01 02:00" and fmt_time(h.end) == "2024-06-30 23:00"
    assert h.hours.size == (h.end - h.start) // NS_PER_HOUR + 1
    assert np.all(np.diff(h.hours) == NS_PER_HOUR)
    assert h.spot[-1] == 62901.01  # close of the 22:00 bar, as in the source file


def test_funding_lies_inside_the_price_window_on_the_8h_grid():
    h = load_history(SPOT, PERP, "2022-01-01", "2022-02-01", 6)
    assert h.funding_ts[0] > h.start and h.funding_ts[-1] <= h.end
    assert all(t % (8 * NS_PER_HOUR) == 0 for t in h.funding_ts.tolist())
    assert h.funding_ts.size == 31 * 3 - 1  # 2022-01-01 00:00 is not after the first price hour
    assert h.funding_gaps == ()
    assert np.isnan(h.funding_mark).all()


def test_parse_time_is_utc_and_rejects_junk():
    assert parse_time("2024-01-01", "x") == 1_704_067_200 * 1_000_000_000
    assert parse_time("2024-01-01T08:00", "x") == (1_704_067_200 + 8 * 3600) * 1_000_000_000
    assert parse_time("2024-01-01T09:00+01:00", "x") == (1_704_067_200 + 8 * 3600) * 1_000_000_000
    with pytest.raises(DataError, match="--from"):
        parse_time("soon", "--from")


def test_window_outside_the_data_is_an_error():
    with pytest.raises(DataError, match="no price history"):
        load_history(SPOT, PERP, "2030-01-01", "2030-02-01", 6)
