"""`fundarb compare`'s structures: the perp/perp variant it derives from the
baseline, run where the shipped 8-hour bars cover the window and left out,
saying why, where they do not (or cover only part of it)."""

from __future__ import annotations

from pathlib import Path

import attrs

from fundarb.config import PERP_PERP, load
from fundarb.research.compare import compare, variants

ROOT = Path(__file__).resolve().parents[2]
BASE = load(ROOT / "sims" / "spot_perp.toml")


def _window(start: str, end: str):
    return attrs.evolve(BASE, data=attrs.evolve(BASE.data, start=start, end=end))


def test_the_perp_perp_variant_pairs_the_base_perp_with_the_other_venues():
    runs, skipped = variants(BASE, 0.95)
    (pp,) = [v for v in runs if v.structure == PERP_PERP]
    cfg = pp.config
    assert cfg.structure_kind == PERP_PERP and cfg.perp == BASE.perp
    assert (cfg.spot.exchange, cfg.spot.symbol) == ("bybit", "BTC/USDT:USDT")
    assert cfg.spot.taker_fee == BASE.perp.taker_fee  # the long perp at the base perp's costs
    assert cfg.perp_allocation == 0.5 and cfg.strategy.allow_reverse
    assert PERP_PERP not in skipped


def test_a_window_the_bars_cover_runs_every_structure():
    doc = compare(_window("2023-03-01", "2023-06-01"), years=False)
    assert {r["structure"] for r in doc["rows"]} == {"spot_linear", "coin_margined", "coin_margined_btc", "unified",
                                                     PERP_PERP}
    assert doc["skipped"] == {} and doc["windows_left_out"] == {}
    (pp,) = [r for r in doc["rows"] if r["structure"] == PERP_PERP]
    assert pp["days"] > 90 and pp["capital_used"] == BASE.capital


def test_a_window_before_the_bars_leaves_perp_perp_out_saying_why():
    doc = compare(_window("2022-03-01", "2022-04-01"), years=False)
    assert PERP_PERP not in {r["structure"] for r in doc["rows"]}
    assert "8-hour bars" in doc["skipped"][PERP_PERP]


def test_a_window_the_bars_cover_in_part_is_left_out_not_shortened():
    doc = compare(_window("2022-11-01", "2023-03-01"), years=True)
    pp = {r["window"] for r in doc["rows"] if r["structure"] == PERP_PERP}
    assert pp == {"2023"}  # the year inside the bars runs; the whole window and 2022 do not stand for a part of them
    gone = doc["windows_left_out"][PERP_PERP]
    assert "covers only" in gone["2022-11-01..2023-03-01"] and "2022" in gone
