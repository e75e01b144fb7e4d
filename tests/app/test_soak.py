"""Soak: `fundarb run --live` as a separate process against the emulator over
three days of real Binance data (2024-03-01 .. 03-04, funding ~50% APR), with
faults at and around every funding settlement, and one SIGKILL and restart.

The perp wallet starts thin (22,500 USDT against a 65,000 USDT short,
`perp_allocation` 0.18) so BTC's rise over these days calls for a margin
top-up from the spot wallet (Binance's wallet transfer).
The venue's clock runs 100 venue minutes per wall second, 20 within half an
hour of a settlement (where the faults are). The config holds a carry at most
one day, with a 4 h cooldown, so the soak enters, exits and enters again; the
client gives a request up after 2 s. Faults, by settlement (each lasts until
used up or until the next settlement's fault of its kind replaces it):

- 30 min before each: three 429s (Retry-After 1 s) on the perp venue;
- 10 min before each: a spot request answered after 3 s (a client timeout);
- at each: the perp venue's websocket is reset;
- 20 min after each: two 5xx on the spot venue;
- 5 min before the fourth: the runner is killed -9, and restarted 2 s (40
  venue minutes) later: the settlement passes while it is down.

At the end the trade log, journal and venue must agree (every fill logged),
no operation may end naked, the drift must stay within the 2% limit, no client
id may reach the venue twice, and every settlement passed in position must be
in the trade log. The figures are printed and written to ``soak_report.json``
in the test's folder.
"""

from __future__ import annotations

import json
import signal
import time

import attrs
import pytest

import fundarb.testkit.emulator.ws as emulator_ws
from fundarb.core.book import drift_of
from fundarb.core.model import NS_PER_HOUR
from fundarb.live.execution.orders import superseded
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.guards import guarded
from fundarb.testkit.live import PERP, SPOT, assert_agree
from fundarb.testkit.runner import START, promote_for_test, runner_config, spawn_runner, stop_runner, wait_for, write_config


@pytest.fixture
def soak_guard(loopback_only):
    """The suite's hang guard, with a longer bound for this long test."""
    with guarded(loopback_only, 300):
        yield


pytestmark = pytest.mark.usefixtures("soak_guard")

DAYS = 3
MIN = 60 * 10**9
STEP_NS = 5 * MIN  # venue time per step
NEAR_STEP_NS = MIN  # ... within WINDOW_NS of a settlement: the runner sees that hour closely
WINDOW_NS = 30 * MIN
STEP_S = 0.05  # wall time per step
KILL_AT_SETTLEMENT = 4
DUST_BTC = 1e-4  # legs both under this are flat: a BTC fee's remainder under Binance spot's minimum order


def _hm(ns: int) -> str:
    return time.strftime("%m-%d %H:%M", time.gmtime(ns / 1e9))


def inject(server, hub, what: str):
    """One fault; it lasts until hit as often as given, or until the next
    settlement's fault of the same kind replaces it (a fault the runner has
    no request to meet must not pile up for the next start)."""
    if what == "429":
        return server.faults.add("rate_limit", venue="binanceusdm", times=3, retry_after_s=1)
    if what == "timeout":
        return server.faults.add("timeout", venue="binance", times=1, delay_s=3)  # past the 2 s client timeout
    if what == "ws_reset":
        return hub.faults.add("dropped_websocket", venue="binanceusdm", mode="reset")
    return server.faults.add("server_error", venue="binance", times=2)


def _position_at(fills: list[dict], account: str, t: int) -> float:
    q = sum((1 if f["side"] == "buy" else -1) * f["qty"] for f in fills if f["account"] == account and f["venue_ts"] < t)
    return round(q, 12)


@pytest.mark.slow  # a soak: three emulated days against the emulator (about 80 s); the fault tests cover each fault
def test_soak_three_days_with_faults_at_settlements_and_a_kill(tmp_path):
    cfg = attrs.evolve(runner_config(max_holding_days=1.0, cooldown_hours=4.0), perp_allocation=0.18)
    config, store, journal = write_config(cfg, tmp_path), tmp_path / "promotions.sqlite", tmp_path / "live.sqlite"
    promote_for_test(cfg, store)
    log = tmp_path / "runner.log"
    faults: list[dict] = []
    with running_emulator(START) as server:
        # thin perp collateral (leverage 2.6 at entry): BTC's rise over these days takes the
        # short's margin buffer under 30%, and the runner must top it up from the spot wallet
        server.accounts.fund("binance", "USDT", 102_500.0)
        server.accounts.fund("binanceusdm", "USDT", 22_500.0)  # perp_allocation 0.18 of 125,000
        hub = emulator_ws.websockets(server)
        start = server.now_ns
        end = start + DAYS * 24 * NS_PER_HOUR
        settlements = list(range((start // (8 * NS_PER_HOUR) + 1) * 8 * NS_PER_HOUR, end, 8 * NS_PER_HOUR))
        plan = sorted(
            [(t - 30 * MIN, "429", t) for t in settlements] + [(t - 10 * MIN, "timeout", t) for t in settlements]
            + [(t, "ws_reset", t) for t in settlements] + [(t + 20 * MIN, "5xx", t) for t in settlements]
            + [(settlements[KILL_AT_SETTLEMENT - 1] - 5 * MIN, "kill", settlements[KILL_AT_SETTLEMENT - 1])])
        wall0 = time.monotonic()
        child = spawn_runner(server, journal, config, store, log=log)
        alive_since, alive = wall0, 0.0
        live: list[tuple[str, object]] = []  # faults not yet used up: each lasts until the next of its kind
        try:
            wait_for(lambda: log.exists() and b'"started"' in log.read_bytes(), "the runner to start")
            while server.now_ns < end:
                now = server.now_ns
                step = NEAR_STEP_NS if any(abs(now - t) <= WINDOW_NS for t in settlements) else STEP_NS
                server.advance(min(step, end - now))
                time.sleep(STEP_S)
                while plan and plan[0][0] <= server.now_ns:
                    _, what, t = plan.pop(0)
                    for gone in [x for x in live if x[0] == what]:  # the last one of its kind ends
                        live.remove(gone)
                        (hub.faults if what == "ws_reset" else server.faults).remove(gone[1])
                    if what == "kill":
                        child.send_signal(signal.SIGKILL)
                        child.wait(timeout=30)
                        alive += time.monotonic() - alive_since
                        faults.append({"fault": "SIGKILL, restart 2 s later", "settlement": _hm(t), "hits": 1})
                        for _ in range(int(2 / STEP_S)):  # the venue moves on while the runner is down
                            server.advance(NEAR_STEP_NS)
                            time.sleep(STEP_S)
                        starts = log.read_bytes().count(b'"started"')
                        child = spawn_runner(server, journal, config, store, log=log)
                        alive_since = time.monotonic()
                        # the venue waits for the restarted process to be up (a slow machine
                        # must not turn a restart into a run of missed faults and settlements)
                        wait_for(lambda n=starts: log.read_bytes().count(b'"started"') > n, "the restarted runner")
                        continue
                    fault = inject(server, hub, what)
                    live.append((what, fault))
                    faults.append({"fault": what, "settlement": _hm(t), "fault_object": fault})
            time.sleep(3)  # the last settlement's payment is learned
        finally:
            server.faults.clear()
            code = stop_runner(child)
        for f in faults:
            if "fault_object" in f:
                f["hits"] = f.pop("fault_object").hits
        alive += time.monotonic() - alive_since
        wall = time.monotonic() - wall0
        j = assert_agree(server, journal)  # every venue trade is a fill in the trade log; positions equal
        venue_payments = {f.time_ms * 10**6 for f in server.accounts.funding_list("binanceusdm")}
        client_ids = [o.client_id for m in (SPOT, PERP) for o in server.accounts.all_orders(*m)]
    assert code == 0
    fills, paid = j.rows("fills"), {f["venue_ts"] for f in j.rows("funding")}
    in_position = [t for t in settlements if _position_at(fills, "binanceusdm:perp", t) != 0]
    missed = [t for t in in_position if t not in paid]
    ops = j.operations()
    # the fill rate of what reached the venue: a placement that timed out and that the venue
    # never knew is sent again under a new client id, and its row keeps the size unfilled
    on_venue = set(client_ids)
    orders = [o for o in j.rows("orders") if o["role"] in ("entry", "exit") and o["client_id"] in on_venue]
    sent_again = [o for o in j.rows("orders") if o["client_id"] not in on_venue]
    fill_rate = sum(o["filled_qty"] for o in orders) / sum(o["qty"] for o in orders)
    drifts = []
    for op in ops:  # the legs the trade log holds after each operation
        upto = max((f["seq"] for f in fills if f["client_id"] in {o["client_id"] for o in j.orders(op["op_id"])}), default=0)
        done = [f for f in fills if f["seq"] <= upto]
        spot = sum((1 if f["side"] == "buy" else -1) * f["qty"] - (f["fee"] if f["fee_currency"] == "BTC" else 0.0)
                   for f in done if f["account"] == "binance:spot")
        perp = sum((1 if f["side"] == "buy" else -1) * f["qty"] for f in done if f["account"] == "binanceusdm:perp")
        drifts.append(drift_of(spot, perp, DUST_BTC))
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    beats = [x for x in lines if x["event"] == "heartbeat"]
    topups = [x for x in lines if x["event"] == "alert" and x["kind"] == "margin_topup"]
    arrived = [x for x in lines if x["event"] == "transfer" and x["status"] == "arrived"]
    report = {
        "venue_days": DAYS, "wall_seconds": round(wall, 1), "uptime": round(alive / wall, 4),
        "runner_restarts": 1, "faults": faults,
        "faults_hit": f"{sum(1 for f in faults if f['hits'])}/{len(faults)}",
        "operations": {k: sum(1 for o in ops if o["kind"] == k) for k in ("open", "close", "adjust")},
        "operation_statuses": sorted({o["status"] for o in ops}),
        "fill_rate": round(fill_rate, 6), "max_drift_after_operations": max(drifts, default=0.0),
        "max_drift_at_heartbeats": max((b["drift"] for b in beats), default=0.0),
        "settlements_in_window": len(settlements), "settlements_in_position": len(in_position),
        "settlements_captured": len(in_position) - len(missed), "missed_settlements": len(missed),
        "venue_payments_in_trade_log": f"{len(venue_payments & paid)}/{len(venue_payments)}",
        "funding_received": round(sum(f["amount"] for f in j.rows("funding")), 2),
        "fills": len(fills), "orders_on_venue": len(client_ids), "orders_sent_again": len(sent_again),
        "margin_topups": [x["message"] for x in topups],
        "transfers_arrived": [f'{x["amount"]:,.2f} {x["from_venue"]} -> {x["to_venue"]}' for x in arrived],
        "min_margin_buffer_at_heartbeats": min((b["margin_buffer"] for b in beats if b["margin_buffer"] is not None),
                                               default=None),
        "reconciliations": len(j.rows("reconciliations")),
        "reconciliation_mismatches": sum(1 for r in j.rows("reconciliations") if not r["ok"]),
        "alerts": sorted({a["kind"] for a in j.rows("alerts")}),
    }
    (tmp_path / "soak_report.json").write_text(json.dumps(report, indent=2))
    print("\nsoak report:", json.dumps(report, indent=2), f"\nwritten to {tmp_path / 'soak_report.json'}")
    assert missed == [] and venue_payments <= paid
    assert "naked" not in report["operation_statuses"] and j.blocked() is None
    assert report["max_drift_after_operations"] <= cfg.risk.max_drift
    assert report["max_drift_at_heartbeats"] <= cfg.risk.max_drift
    assert len(client_ids) == len(set(client_ids))  # no order doubled
    assert all(superseded(o) and o["filled_qty"] == 0 for o in sent_again)  # only what never landed is left out
    assert report["operations"]["open"] >= 2 and report["operations"]["close"] >= 1  # it exited and came back
    assert len(in_position) >= 5 and fill_rate > 0.95
    assert topups and any(x["to_venue"] == "binanceusdm:perp" and x["ts"] >= topups[0]["ts"] for x in arrived)
    assert report["min_margin_buffer_at_heartbeats"] > cfg.risk.hard_margin_buffer
