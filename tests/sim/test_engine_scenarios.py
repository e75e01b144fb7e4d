"""The engine on the shipped real history under execution trouble: thin depth
(partial fills, expiries) and a venue that rejects one leg of an entry."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from fundarb.config import load
from fundarb.data.history import load_history
from fundarb.sim.backtest import build_simulation, compute_metrics
from fundarb.sim.exchange import SimExchange

BASELINE = Path(__file__).resolve().parents[2] / "sims" / "spot_perp.toml"


@pytest.fixture(scope="module")
def base():
    cfg = attrs.evolve(load(BASELINE), data=attrs.evolve(load(BASELINE).data, start="2021-08-01", end="2022-01-01"))
    hist = load_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                        cfg.data.start, cfg.data.end, cfg.data.max_price_gap_hours)
    return cfg, hist


def rows(engine, kind):
    return [r for k, r in engine.recorder.rows if k == kind]


def test_thin_depth_partial_fills_expire_and_the_drift_is_rebalanced(base):
    cfg, hist = base
    thin = attrs.evolve(cfg, spot=attrs.evolve(cfg.spot, depth_btc=0.5))  # entries are ~1.3 BTC
    engine, sim = build_simulation(thin, hist)
    engine.run()
    m = compute_metrics(thin, hist, engine, sim)
    statuses = {r["status"] for r in rows(engine, "order")}
    assert {"partially_filled", "expired"} <= statuses
    assert m["fill_rate"] < 0.95
    assert m["delta_drift_max"] > thin.risk.max_drift  # the exposure window is reported, not hidden
    drift_alerts = [a for a in rows(engine, "alert") if a["kind"] == "delta_drift"]
    rebalances = [i for i in rows(engine, "intent") if i["reason"] in ("rebalance", "unwind_naked_leg")]
    assert drift_alerts and len(rebalances) >= len(drift_alerts)
    for alert in drift_alerts:  # every alert is answered by a corrective order at once
        assert any(i["ts"] == alert["ts"] for i in rebalances)
    # and the book ends hedged: hourly drift back under the limit after each repair
    assert engine.book.drift <= thin.risk.max_drift


class RejectFirstSpotEntry(SimExchange):
    """Fault injection: the spot venue refuses the first entry order."""

    rejected = 0

    def _reject_reason(self, sim, order):
        if order.reason == "entry" and sim.spec.kind.value == "spot" and not self.rejected:
            self.rejected += 1
            return "injected: venue rejected the spot leg"
        return super()._reject_reason(sim, order)


def test_a_rejected_leg_is_unwound_not_left_naked(base, monkeypatch):
    cfg, hist = base
    import fundarb.sim.backtest as bt

    monkeypatch.setattr(bt, "SimExchange", RejectFirstSpotEntry)
    engine, sim = build_simulation(cfg, hist)
    assert isinstance(sim, RejectFirstSpotEntry)
    engine.run()
    rejected = [r for r in rows(engine, "order") if r["status"] == "rejected"]
    assert len(rejected) == 1 and rejected[0]["status_reason"].startswith("injected")
    pair = rejected[0]["pair_id"]
    perp_leg = [r for r in rows(engine, "order") if r["pair_id"] == pair and r["venue"].endswith(":perp")
                and r["status"] == "filled"]
    assert perp_leg, "the other leg filled, leaving a naked short"
    unwind = [i for i in rows(engine, "intent") if i["reason"] == "unwind_naked_leg"]
    assert unwind and unwind[0]["venue"].endswith(":perp") and unwind[0]["side"] == "buy"
    # the naked short lived only until the unwind order filled
    unwind_fill = next(f for f in rows(engine, "fill") if f["client_id"] == unwind[0]["client_id"])
    assert unwind_fill["ts"] - rejected[0]["ts"] < 60 * 1_000_000_000
    assert engine.strategy.entries >= 1


def test_a_liquidated_short_leaves_no_naked_spot(tmp_path):
    """SYNTHETIC shock: BTC +60% within one hour gaps through the short's
    liquidation price before any top-up can land; the simulator liquidates,
    and the engine unwinds the spot leg at once instead of holding it naked."""
    import numpy as np

    from fundarb.testkit.builders import synthetic_history

    hours = 24 * 6
    spot = np.full(hours, 50_000.0)
    spot[100:] = 80_000.0  # the shock
    rates = np.full(hours // 8 + 1, 0.0005)  # high funding: the strategy enters early
    hist = synthetic_history(spot, spot * 1.0001, rates)
    cfg = load(BASELINE)
    cfg = attrs.evolve(cfg, perp_allocation=0.25, strategy=attrs.evolve(cfg.strategy, signal_settlements=1,
                                                                          notional=60_000.0))
    engine, sim = build_simulation(cfg, hist)
    engine.run()
    liq = [f for f in rows(engine, "fill") if f["liquidation"]]
    assert sim.liquidations == 1 and len(liq) == 1
    # the spot sale is decided within a second of the liquidation: by the
    # hard-floor cut of both legs at the same mark, or by the naked-leg unwind
    sells = [i for i in rows(engine, "intent") if i["venue"].endswith(":spot") and i["side"] == "sell"
             and i["reason"] in ("margin_reduce", "unwind_naked_leg")]
    assert sells and abs(sells[0]["ts"] - liq[0]["ts"]) < 1_000_000_000
    spot_after = sum((f["qty"] if f["side"] == "buy" else -f["qty"]) for f in rows(engine, "fill")
                     if f["venue"].endswith(":spot") and f["ts"] <= liq[0]["ts"] + 60 * 1_000_000_000)
    assert abs(spot_after) < 1e-9  # and the spot leg is gone within a minute
    m = compute_metrics(cfg, hist, engine, sim)
    assert m["liquidations"] == 1


class RefuseFirstTransfer(SimExchange):
    """Fault injection: the venue refuses the first transfer asked of it."""

    refused = 0

    def request_transfer(self, request):
        if not self.refused:
            self.refused += 1
            from fundarb.core.model import TransferRejected

            self._out.append(TransferRejected(self.now, request.from_venue, request.to_venue, request.amount,
                                              "injected: withdrawals suspended"))
            return
        super().request_transfer(request)


def test_a_refused_transfer_is_booked_back_and_later_ones_go_through(base, monkeypatch):
    cfg, hist = base
    import fundarb.sim.backtest as bt

    monkeypatch.setattr(bt, "SimExchange", RefuseFirstTransfer)
    engine, sim = build_simulation(cfg, hist)
    engine.run()
    transfers = rows(engine, "transfer")
    statuses = [t["status"] for t in transfers]
    assert statuses[:2] == ["requested", "rejected"]
    assert "arrived" in statuses[2:], "the monitor must try again once the refusal is booked"
    assert engine.transfer_pending == 0 or statuses[-1] == "requested"
    for name, acct in engine.book.accounts.items():  # the book still agrees with the venue
        assert acct.cash == pytest.approx(sim.accounts[name].acct.cash, abs=1e-6)
    assert any(a["kind"] == "transfer_rejected" for a in rows(engine, "alert"))
