"""The backtest's trade log is the one trade-log schema, and it holds the
reference rows of the spot/perp carry's run: the same fills, funding,
transfers and equity curve (kept in ``data/spot_perp_trade_log_v1.json``,
first from the version-1 file, with where they came from and when they were
made again)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.live.journal import KIND, SCHEMA_VERSION, Journal

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((Path(__file__).with_name("data") / "spot_perp_trade_log_v1.json").read_text())


def _digest(rows: list) -> str:
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


@pytest.fixture(scope="module")
def baseline_log(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("baseline")
    res = CliRunner().invoke(app, ["backtest", str(ROOT / "sims" / "spot_perp.toml"), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return out / "trades.sqlite"


def test_the_backtest_writes_the_one_trade_log_schema(baseline_log):
    db = sqlite3.connect(baseline_log)
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert (meta["kind"], meta["schema_version"], meta["source"]) == (KIND, str(SCHEMA_VERSION), "backtest")
    assert meta["config_hash"] == REFERENCE["config_hash"]
    j = Journal(baseline_log)  # opens as any trade log: integrity, columns and the money digests check out
    try:
        assert {v.network for v in j.venues().values()} == {"backtest"}
    finally:
        j.close()


def test_the_fills_are_the_version_1_logs_to_the_last_digit(baseline_log):
    db = sqlite3.connect(baseline_log)
    fills = [list(r[:9]) + [int(r[9])] for r in db.execute(
        "SELECT f.venue_ts, f.account, f.client_id, f.side, f.qty, f.price, f.mid, f.fee, f.liquidity, "
        "o.role = 'external' FROM fills f JOIN orders o USING (client_id) ORDER BY f.seq")]
    assert fills == REFERENCE["fills"]
    # and each order row is what its fills say
    for cid, qty, fees in db.execute("SELECT client_id, filled_qty, fees FROM orders"):
        got = db.execute("SELECT SUM(qty), SUM(fee_quote) FROM fills WHERE client_id=?", (cid,)).fetchone()
        assert got == pytest.approx((qty, fees), rel=1e-12)


def test_funding_transfers_and_the_equity_curve_are_the_version_1_logs(baseline_log):
    db = sqlite3.connect(baseline_log)
    funding = [list(r) for r in db.execute(
        "SELECT venue_ts, account, qty, rate, mark, amount, mark_source FROM funding ORDER BY seq")]
    transfers = [list(r) for r in db.execute(
        "SELECT ts, transfer_id, from_account, to_account, amount, fee, status FROM transfers ORDER BY seq")]
    equity = [list(r) for r in db.execute("SELECT * FROM equity ORDER BY ts")]
    assert (len(funding), sum(r[5] for r in funding)) == (REFERENCE["funding"]["rows"], REFERENCE["funding"]["amount"])
    assert _digest(funding) == REFERENCE["funding"]["sha256"]
    assert _digest(transfers) == REFERENCE["transfers"]["sha256"]
    assert _digest(equity) == REFERENCE["equity"]["sha256"]


def test_one_query_reads_a_backtest_and_a_paper_or_live_log_alike(baseline_log):
    """The columns a live trade log's fills and funding have are all there,
    named alike: the statement a desk runs on its live log runs here."""
    query = ("SELECT account, side, SUM(qty), SUM(fee_quote), COUNT(DISTINCT venue_order_id) FROM fills "
             "GROUP BY account, side ORDER BY account, side")
    rows = sqlite3.connect(baseline_log).execute(query).fetchall()
    sides = {(a, s): (q, n) for a, s, q, _, n in rows}
    by_ref: dict = {}
    for _, account, _, side, qty, *_ in REFERENCE["fills"]:
        q, n = by_ref.get((account, side), (0.0, 0))
        by_ref[(account, side)] = (q + qty, n + 1)
    assert sides.keys() == by_ref.keys()
    for key, (q, n) in by_ref.items():
        assert sides[key] == (pytest.approx(q, rel=1e-12), n)


def test_the_trade_log_commands_read_a_backtest_as_one(baseline_log):
    runner = CliRunner()
    fills = runner.invoke(app, ["trade", "log", "--journal", str(baseline_log)])
    assert fills.exit_code == 0, fills.output
    assert f"fills: {len(REFERENCE['fills'])} rows" in fills.output
    statement = runner.invoke(app, ["statement", "--journal", str(baseline_log)])
    assert statement.exit_code == 0, statement.output
    assert "statement of the backtest trade log" in statement.output
