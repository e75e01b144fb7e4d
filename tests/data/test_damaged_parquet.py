"""A damaged parquet history file (bytes of a real week of the shipped
history flipped: the damage is synthetic) is one DataError line, never a
panic or an abort that takes the process down: polars' reader can do both on
a damaged footer or page header."""

from __future__ import annotations

import polars as pl
import pytest

from fundarb.data.history import PRICES_FILE, SHIPPED_DIR, DataError, read_table


@pytest.fixture(scope="module")
def week(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("week") / PRICES_FILE
    frame = pl.read_parquet(SHIPPED_DIR / PRICES_FILE)
    frame.filter(pl.col("open_time_ms").is_between(1709251200000, 1709856000000)).write_parquet(path)
    return path.read_bytes()


def test_every_flipped_byte_of_a_page_header_is_read_or_one_line(week, tmp_path):
    path = tmp_path / PRICES_FILE
    outcomes = {"read": 0, "refused": 0}
    for at in range(40, 90):  # the first page's header and the start of its data: where the reader trusts lengths
        raw = bytearray(week)
        raw[at] ^= 0x01
        path.write_bytes(bytes(raw))
        try:
            read_table(path, {"close": "a number"})
            outcomes["read"] += 1
        except DataError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 50
