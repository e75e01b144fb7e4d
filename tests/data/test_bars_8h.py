"""The shipped 8-hour bars of Binance, Bybit and OKX: complete on the
settlement grid, consistent with the shipped hourly closes, and copies
damaged on purpose (a bar removed, moved off the grid, a price zeroed: edits
of the real file, labelled here) refused with one error naming the market."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from fundarb.data.history import BARS_8H_FILE, SHIPPED_DIR, DataError, read_bars_8h

H = 3_600_000


def test_the_shipped_bars_cover_three_venues_on_the_settlement_grid():
    bars = read_bars_8h()
    counts = bars.group_by("venue", "market").len()
    assert counts.height == 9 and counts["len"].to_list() == [1642] * 9
    assert set(bars["venue"]) == {"binance", "bybit", "okx"}
    assert set(bars["market"]) == {"spot", "perp_linear", "perp_inverse"}
    assert (bars["open_time_ms"] % (8 * H) == 0).all()
    assert (bars["close"] > 0).all()


def test_the_binance_perp_bars_close_where_the_hourly_series_does():
    """The 8-hour close is the close of the bar's last hour in prices_1h.parquet (an independent source file)."""
    bars = read_bars_8h().filter((pl.col("venue") == "binance") & (pl.col("market") == "perp_linear"))
    hourly = pl.read_parquet(SHIPPED_DIR / "prices_1h.parquet").filter(
        (pl.col("venue") == "binance") & (pl.col("market") == "perp_linear"))
    joined = bars.with_columns((pl.col("open_time_ms") + 7 * H).alias("last_hour")).join(
        hourly.select(pl.col("open_time_ms").alias("last_hour"), pl.col("close").alias("hourly")), on="last_hour")
    assert joined.height >= 1640
    same = joined.filter((pl.col("close") - pl.col("hourly")).abs() < 1e-6).height
    assert same >= joined.height - 1, (same, joined.height)


def _damaged(tmp_path: Path, edit) -> Path:
    frame = pl.read_parquet(SHIPPED_DIR / BARS_8H_FILE)
    edit(frame).write_parquet(tmp_path / BARS_8H_FILE)
    return tmp_path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda f: f.filter(~((pl.col("venue") == "okx") & (pl.col("market") == "spot")
                          & (pl.col("open_time_ms") == 1_680_307_200_000))),
     "okx spot has no bar for the 1 8-hour period(s) before"),
    (lambda f: f.with_columns(pl.when((pl.col("venue") == "bybit") & (pl.col("market") == "perp_linear")
                                      & (pl.col("open_time_ms") == 1_680_307_200_000))
                              .then(pl.col("open_time_ms") + H).otherwise(pl.col("open_time_ms")).alias("open_time_ms")),
     "bybit perp_linear bar at"),
    (lambda f: f.with_columns(pl.when((pl.col("venue") == "binance") & (pl.col("market") == "perp_inverse")
                                      & (pl.col("open_time_ms") == 1_680_307_200_000))
                              .then(0.0).otherwise(pl.col("close")).alias("close")),
     "binance perp_inverse BTCUSDCM"),
])
def test_a_damaged_copy_is_one_error_naming_the_market(tmp_path, edit, message):
    with pytest.raises(DataError) as err:
        read_bars_8h(_damaged(tmp_path, edit))
    text = str(err.value)
    assert message in text and "\n" not in text, text


@pytest.mark.parametrize("venue", ["bybit", "okx"])
def test_bybit_and_okx_bars_close_four_hours_after_their_label(venue):
    """Measured again against Binance's hourly closes: each of their 8-hour
    closes is the price 4 h after the bar's open_time (BAR_CLOSE_HOURS), not 8 h."""
    from fundarb.data.history import BAR_CLOSE_HOURS

    bars = read_bars_8h().filter((pl.col("venue") == venue) & (pl.col("market") == "perp_linear"))
    hourly = pl.read_parquet(SHIPPED_DIR / "prices_1h.parquet").filter(
        (pl.col("venue") == "binance") & (pl.col("market") == "perp_linear"))
    close_at = hourly.select((pl.col("open_time_ms") + H).alias("at"), pl.col("close").alias("binance"))

    def median_bp(hours: int) -> float:
        j = bars.with_columns((pl.col("open_time_ms") + hours * H).alias("at")).join(close_at, on="at")
        return float(((pl.col("close") / pl.col("binance") - 1).abs() * 1e4).median().alias("m").pipe(j.select).item())

    assert BAR_CLOSE_HOURS[venue] == 4 and BAR_CLOSE_HOURS["binance"] == 8
    assert median_bp(4) < 6.0 and median_bp(8) > 5 * median_bp(4)  # (the venues differ by a few bp at one instant)
