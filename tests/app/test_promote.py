"""`fundarb promote` end to end on real data: a config that passes every gate,
one that fails, the record in the store and in promotion.json, what the live
runner is told, doctored recordings, and bad input.

The configs are the shipped ones on short real windows (written to tmp_path)
with small Monte Carlo studies, so the whole file runs in well under a minute.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import sqlite3
from pathlib import Path

import attrs
import pytest
from typer.testing import CliRunner

from fundarb.app.promote import RECORD_FILE, check_recording, live_clearance
from fundarb.cli.main import app
from fundarb.config import canonical_json, config_hash, load
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR

ROOT = Path(__file__).resolve().parents[2]
SIMS = ROOT / "sims"
BITMEX = ROOT / "recordings" / "bitmex_xbtusd_2021-07-22"
# 60-day paths bootstrapped from a 2-month window: 30-day paths are too short
# for the 10% APR gate to hold on 90% of them even in the best real months
SMALL_STUDY = ["--paths", "6", "--days", "60", "--train", "30d", "--test", "14d", "--walk-paths", "4"]
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _no_network():
    """Promotion reads local files only: any connection attempt fails (module
    scope, so the promotions the tests share run under it too)."""
    def refuse(self, address, *a, **k):
        raise AssertionError(f"promote tried to connect to {address}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        yield


def variant(src: Path, folder: Path, name: str, start: str, end: str) -> Path:
    """A shipped config with another name and [data] window (real data)."""
    text = src.read_text()
    text = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', text, count=1)
    text = re.sub(r'(?m)^start = ".*"$', f'start = "{start}"', text, count=1)
    text = re.sub(r'(?m)^end = ".*"$', f'end = "{end}"', text, count=1)
    path = folder / f"{name}.toml"
    path.write_text(text)
    assert load(path).data.start == start
    return path


def promote(*args: str, env: dict | None = None):
    return runner.invoke(app, ["promote", *args], env={"COLUMNS": "200", **(env or {})})


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("promote")
    return {
        "base": base,
        "cache": base / "cache",
        "store": base / "state" / "promotions.sqlite",
        # real Binance history of Feb-Mar 2024 (funding ~27% APR), the stress_bull strategy
        "bull": variant(SIMS / "stress_bull.toml", base, "promote_bull", "2024-02-01", "2024-04-01"),
        # the default config on the real Q1 2023 (funding ~8% APR)
        "q1": variant(SIMS / "spot_perp.toml", base, "promote_baseline_q1", "2023-01-01", "2023-04-01"),
    }


@pytest.fixture(scope="module")
def passing(work):
    out = work["base"] / "runs" / "promote_bull"
    # the store named by the environment, as the live runner finds it
    res = promote(str(work["bull"]), *SMALL_STUDY, "--out", str(out), "--cache-dir", str(work["cache"]),
                  env={"FUNDARB_PROMOTIONS": str(work["store"])})
    return res, out / RECORD_FILE


@pytest.fixture(scope="module")
def failing(work, passing):
    out = work["base"] / "runs" / "promote_baseline_q1"
    res = promote(str(work["q1"]), *SMALL_STUDY, "--out", str(out), "--cache-dir", str(work["cache"]),
                  "--store", str(work["store"]))
    return res, out / RECORD_FILE


def test_a_config_that_passes_every_gate_is_promoted(passing):
    res, path = passing
    assert res.exit_code == 0, res.output
    record = json.loads(path.read_text())
    assert record["passed"] is True and record["reason"] is None
    assert len(record["gates"]) == 7
    for g in record["gates"]:
        assert g["backtest_passed"] and g["path_share"] >= 0.9 and g["passed"], g
    apr = next(g for g in record["gates"] if g["gate"] == "APR > 10%")
    assert apr["backtest_value"] > 0.10 and apr["backtest_value"] == record["metrics"]["backtest"]["net_apr"]
    assert record["montecarlo"]["paths"] == 6 and record["montecarlo"]["days"] == 60
    assert record["montecarlo"]["seed"] == 13 and record["montecarlo"]["min_path_share"] == 0.9
    assert record["metrics"]["montecarlo"]["paths"] == 6
    assert {r["name"]: r["matched"] for r in record["recordings"]} == {
        "binance_btcusdt_2024-08-08": True, "binance_coinm_btcusd_2024-06-30": True, "bitmex_xbtusd_2021-07-22": True}
    assert "PROMOTED" in res.output and "NOT PROMOTED" not in res.output
    assert "APR > 10%" in res.output and "100% (6/6)" in res.output


def test_the_record_holds_the_walk_forward_and_its_gate(passing, failing):
    for res, path in (passing, failing):
        record = json.loads(path.read_text())
        wf = record["walkforward"]
        assert list(wf["grid"]) == ["entry"] and len(wf["grid"]["entry"]) == 1  # the config's own parameters
        assert wf["windows"] == len(wf["windows_table"]) >= 2 and wf["train_days"] == 30 and wf["test_days"] == 14
        assert wf["gate"]["value"] == wf["edge_over_always_on"] == wf["net_apr"] - wf["always_on_net_apr"]
        assert wf["gate"]["passed"] is (wf["edge_over_always_on"] >= 0)
        assert "walk-forward (" in res.output and "gate out-of-sample edge over always-on >= 0" in res.output
    assert json.loads(passing[1].read_text())["walkforward"]["gate"]["passed"] is True


def test_a_negative_out_of_sample_edge_alone_refuses_the_promotion_and_says_so(work, tmp_path):
    """The bull config passes every other gate; walked forward with a profit
    target that takes it out of the carry again and again, it earns less out
    of sample than holding the carry throughout."""
    out = tmp_path / "out"
    res = promote(str(work["bull"]), *SMALL_STUDY, "--walk-grid", "strategy.target_profit=0.004",
                  "--walk-grid", "strategy.cooldown_hours=12", "--store", str(tmp_path / "s.sqlite"), "--out", str(out))
    assert res.exit_code == 1, res.output
    record = json.loads((out / RECORD_FILE).read_text())
    assert all(g["passed"] for g in record["gates"]) and all(r["matched"] for r in record["recordings"])
    assert record["walkforward"]["gate"]["passed"] is False and record["walkforward"]["edge_over_always_on"] < 0
    assert record["passed"] is False
    assert record["reason"].startswith("walk-forward: out of sample the config earned -")
    assert "NOT PROMOTED: walk-forward" in res.output and "a negative edge" in res.output


def test_recording_and_data_hashes_are_those_of_the_files(passing):
    record = json.loads(passing[1].read_text())
    bitmex = next(r for r in record["recordings"] if r["name"] == BITMEX.name)
    files = {n: hashlib.sha256((BITMEX / n).read_bytes()).hexdigest() for n in ("BITMEX.0", "BITMEX.ws.1.0")}
    assert bitmex["files"] == files
    # `sha256sum BITMEX.0 BITMEX.ws.1.0 | sha256sum`
    lines = "".join(f"{files[n]}  {n}\n" for n in ("BITMEX.0", "BITMEX.ws.1.0"))
    assert bitmex["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    assert bitmex["golden_sha256"] == hashlib.sha256((BITMEX / "golden.json").read_bytes()).hexdigest()
    assert record["data_files"] == {n: hashlib.sha256((SHIPPED_DIR / n).read_bytes()).hexdigest()
                                    for n in (PRICES_FILE, FUNDING_FILE)}


def test_a_config_that_misses_the_apr_gate_is_recorded_as_failing(failing):
    res, path = failing
    assert res.exit_code == 1, res.output
    record = json.loads(path.read_text())
    assert record["passed"] is False
    apr = next(g for g in record["gates"] if g["gate"] == "APR > 10%")
    assert not apr["backtest_passed"] and not apr["passed"] and apr["backtest_value"] < 0.10
    assert record["reason"].startswith("gates failed: ") and "APR > 10% (backtest fails" in record["reason"]
    assert "\n" not in record["reason"]
    # a gate the backtest passes still fails when too few Monte Carlo paths pass it
    sharpe = next(g for g in record["gates"] if g["gate"] == "Sharpe > 1")
    assert sharpe["backtest_passed"] and sharpe["path_share"] < 0.9 and not sharpe["passed"]
    assert "Sharpe > 1 (backtest passes" in record["reason"]
    assert all(r["matched"] for r in record["recordings"])  # the regressions pass; the config does not
    assert "NOT PROMOTED" in res.output and "APR > 10%" in res.output


def test_the_json_file_and_the_store_row_agree(work, passing, failing):
    db = sqlite3.connect(work["store"])
    assert dict(db.execute("SELECT key, value FROM meta")) == {"schema_version": "2", "kind": "fundarb promotions"}
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute("SELECT id, created_ns, config_hash, config_name, passed, record_json FROM promotions ORDER BY id").fetchall()
    assert len(rows) == 2
    for row, (config, (_, path)) in zip(rows, ((work["bull"], passing), (work["q1"], failing)), strict=True):
        text = path.read_text()
        assert row[5] == text  # the file is the stored record, byte for byte
        record = json.loads(text)
        cfg = load(config)
        assert row[2] == record["config_hash"] == config_hash(cfg)
        assert record["config_json"] == canonical_json(cfg)
        assert hashlib.sha256(record["config_json"].encode()).hexdigest() == row[2]
        assert (row[1], row[3], bool(row[4])) == (record["created_ns"], cfg.name, record["passed"])
        assert record["created"].endswith("Z") and record["fundarb_version"] and record["python_version"]
    assert [bool(r[4]) for r in rows] == [True, False]


def test_live_clearance(work, passing, failing):
    store = work["store"]
    bull, q1 = load(work["bull"]), load(work["q1"])
    assert live_clearance(bull, store) is None
    refusal = live_clearance(q1, store)
    assert refusal is not None and "\n" not in refusal
    assert config_hash(q1)[:12] in refusal and "only failing" in refusal and "APR > 10%" in refusal
    assert "`fundarb promote CONFIG`" in refusal
    # one field changed: a new hash, which the original's record does not clear
    changed = attrs.evolve(bull, strategy=attrs.evolve(bull.strategy, entry_apr=0.07))
    refusal = live_clearance(changed, store)
    assert refusal is not None and config_hash(changed)[:12] in refusal and "no promotion record" in refusal
    missing = work["base"] / "nowhere" / "promotions.sqlite"
    refusal = live_clearance(bull, missing)
    assert refusal is not None and "no promotions store" in refusal and config_hash(bull)[:12] in refusal
    assert not missing.parent.exists()


def test_a_record_from_another_fundarb_version_still_clears(work, passing, tmp_path):
    from fundarb.app.promote import records_for, save_record

    bull = load(work["bull"])
    (row,) = records_for(work["store"], config_hash(bull))
    store = tmp_path / "promotions.sqlite"
    save_record(store, {**json.loads(row["record_json"]), "fundarb_version": "0.0.1"})
    assert live_clearance(bull, store) is None
    # the same change made in the store behind fundarb's back clears nothing
    edited = tmp_path / "edited.sqlite"
    shutil.copy(work["store"], edited)
    db = sqlite3.connect(edited)
    with db:
        db.execute("UPDATE promotions SET record_json = json_set(record_json, '$.fundarb_version', '0.0.1')")
    db.close()
    refusal = live_clearance(bull, edited)
    assert refusal is not None and "was altered or made without this machine's promotion key" in refusal


def test_a_store_that_is_a_text_file_is_refused_and_left_alone(work, tmp_path):
    store = tmp_path / "notes.sqlite"
    store.write_text("my notes, not a database\n")
    before = store.read_bytes()
    out = tmp_path / "out"
    res = promote(str(work["bull"]), *SMALL_STUDY, "--store", str(store), "--out", str(out))
    assert res.exit_code == 2
    assert res.output.count("error:") == 1 and "not a fundarb promotions store" in res.output
    assert store.read_bytes() == before and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]  # no -wal, -shm or journal beside it
    refusal = live_clearance(load(work["bull"]), store)
    assert refusal is not None and "not a fundarb promotions store" in refusal
    assert store.read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "config file not found"),
    (["{bull}", "--paths", "0"], "--paths must be a whole number"),
    (["{bull}", "--min-path-share", "0"], "--min-path-share must be a share in (0, 1]"),
    (["{bull}", "--min-path-share", "1.5"], "--min-path-share must be a share in (0, 1]"),
    (["{bull}", "--min-path-share", "-0.5"], "--min-path-share must be a share in (0, 1]"),
    (["{bull}", "--days", "0"], "--days must be between 1 and 3650"),
    (["{bull}", "--workers", "0"], "--workers must be between 1 and 64"),
    (["{bull}", "--train", "1y"], "--train '1y' is not a span like 365d"),
    (["{bull}", "--train", "365d"], "holds no training window of 365 days followed by a test window of 14 days"),
    (["{bull}", "--walk-grid", "entry=x"], "--grid entry: 'x' is not a number"),
], ids=["missing-config", "paths-0", "share-0", "share-1.5", "share-negative", "days-0", "workers-0", "train-1y",
        "window-short", "walk-grid"])
def test_bad_input_is_one_error_line_and_writes_nothing(work, tmp_path, args, message):
    args = [a.format(missing=tmp_path / "nope.toml", bull=work["bull"]) for a in args]
    store, out = tmp_path / "store.sqlite", tmp_path / "out"
    walk = ["--train", "30d", "--test", "14d"]  # windows that fit the short real window (a later --train wins)
    res = promote(*walk, *args, "--store", str(store), "--out", str(out))
    assert res.exit_code == 2, res.output
    assert message in res.output and res.output.count("error:") == 1
    assert len(res.output.strip().splitlines()) == 1
    assert not store.exists() and not out.exists()


def test_a_doctored_golden_fails_its_regression(tmp_path, work):
    folder = tmp_path / "recordings" / BITMEX.name
    shutil.copytree(BITMEX, folder)
    assert check_recording(folder, SIMS, work["cache"]).matched  # the copy matches as shipped
    golden = folder / "golden.json"
    text = golden.read_text()
    assert text.count('"orders": 0') == 1
    golden.write_text(text.replace('"orders": 0', '"orders": 1'))  # one byte
    result = check_recording(folder, SIMS, work["cache"])
    assert not result.matched and "differs from its golden file" in result.detail


def test_a_failed_regression_fails_a_config_that_passes_every_gate(tmp_path, work, passing):
    recordings = tmp_path / "recordings"
    shutil.copytree(BITMEX, recordings / BITMEX.name)
    golden = recordings / BITMEX.name / "golden.json"
    golden.write_text(golden.read_text().replace('"orders": 0', '"orders": 1'))
    store, out = tmp_path / "store.sqlite", tmp_path / "out"
    res = promote(str(work["bull"]), *SMALL_STUDY, "--recordings", str(recordings), "--cache-dir", str(work["cache"]),
                  "--store", str(store), "--out", str(out))
    assert res.exit_code == 1, res.output
    record = json.loads((out / RECORD_FILE).read_text())
    assert all(g["passed"] for g in record["gates"])
    assert record["passed"] is False
    assert record["reason"] == f"replay regressions failed: {BITMEX.name}: differs from its golden file (-1 +1 lines)"
    refusal = live_clearance(load(work["bull"]), store)
    assert refusal is not None and f"replay {BITMEX.name}" in refusal
