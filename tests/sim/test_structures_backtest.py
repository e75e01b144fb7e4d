"""The coin-margined and unified structures run by the simulator on the
shipped real history (Binance spot BTCUSDT with the COIN-M BTCUSD_PERP, or
with the USD-M BTCUSDT perp as one unified account): no liquidation, no
missed settlement, funding in BTC worked from the contracts held, the book's
identity, paired hedged trades, whole contracts, small drift and
determinism; the configs each structure refuses; and the round-trip cost
without transfers."""

from __future__ import annotations

import copy
import functools
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fundarb.config import ConfigError, from_dict
from fundarb.core.model import Side
from fundarb.data.history import MarketHistory, history_for
from fundarb.sim.backtest import build_simulation, result_of, run_backtest
from fundarb.wiring import round_trip_cost

# a window of the shipped history with COIN-M funding and a carry entered on both perps
START, END = "2021-09-01", "2021-11-01"
ROOT = Path(__file__).resolve().parents[2]
BASELINE: dict[str, Any] = tomllib.loads((ROOT / "sims" / "spot_perp.toml").read_text())


def raw_config(kind: str, **changes: dict[str, Any]) -> dict[str, Any]:
    """The shipped baseline over the window, made the ``kind`` structure (notional 95k, 8 BTC at most),
    then each section updated by ``changes``."""
    raw = copy.deepcopy(BASELINE)
    raw["data"].update(start=START, end=END)
    if kind != "spot_linear":
        raw["strategy"]["notional"] = 95_000.0
        raw["risk"]["max_position_btc"] = 8.0
        raw["structure"] = {"kind": kind}
    if kind == "coin_margined":
        raw["perp"].update(exchange="binancecoinm", symbol="BTC/USD:BTC")
        raw["data"]["max_price_gap_hours"] = 49.0  # the COIN-M series has day-long gaps
    if kind == "unified":
        raw["perp"].update(exchange="binanceusdm", symbol="BTC/USDT:USDT")
    for section, values in changes.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return raw


class Run:
    """One finished run: the config, the history, the engine (its book and log) and the result."""

    def __init__(self, kind: str, **changes: dict[str, Any]) -> None:
        self.cfg = from_dict(raw_config(kind, **changes))
        self.history: MarketHistory = history_for(self.cfg)
        self.engine, self.sim = build_simulation(self.cfg, self.history)
        self.engine.run()
        self.result = result_of(self.cfg, self.history, self.engine, self.sim)
        self.book = self.engine.book
        self.metrics = self.result.metrics
        rows = self.result.log
        pair_of = {r["client_id"]: r["pair_id"] for k, r in rows if k == "order"}
        self.reason_of = {r["pair_id"]: r["reason"] for k, r in rows if k == "order"}
        self.fills = [dict(r, pair_id=pair_of[r["client_id"]]) for k, r in rows if k == "fill"]


@functools.cache
def run_of(kind: str) -> Run:
    return Run(kind)


@pytest.fixture(params=["coin_margined", "unified"])
def run(request) -> Run:
    return run_of(request.param)


@pytest.fixture
def coin_run() -> Run:
    return run_of("coin_margined")


@pytest.fixture
def unified_run() -> Run:
    return run_of("unified")


@pytest.fixture
def baseline_run() -> Run:
    return run_of("spot_linear")


@functools.cache
def held_run() -> Run:
    """The coin-margined run on a capital held in BTC."""
    return Run("coin_margined", structure={"kind": "coin_margined", "capital_asset": "BTC"})


def last_mark(h: MarketHistory) -> float:
    """The perp's last mark: the venue's where the history has it, else the perp close that stands in."""
    return float(h.mark[-1]) if h.mark is not None else float(h.perp[-1])


# --- the runs ------------------------------------------------------------------------------------

def test_the_window_has_a_carry_on_every_structure(run, baseline_run):
    assert baseline_run.metrics["entries"] > 0  # the shipped baseline enters in this window
    assert run.metrics["structure"] == run.cfg.structure_kind
    assert run.metrics["entries"] > 0
    assert run.book.perp_spans  # a short was held
    assert run.cfg.spot_cash == run.cfg.capital and run.cfg.perp_cash == 0.0  # one account: all capital buys spot


def test_no_liquidation_and_no_missed_settlement(run):
    m = run.metrics
    assert m["liquidations"] == 0
    assert not any(f["liquidation"] for f in run.fills)
    assert m["missed_settlements"] == 0
    assert m["settlements_accrued"] == len(run.book.funding_ledger) > 0
    assert m["kill_switch"] is None


def test_funding_accrues_to_the_short_in_the_rates_sign(run):
    ledger = run.book.funding_ledger
    rates = [e.rate for e in ledger]
    assert sum(rates) > 0  # the data: positive funding over the settlements the short held
    for e in ledger:
        assert e.qty < 0  # a short
        assert e.amount == 0 if e.rate == 0 else (e.amount > 0) == (e.rate > 0), e
    assert sum(e.amount for e in ledger) > 0
    assert run.book.funding == pytest.approx(sum(e.amount for e in ledger), rel=1e-12)
    assert run.metrics["funding_net"] == run.book.funding


def test_the_book_identity_holds_on_the_final_book(run):
    b = run.book
    gap = b.equity - b.initial_equity - (b.funding - b.fees - b.slippage + b.price_pnl)
    assert abs(gap) <= 1e-9 * run.cfg.capital
    assert b.initial_equity == run.cfg.capital
    assert run.metrics["net_pnl"] == pytest.approx(b.equity - run.cfg.capital, rel=1e-12)


def test_trades_pair_spot_against_perp(run):
    """Every pair fills on both legs on opposite sides, and an entry's spot BTC is
    the perp's BTC to the rounding of one order unit."""
    b = run.book
    pairs: dict[int, list[dict[str, Any]]] = {}
    for f in run.fills:
        pairs.setdefault(f["pair_id"], []).append(f)
    assert pairs
    entries = 0
    for pid, fills in pairs.items():
        if run.reason_of[pid] == "rebalance":
            continue  # the risk monitor's delta correction trades one leg by design
        spot = [f for f in fills if f["venue"] == b.spot_venue]
        perp = [f for f in fills if f["venue"] == b.perp_venue]
        assert spot and perp, (pid, fills)
        spot_side, perp_side = {f["side"] for f in spot}, {f["side"] for f in perp}
        assert len(spot_side) == len(perp_side) == 1 and spot_side != perp_side, (pid, fills)
        spot_btc = sum(f["qty"] for f in spot)
        perp_btc = sum(b.perp.btc_of(f["qty"], f["price"]) for f in perp)
        price = perp[0]["price"]
        unit = b.perp.contract_size / price if b.perp.contract_size else 0.0
        if run.reason_of[pid] == "entry":
            entries += 1
            assert spot_side == {Side.BUY.value}
            assert abs(spot_btc - perp_btc) <= unit + run.cfg.strategy.lot_size + 1e-9, (pid, spot_btc, perp_btc)
            assert spot_btc * price == pytest.approx(run.cfg.strategy.notional, rel=0.01)
    assert entries == run.metrics["entries"]


def test_delta_drift_stays_small(run):
    assert run.metrics["delta_drift_max"] < 0.05
    assert max(d for d, pos in zip(run.engine.curve["drift"], run.engine.curve["in_position"]) if pos) < 0.05


def test_same_seed_same_metrics(run):
    again = run_backtest(run.cfg, run.history, always_on=False)
    assert again.metrics == run.metrics
    assert [r for k, r in again.log if k == "fill"] == [r for k, r in run.result.log if k == "fill"]


# --- the coin-margined run in BTC -------------------------------------------------------------

def test_coin_margined_perp_fills_are_whole_contracts(coin_run):
    perp = [f for f in coin_run.fills if f["venue"] == coin_run.book.perp_venue]
    assert perp
    for f in perp:
        assert f["qty"] >= 1 and f["qty"] == math.floor(f["qty"]), f
        # the fee is BTC: taker rate x contracts x size / price
        assert f["fee"] == pytest.approx(coin_run.cfg.perp.taker_fee * f["qty"] * 100.0 / f["price"], rel=1e-9), f
    assert coin_run.book.perp.contract_size == 100.0


def test_coin_margined_trade_log_holds_contracts_and_btc_as_a_venue_would(coin_run, tmp_path):
    """The backtest's trade log (what `fundarb backtest` writes) records the inverse perp as live does:
    whole contracts, fees and funding in BTC, which add up to the report's BTC figures."""
    from fundarb.config import config_hash
    from fundarb.live.journal import Journal
    from fundarb.output.trades import write_trade_log

    r = coin_run.result
    path = tmp_path / "trades.sqlite"
    write_trade_log(path, coin_run.cfg, config_hash(coin_run.cfg), "backtest", {}, r.log, r.curve)
    j = Journal(path)
    try:
        perp = [f for f in j.rows("fills") if f["account"] == coin_run.cfg.perp_account]
        assert perp and all(f["qty"] == round(f["qty"]) and f["fee_currency"] == "BTC" for f in perp)
        assert all(f["fee_quote"] == pytest.approx(f["fee"] * f["price"]) for f in perp)
        assert sum(f["fee"] for f in perp) == pytest.approx(coin_run.metrics["fees_btc"], rel=1e-12)
        paid = j.rows("funding")
        assert paid and sum(f["amount"] for f in paid) == pytest.approx(coin_run.metrics["funding_btc"], rel=1e-12)
        assert j.units(coin_run.cfg.perp_account) == pytest.approx(coin_run.book.perp.units, abs=1e-6)
    finally:
        j.close()


def test_coin_margined_equity_in_btc_at_the_last_mark(coin_run):
    m, h = coin_run.metrics, coin_run.history
    assert m["final_equity_btc"] * last_mark(h) == pytest.approx(m["final_equity"], rel=1e-12)
    assert coin_run.book.perp.price == last_mark(h)


def test_coin_margined_funding_is_the_contracts_face_over_the_mark(coin_run):
    """Each settlement pays the short contracts x 100 USD x rate (USD), that is
    contracts x 100 / mark x rate BTC, and its BTC-equivalent is the face over
    the entry fills' prices; worked here from the fills, not from the book."""
    b = coin_run.book
    size = 100.0
    perp = sorted((f for f in coin_run.fills if f["venue"] == b.perp_venue), key=lambda f: f["ts"])
    contracts, btc_eq = 0.0, 0.0  # signed contracts held, and their BTC at the entry prices
    btc_total, i = 0.0, 0
    for e in b.funding_ledger:
        while i < len(perp) and perp[i]["ts"] < e.ts:
            f = perp[i]
            signed = f["qty"] * (1 if f["side"] == Side.BUY.value else -1)
            if contracts == 0 or (contracts > 0) == (signed > 0):
                btc_eq += signed * size / f["price"]
            else:
                btc_eq *= (contracts + signed) / contracts  # a reduction closes its share of the face
            contracts += signed
            i += 1
        assert contracts < 0
        assert e.amount == pytest.approx(-contracts * size * e.rate, rel=1e-9, abs=1e-12), e
        assert e.qty == pytest.approx(btc_eq, rel=1e-9), e
        btc_total += -contracts * size / e.mark * e.rate
    assert b.perp.funding_coin == pytest.approx(btc_total, rel=1e-9)
    assert coin_run.metrics["funding_btc"] == b.perp.funding_coin > 0
    assert b.perp.cash == 0.0 and b.perp.coin == 0.0  # the BTC it settled joined the spot leg


def test_unified_funding_is_linear_on_the_btc_held(unified_run):
    r = unified_run
    perp = sorted((f for f in r.fills if f["venue"] == r.book.perp_venue), key=lambda f: f["ts"])
    for e in r.book.funding_ledger:
        held = sum(f["qty"] * (1 if f["side"] == Side.BUY.value else -1) for f in perp if f["ts"] < e.ts)
        assert e.qty == pytest.approx(held, rel=1e-12)
        assert e.amount == pytest.approx(-held * e.mark * e.rate, rel=1e-9, abs=1e-12), e
    assert r.book.perp.funding_coin == 0.0 and r.book.perp.cash == 0.0


# --- configs each structure refuses --------------------------------------------------------------

@pytest.mark.parametrize(("kind", "changes", "field"), [
    ("coin_margined", {"perp": {"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT"}}, "perp.symbol"),
    ("spot_linear", {"perp": {"exchange": "binancecoinm", "symbol": "BTC/USD:BTC"}}, "perp.symbol"),
    ("unified", {"perp": {"exchange": "bybit", "symbol": "BTC/USDT:USDT"}}, "perp.exchange"),
    ("unified", {"structure": {"kind": "unified", "capital_asset": "BTC"}}, "structure.capital_asset"),
    ("coin_margined", {"structure": {"kind": "coin_margined", "capital_asset": "BTC"},
                       "strategy": {"allow_reverse": True}}, "strategy.allow_reverse"),
    ("unified", {"structure": {"kind": "unified", "collateral_tiers": [[1000, 1.5]]}}, "structure.collateral_tiers"),
    ("unified", {"structure": {"kind": "unified", "collateral_tiers": [[1000, 0.9], [10, 0.5]]}},
     "structure.collateral_tiers"),
    ("unified", {"structure": {"kind": "unified", "collateral_tiers": []}}, "structure.collateral_tiers"),
    ("unified", {"structure": {"kind": "unified", "collateral_tiers": [[1000, 0.9, 1]]}}, "structure.collateral_tiers"),
    ("unified", {"structure": {"kind": "unified", "collateral_tiers": "0.85"}}, "structure.collateral_tiers"),
    ("unified", {"structure": {"kind": "unified", "collateral_tiers": [[math.inf, 0.85]]}}, "structure.collateral_tiers"),
    ("coin_margined", {"structure": {"kind": "inverse"}}, "structure.kind"),
    ("coin_margined", {"structure": {"kind": "coin_margined", "contract_size": 0}}, "structure.contract_size"),
])
def test_structure_config_errors_name_the_field(kind, changes, field):
    with pytest.raises(ConfigError) as err:
        from_dict(raw_config(kind, **changes), "structures.toml")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("structures.toml: ")
    assert field in text, text


def test_the_accepted_structures_load():
    for kind in ("spot_linear", "coin_margined", "unified"):
        assert from_dict(raw_config(kind)).structure_kind == kind


# --- round-trip cost -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["coin_margined", "unified"])
@pytest.mark.parametrize("fee", [1.0, 25.0])
def test_round_trip_cost_of_one_account_has_no_transfer_term(kind, fee):
    one = from_dict(raw_config(kind, transfer={"fee": fee}))
    # the same costs and size as two accounts: the baseline's spot_linear structure
    two = from_dict(raw_config("spot_linear", transfer={"fee": fee}, strategy={"notional": one.strategy.notional}))
    assert (two.spot, two.perp.taker_fee, two.perp.half_spread_bp_min, two.perp.half_spread_bp_max,
            two.perp.impact_bp_per_btc) == (one.spot, one.perp.taker_fee, one.perp.half_spread_bp_min,
                                            one.perp.half_spread_bp_max, one.perp.impact_bp_per_btc)
    for price in (20_000.0, 50_000.0):
        assert round_trip_cost(one, price) == pytest.approx(
            round_trip_cost(two, price) - 2 * fee / one.strategy.notional, rel=1e-12)
    # the transfer fee does not enter it at all
    other = from_dict(raw_config(kind, transfer={"fee": fee + 100.0}))
    assert round_trip_cost(other, 50_000.0) == round_trip_cost(one, 50_000.0)


# --- a carry on BTC already held ----------------------------------------------------------------

def test_a_carry_on_btc_held_never_trades_the_holding_and_is_judged_without_its_moves():
    r, coin = held_run(), run_of("coin_margined")
    h = r.history
    held = r.metrics["held_btc"]
    assert held == pytest.approx(r.cfg.capital / float(h.spot[0]), abs=1e-8)  # the capital's worth, to the satoshi
    # the holding covers the 95,000 notional: no spot order at all, and entries as the coin-margined run's
    assert [f for f in r.fills if f["venue"] == r.cfg.spot_account] == []
    assert r.metrics["entries"] >= 1 and r.metrics["orders"] == len(r.fills)
    # every BTC is still held: the start, plus what the short settled in: its PnL re-derived here from the fills
    # (a closing buy of a short realizes contracts x 100 x (1/price - 1/entry), the entry the harmonic mean of the
    # sells since flat), less the fees, plus the funding, all in BTC
    units, sold, pnl = 0.0, 0.0, 0.0
    for f in (f for f in r.fills if f["venue"] == r.cfg.perp_account):
        if f["side"] == "sell":
            units, sold = units + f["qty"], sold + f["qty"] / f["price"]
        else:
            pnl += f["qty"] * 100.0 * (1 / f["price"] - sold / units)
            units, sold = units - f["qty"], sold * (units - f["qty"]) / units
    perp = r.book.perp
    assert units == pytest.approx(-perp.units)  # the short still open at the window's end has settled nothing yet
    assert r.book.spot.qty == pytest.approx(held + pnl + perp.funding_coin - perp.fees_coin, abs=1e-9)
    # the carry's PnL is the book's less the held BTC's price moves, which are the holder's
    m = r.metrics
    assert m["carry_pnl"] == pytest.approx(m["net_pnl"] - m["held_btc_pnl"], abs=1e-6)
    assert m["held_btc_pnl"] != 0.0 and abs(m["held_btc_pnl"]) > abs(m["carry_pnl"])
    assert m["delta_drift_max"] == 0.0  # the short never exceeded the holding
    # the same funding as the carry that buys its BTC, without the spot fees in and out
    assert m["fees"] < coin.metrics["fees"]
    assert m["capital_asset"] == "BTC" and coin.metrics["held_btc_pnl"] == 0.0


def test_held_btc_pnl_is_the_btc_held_times_each_spot_move_between_carries():
    """Re-derived from the hourly curve: between carries every BTC held is
    unhedged (the book's delta), so the held BTC's PnL moves by delta x the
    spot's move from one snapshot to the next, and the carry's equity not at all."""
    r = held_run()
    c = r.engine.curve
    flat = [i for i in range(1, len(c["ts"])) if not c["in_position"][i] and not c["in_position"][i - 1]]
    assert len(flat) > 20  # deciding on the announced rate, the carry is out for about a day in three years
    for i in flat:
        move = c["spot"][i] - c["spot"][i - 1]
        assert c["held_pnl"][i] - c["held_pnl"][i - 1] == pytest.approx(c["delta"][i - 1] * move, rel=1e-9, abs=1e-9)
        carry = (c["equity"][i] - c["held_pnl"][i]) - (c["equity"][i - 1] - c["held_pnl"][i - 1])
        assert carry == pytest.approx(0.0, abs=1e-6)
