"""The promotion store's keyed hash: a row clears live trading only when its
HMAC-SHA256, keyed with this machine's promotion key, matches its content.
Rows altered, written by hand, made under another key or older than the HMAC
(a version 1 store) clear nothing, and the refusal says what to do."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from fundarb.app.promote import (
    KEY_ENV,
    PromotionError,
    check_store,
    key_path,
    live_clearance,
    promotion_key,
    record_text,
    records_for,
    save_record,
)
from fundarb.config import config_hash, load

BASELINE = Path(__file__).resolve().parents[2] / "sims" / "spot_perp.toml"
ALTERED = "was altered or made without this machine's promotion key"


@pytest.fixture(autouse=True)
def key_file(tmp_path, monkeypatch) -> Path:
    """The promotion key of this test: a file in its own folder, never the user's."""
    path = tmp_path / "keys" / "promotion.key"
    monkeypatch.setenv(KEY_ENV, str(path))
    return path


@pytest.fixture
def cfg():
    return load(BASELINE)


def record(cfg, passed: bool = True, created_ns: int = 1) -> dict:
    return {"config_name": cfg.name, "config_hash": config_hash(cfg), "created_ns": created_ns,
            "created": f"t{created_ns}", "fundarb_version": "0.1.0", "gates": [], "recordings": [],
            "passed": passed, "reason": None if passed else "gates failed: APR > 10%"}


def test_the_key_is_made_on_first_use_private_and_kept(tmp_path, cfg, key_file):
    assert key_path() == key_file and promotion_key() is None  # asking does not make one
    store = tmp_path / "state" / "promotions.sqlite"
    save_record(store, record(cfg))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    save_record(store, record(cfg, created_ns=2))
    assert key_file.read_bytes() == key and len(bytes.fromhex(key.decode().strip())) == 32
    assert [p.name for p in key_file.parent.iterdir()] == ["promotion.key"]  # no temporary file left
    assert live_clearance(cfg, store) is None


def test_the_default_key_lives_in_the_users_state_folder(monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    assert key_path() == Path.home() / ".local" / "state" / "fundarb" / "promotion.key"


def sql(store: Path, statement: str, params: tuple = ()) -> None:
    db = sqlite3.connect(store)
    try:
        with db:
            db.execute(statement, params)
    finally:
        db.close()


def _refusal(cfg, store: Path) -> str:
    refusal = live_clearance(cfg, store)
    assert refusal is not None and "\n" not in refusal
    assert ALTERED in refusal and "run `fundarb promote CONFIG` on this config again" in refusal
    assert config_hash(cfg)[:12] in refusal
    return refusal


@pytest.mark.parametrize("change", [
    "UPDATE promotions SET passed = 1",  # a failing record turned into a passing one
    "UPDATE promotions SET passed = 1, hmac = NULL",
    "UPDATE promotions SET passed = 1, record_json = json_set(record_json, '$.passed', json('true'))",
    "UPDATE promotions SET passed = 1, created_ns = created_ns + 1",
])
def test_an_altered_row_clears_nothing(tmp_path, cfg, change):
    store = tmp_path / "promotions.sqlite"
    save_record(store, record(cfg, passed=False))
    assert "only failing" in live_clearance(cfg, store)
    sql(store, change)
    _refusal(cfg, store)


def test_a_row_written_by_hand_or_copied_from_another_hash_clears_nothing(tmp_path, cfg):
    store = tmp_path / "promotions.sqlite"
    save_record(store, record(cfg, passed=False))
    forged = record(cfg)
    sql(store, "INSERT INTO promotions (created_ns, config_hash, config_name, passed, record_json, hmac) "
        "VALUES (?, ?, ?, 1, ?, ?)", (5, config_hash(cfg), cfg.name, record_text(forged), "00" * 32))
    _refusal(cfg, store)
    sql(store, "DELETE FROM promotions")
    save_record(store, {**forged, "config_hash": "f" * 64})  # a genuine record of another config, relabelled
    sql(store, "UPDATE promotions SET config_hash = ?", (config_hash(cfg),))
    _refusal(cfg, store)


def test_a_record_made_under_another_key_clears_nothing(tmp_path, cfg, key_file, monkeypatch):
    store = tmp_path / "promotions.sqlite"
    save_record(store, record(cfg))
    assert live_clearance(cfg, store) is None
    key_file.unlink()  # this machine's key is gone (or the store was copied from another machine)
    assert f"({key_file})" in _refusal(cfg, store)
    assert not key_file.exists()  # asking does not make a key
    save_record(store, record(cfg, created_ns=2))  # promoting again makes a new key and a record it verifies
    assert live_clearance(cfg, store) is None


def test_a_key_others_can_read_or_that_is_not_a_key_is_refused(tmp_path, cfg, key_file):
    store = tmp_path / "promotions.sqlite"
    save_record(store, record(cfg))
    os.chmod(key_file, 0o644)
    refusal = live_clearance(cfg, store)
    assert refusal is not None and "readable by others (mode 644)" in refusal and f"chmod 600 {key_file}" in refusal
    with pytest.raises(PromotionError, match="readable by others"):
        save_record(store, record(cfg, created_ns=2))
    os.chmod(key_file, 0o600)
    key_file.write_text("not a key\n")
    with pytest.raises(PromotionError, match="is not a fundarb promotion key"):
        promotion_key()


def test_a_refused_store_makes_no_key(tmp_path, cfg, key_file):
    store = tmp_path / "promotions.sqlite"
    store.write_text("not a store")
    with pytest.raises(PromotionError, match="not a fundarb promotions store"):
        save_record(store, record(cfg))
    assert not key_file.exists()


# ------------------------------------------------------------------ version 1 stores

V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created_ns INTEGER NOT NULL, config_hash TEXT NOT NULL,
    config_name TEXT NOT NULL, passed INTEGER NOT NULL, record_json TEXT NOT NULL);
CREATE INDEX promotions_by_hash ON promotions (config_hash, id);
INSERT INTO meta VALUES ('schema_version', '1'), ('kind', 'fundarb promotions');
"""


def v1_store(path: Path, cfg) -> Path:
    """A store as fundarb wrote it before the HMAC, with one passing record."""
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    rec = record(cfg)
    db.execute("INSERT INTO promotions (created_ns, config_hash, config_name, passed, record_json) VALUES (?, ?, ?, 1, ?)",
               (rec["created_ns"], rec["config_hash"], rec["config_name"], record_text(rec)))
    db.commit()
    db.close()
    return path


def test_an_old_store_is_read_its_rows_clear_nothing_and_the_next_promotion_migrates_it(tmp_path, cfg):
    store = v1_store(tmp_path / "promotions.sqlite", cfg)
    check_store(store)  # a version 1 store is a store
    _refusal(cfg, store)
    save_record(store, record(cfg, created_ns=2))
    db = sqlite3.connect(store)
    assert dict(db.execute("SELECT key, value FROM meta")) == {"schema_version": "2", "kind": "fundarb promotions"}
    assert [r[1] for r in db.execute("PRAGMA table_info(promotions)")][-1] == "hmac"
    db.close()
    rows = records_for(store, config_hash(cfg))
    assert [(r["created_ns"], r["hmac"] is None) for r in rows] == [(1, True), (2, False)]
    assert json.loads(rows[1]["record_json"])["created_ns"] == 2
    assert live_clearance(cfg, store) is None  # the new, signed record clears


def test_a_store_of_a_later_schema_is_refused_untouched(tmp_path, cfg):
    store = v1_store(tmp_path / "promotions.sqlite", cfg)
    sql(store, "UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    before = store.read_bytes()
    with pytest.raises(PromotionError, match="schema version 3, this fundarb reads version 2"):
        save_record(store, record(cfg))
    assert store.read_bytes() == before


def test_live_trading_runs_only_the_structure_the_record_promoted(tmp_path):
    """A passing, verified record clears only the structure it says it promoted;
    a record without the field is of a config from before structures, so spot_linear."""
    coin = load(BASELINE.parent / "coin_margined.toml")
    store = tmp_path / "promotions.sqlite"
    save_record(store, {**record(coin), "structure": "coin_margined"})
    assert live_clearance(coin, store) is None
    other = tmp_path / "other.sqlite"
    save_record(other, {**record(coin), "structure": "spot_linear"})  # a record that disagrees with its config
    refusal = live_clearance(coin, other)
    assert refusal is not None and "promoted as structure spot_linear, not coin_margined" in refusal
    legacy = tmp_path / "legacy.sqlite"
    save_record(legacy, record(coin))
    assert "promoted as structure spot_linear" in (live_clearance(coin, legacy) or "")
    save_record(tmp_path / "base.sqlite", record(load(BASELINE)))
    assert live_clearance(load(BASELINE), tmp_path / "base.sqlite") is None
