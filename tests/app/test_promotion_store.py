"""The promotion gate rule and the promotions store, on hand-made records
(SYNTHETIC: no backtest runs here; tests/app/test_promote.py runs
the real thing)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fundarb.app.promote import (
    RECORD_FILE,
    PromotionError,
    Regression,
    check_store,
    failure_reason,
    gate_verdicts,
    live_clearance,
    publish,
    records_for,
    save_record,
)
from fundarb.config import config_hash, from_dict, load, to_dict
from fundarb.live.journal import Journal
from fundarb.sim.backtest import GATES

BASELINE = Path(__file__).resolve().parents[2] / "sims" / "spot_perp.toml"


def backtest_gates(failing: tuple[str, ...] = ()) -> list[dict]:
    return [{"gate": name, "metric": key, "value": threshold, "threshold": threshold, "op": op,
             "passed": name not in failing} for name, key, op, threshold in GATES]


def summary(shares: dict[str, float] | None = None) -> dict:
    return {"gate_pass_rates": {name: (shares or {}).get(name, 1.0) for name, _, _, _ in GATES}}


def test_a_gate_needs_the_backtest_and_the_path_share():
    gates = gate_verdicts(backtest_gates(failing=("APR > 10%",)),
                          summary({"Sharpe > 1": 0.85, "MaxDD < 5%": 18 / 20}), 0.9)
    by_name = {g["gate"]: g for g in gates}
    assert not by_name["APR > 10%"]["passed"] and by_name["APR > 10%"]["path_share"] == 1.0  # backtest fails
    assert by_name["Sharpe > 1"]["backtest_passed"] and not by_name["Sharpe > 1"]["passed"]  # too few paths
    assert by_name["MaxDD < 5%"]["passed"]  # exactly the minimum share
    assert sum(g["passed"] for g in gates) == 5
    reason = failure_reason(gates, [], 0.9)
    assert reason == ("gates failed: Sharpe > 1 (backtest passes, 85% of paths pass, need 90%); "
                      "APR > 10% (backtest fails, 100% of paths pass, need 90%)")
    assert failure_reason(gate_verdicts(backtest_gates(), summary(), 0.9), [], 0.9) is None


def test_a_mismatched_recording_is_named_in_the_reason():
    ok = gate_verdicts(backtest_gates(), summary(), 0.9)
    bad = Regression("rec_a", "ab" * 32, {}, None, False, "differs from its golden file (-1 +1 lines)")
    assert failure_reason(ok, [bad], 0.9) == "replay regressions failed: rec_a: differs from its golden file (-1 +1 lines)"


def record(cfg, passed: bool, created_ns: int, failing: tuple[str, ...] = (), version: str = "0.1.0") -> dict:
    gates = gate_verdicts(backtest_gates(failing), summary(), 0.9)
    return {"config_name": cfg.name, "config_hash": config_hash(cfg), "created_ns": created_ns,
            "created": f"t{created_ns}", "fundarb_version": version, "gates": gates, "recordings": [],
            "passed": passed, "reason": failure_reason(gates, [], 0.9)}


@pytest.fixture
def cfg():
    return load(BASELINE)


def test_the_store_is_created_with_its_schema_and_appends(tmp_path, cfg):
    store = tmp_path / "state" / "deeper" / "promotions.sqlite"
    assert save_record(store, record(cfg, False, 1, ("APR > 10%",))) == 1
    assert save_record(store, record(cfg, True, 2)) == 2
    check_store(store)
    db = sqlite3.connect(store)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert dict(db.execute("SELECT key, value FROM meta")) == {"schema_version": "2", "kind": "fundarb promotions"}
    cols = [r[1] for r in db.execute("PRAGMA table_info(promotions)")]
    assert cols == ["id", "created_ns", "config_hash", "config_name", "passed", "record_json", "hmac"]
    rows = records_for(store, config_hash(cfg))
    assert [(r["created_ns"], r["passed"]) for r in rows] == [(1, 0), (2, 1)]
    assert json.loads(rows[1]["record_json"])["config_hash"] == config_hash(cfg)
    db.close()
    assert [p.name for p in store.parent.iterdir()] == ["promotions.sqlite"]  # no temporary store, -wal or -shm left


@pytest.mark.parametrize("content", [b"", b"hello\n", b"SQLite format 2\x00 not really"], ids=["empty", "text", "other"])
def test_a_file_that_is_not_a_store_is_refused_untouched(tmp_path, cfg, content):
    store = tmp_path / "promotions.sqlite"
    store.write_bytes(content)
    with pytest.raises(PromotionError, match="is not a fundarb promotions store"):
        save_record(store, record(cfg, True, 1))
    assert store.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["promotions.sqlite"]
    refusal = live_clearance(cfg, store)
    assert refusal is not None and config_hash(cfg)[:12] in refusal and "not a fundarb promotions store" in refusal


def test_another_fundarb_database_is_refused_untouched(tmp_path, cfg):
    path = tmp_path / "fundarb.sqlite"
    Journal(path).close()  # the live trade log: SQLite with a meta table of another kind
    before = path.read_bytes()
    with pytest.raises(PromotionError, match="not a fundarb promotions store .kind 'fundarb trade log'"):
        check_store(path)
    with pytest.raises(PromotionError):
        save_record(path, record(cfg, True, 1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fundarb.sqlite"]  # reading it left no -wal or -shm


def test_a_folder_is_not_a_store(tmp_path, cfg):
    with pytest.raises(PromotionError, match="is not a file"):
        check_store(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(PromotionError, match="is not a folder"):
        check_store(tmp_path / "file" / "promotions.sqlite")


def test_clearance_follows_the_records_of_the_exact_hash(tmp_path, cfg):
    store = tmp_path / "promotions.sqlite"
    assert "no promotions store" in live_clearance(cfg, store)
    assert not store.exists()  # asking never creates it
    save_record(store, record(cfg, False, 1, ("Sharpe > 1",)))
    save_record(store, record(cfg, False, 2, ("APR > 10%", "MaxDD < 5%")))
    refusal = live_clearance(cfg, store)
    assert refusal.startswith(f"live trading refused: config 'spot_perp' ({config_hash(cfg)[:12]}) has only failing")
    assert "(2); the latest (t2) failed MaxDD < 5%, APR > 10%;" in refusal and "Sharpe" not in refusal
    save_record(store, record(cfg, True, 3, version="9.9.9"))  # another fundarb version: still cleared
    assert live_clearance(cfg, store) is None
    raw = to_dict(cfg)
    raw["strategy"]["cooldown_hours"] = 25.0
    other = from_dict(raw)
    refusal = live_clearance(other, store)
    assert config_hash(other)[:12] in refusal and "no promotion record" in refusal and "`fundarb promote CONFIG`" in refusal


def test_publish_writes_the_store_row_and_the_same_json(tmp_path, cfg):
    store, out = tmp_path / "p.sqlite", tmp_path / "runs" / "baseline-promotion"
    rec = record(cfg, True, 5)
    row_id, path = publish(rec, store, out)
    assert path == out / RECORD_FILE and [p.name for p in out.iterdir()] == [RECORD_FILE]
    assert records_for(store, config_hash(cfg))[0]["record_json"] == path.read_text()
    assert row_id == 1 and oct(path.stat().st_mode & 0o777) == "0o644"


def test_publish_to_a_refused_store_leaves_no_file(tmp_path, cfg):
    store, out = tmp_path / "p.sqlite", tmp_path / "out"
    store.write_text("not a store")
    with pytest.raises(PromotionError):
        publish(record(cfg, True, 5), store, out)
    assert list(out.iterdir()) == []  # the staged JSON is removed
