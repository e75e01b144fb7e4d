"""The promotion gate from simulation to live: the recordings' replay
regressions, the config's backtest and Monte Carlo study judged against the
success gates (docs/design.md), and the promotion record that the live runner asks for.

A gate passes when it passes on the backtest AND on at least ``min_share`` of
the Monte Carlo paths; a promotion passes when every gate passes and every
recording replays to its golden file. Every record, passing or failing, goes
to the promotions store (SQLite, ``docs/promotion.md``) and to a JSON file,
so the history of attempts is kept. Live trading is cleared only for a config
hash that has a passing record whose HMAC verifies: each row carries an
HMAC-SHA256 of its content keyed with a local key file (``key_path``,
created 0600 on first use), so a row written into the store by anything but
``fundarb promote`` on a machine holding the key clears nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import platform
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import attrs

from fundarb import __version__
from fundarb.app.replay import GOLDEN_FILE, golden_diff, golden_text, run_replay
from fundarb.config import SPOT_LINEAR, Config, ConfigError, canonical_json, config_hash, load
from fundarb.core.errors import FundarbError
from fundarb.data.history import FUNDING_FILE, PRICES_FILE
from fundarb.live.runlock import make_folder
from fundarb.output.report import _clean
from fundarb.replay.parse import MANIFEST, Recording, ReplayError, load_recording
from fundarb.research.study import StudyResult, summarize
from fundarb.research.walkforward import WalkResult, window_rows
from fundarb.sim.backtest import BacktestResult
from fundarb.support.scrub import scrub
from fundarb.support.sqlite_files import create_whole

DEFAULT_STORE = Path("state/promotions.sqlite")
STORE_ENV = "FUNDARB_PROMOTIONS"
RECORD_FILE = "promotion.json"
DEFAULT_MIN_SHARE = 0.90
SCHEMA_VERSION = 2
READABLE_VERSIONS = ("1", "2")  # version 1 (no hmac column) is migrated on the next write
KIND = "fundarb promotions"
SQLITE_HEADER = b"SQLite format 3\x00"
PROMOTE_HINT = "run `fundarb promote CONFIG` on this config"
KEY_ENV = "FUNDARB_PROMOTION_KEY_FILE"
KEY_BYTES = 32

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created_ns INTEGER NOT NULL, config_hash TEXT NOT NULL,
    config_name TEXT NOT NULL, passed INTEGER NOT NULL, record_json TEXT NOT NULL, hmac TEXT);
CREATE INDEX promotions_by_hash ON promotions (config_hash, id);
"""
COLUMNS = ("id", "created_ns", "config_hash", "config_name", "passed", "record_json")


class PromotionError(FundarbError, ValueError):
    """Input the promotion cannot use (an option, the store, the recordings);
    the message names it."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_min_share(share: float) -> float:
    if not (math.isfinite(share) and 0.0 < share <= 1.0):
        raise PromotionError(f"--min-path-share must be a share in (0, 1], got {share}")
    return share


# --- replay regressions --------------------------------------------------------

@attrs.frozen
class Regression:
    """One recording replayed with its shipped config against its golden file.
    ``sha256`` covers its capture files: the sha256 of ``sha256sum``'s lines
    for them, in the manifest's order (``sha256sum FILES | sha256sum``)."""

    name: str
    sha256: str
    files: dict[str, str]
    golden_sha256: str | None
    matched: bool
    detail: str


def recording_folders(recordings: Path) -> list[Path]:
    if not recordings.is_dir():
        raise PromotionError(f"recordings folder {recordings} does not exist")
    folders = sorted(p.parent for p in recordings.glob(f"*/{MANIFEST}"))
    if not folders:
        raise PromotionError(f"no recordings (folders with a recording.toml) under {recordings}")
    return folders


def capture_hashes(rec: Recording) -> tuple[str, dict[str, str]]:
    """(combined sha256, per-file sha256) of a recording's capture files."""
    files = {name: sha256_file(rec.folder / name) for feed in rec.feeds for name in feed.files}
    lines = "".join(f"{digest}  {name}\n" for name, digest in files.items())
    return hashlib.sha256(lines.encode()).hexdigest(), files


def check_recording(folder: Path, sims: Path, cache_dir: Path | None = None) -> Regression:
    """Replay one recording exactly as `fundarb replay` and the replay tests
    do, and compare with its golden file; a recording that cannot be replayed
    is a failed regression, named with the reason."""
    golden = folder / GOLDEN_FILE
    golden_sha = sha256_file(golden) if golden.is_file() else None
    try:
        rec = load_recording(folder)
        combined, files = capture_hashes(rec)
        result, _ = run_replay(rec, load(sims / rec.config), cache_dir)
    except (ReplayError, ConfigError, ValueError, OSError) as exc:
        return Regression(folder.name, "", {}, golden_sha, False, f"cannot replay: {scrub(str(exc))}")
    if golden_sha is None:
        return Regression(folder.name, combined, files, None, False, f"no golden file {golden}")
    expected, actual = golden.read_text(), golden_text(result)
    if actual == expected:
        return Regression(folder.name, combined, files, golden_sha, True, "matches its golden file")
    diff = golden_diff(expected, actual, limit=10**9).splitlines()[2:]  # past the ---/+++ header
    removed, added = sum(line[:1] == "-" for line in diff), sum(line[:1] == "+" for line in diff)
    return Regression(folder.name, combined, files, golden_sha, False,
                      f"differs from its golden file (-{removed} +{added} lines)")


def run_regressions(folders: Sequence[Path], sims: Path, cache_dir: Path | None = None,
                    progress: Callable[[str], None] | None = None) -> list[Regression]:
    out = []
    for folder in folders:
        if progress is not None:
            progress(folder.name)
        out.append(check_recording(folder, sims, cache_dir))
    return out


# --- the gate rule ----------------------------------------------------------------

def gate_verdicts(backtest_gates: list[dict[str, Any]], summary: dict[str, Any], min_share: float) -> list[dict[str, Any]]:
    """Per gate: the backtest value and verdict, the share of Monte Carlo
    paths passing, and the gate's pass (backtest AND share >= min_share)."""
    rates = summary["gate_pass_rates"]
    out = []
    for g in backtest_gates:
        share = float(rates[g["gate"]])
        out.append({
            "gate": g["gate"], "metric": g["metric"], "op": g["op"], "threshold": g["threshold"],
            "backtest_value": g["value"], "backtest_passed": bool(g["passed"]), "path_share": share,
            # 1e-12: a share like 18/20 must meet 0.9 whatever the float rounding
            "passed": bool(g["passed"]) and share >= min_share - 1e-12,
        })
    return out


def share_text(share: float) -> str:
    """A share as a percentage, with a decimal unless it is whole (199/200 is
    99.5%, never a rounded 100%)."""
    return f"{share:.0%}" if abs(share * 100 - round(share * 100)) < 1e-9 else f"{share:.1%}"


WALK_GATE = "out-of-sample edge over always-on >= 0"


def walk_gate(summary: dict[str, Any]) -> dict[str, Any]:
    """The walk-forward's gate: its stitched out-of-sample net APR is not
    below always-on's over the same windows (a config that holds the carry
    as always-on does, window after window, earns what it earns and passes)."""
    edge = float(summary["edge_over_always_on"])
    return {"gate": WALK_GATE, "metric": "edge_over_always_on", "op": ">=", "threshold": 0.0, "value": edge,
            "passed": edge >= 0}


def failure_reason(gates: list[dict[str, Any]], regressions: Sequence[Regression], min_share: float,
                   walk: dict[str, Any] | None = None) -> str | None:
    parts = []
    failing = [g for g in gates if not g["passed"]]
    if failing:
        parts.append("gates failed: " + "; ".join(
            f"{g['gate']} ({'backtest fails' if not g['backtest_passed'] else 'backtest passes'}, "
            f"{share_text(g['path_share'])} of paths pass, need {share_text(min_share)})" for g in failing))
    if walk is not None and not walk["passed"]:
        parts.append(f"walk-forward: out of sample the config earned {walk['value']:+.2%} APR against always-on "
                     "(a negative edge: holding the carry throughout earned more)")
    bad = [r for r in regressions if not r.matched]
    if bad:
        parts.append("replay regressions failed: " + "; ".join(f"{r.name}: {r.detail}" for r in bad))
    return " | ".join(parts) if parts else None


# --- the record ------------------------------------------------------------------

@attrs.frozen
class MonteCarloSettings:
    paths: int
    days: float
    seed: int
    min_path_share: float


def data_file_hashes(data_dir: Path) -> dict[str, str]:
    """sha256 of the history parquet files a backtest reads."""
    return {name: sha256_file(data_dir / name) for name in (PRICES_FILE, FUNDING_FILE)}


def build_record(cfg: Config, backtest: BacktestResult, study: StudyResult, regressions: Sequence[Regression],
                 data_files: dict[str, str], settings: MonteCarloSettings, created_ns: int,
                 walked: WalkResult) -> dict[str, Any]:
    summary = summarize(study.rows)
    gates = gate_verdicts(backtest.gates, summary, settings.min_path_share)
    walk_summary = walked.summary()
    wgate = walk_gate(walk_summary)
    reason = failure_reason(gates, regressions, settings.min_path_share, wgate)
    return cast(dict[str, Any], _clean({
        "config_name": cfg.name,
        "config_hash": config_hash(cfg),
        "config_json": canonical_json(cfg),
        # how the carry holds its legs: live trading runs only the structure promoted
        "structure": cfg.structure_kind,
        "created": datetime.fromtimestamp(created_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "created_ns": created_ns,
        "fundarb_version": __version__,
        "python_version": platform.python_version(),
        "data_files": data_files,
        "backtest_data": backtest.history.describe(),
        "montecarlo": {**attrs.asdict(settings), "block_periods": study.block_periods,
                       "block_length": "Politis-White automatic" if study.block_auto else "given"},
        "metrics": {"backtest": backtest.metrics, "montecarlo": summary},
        "gates": gates,
        "walkforward": {
            "gate": wgate, "grid": walked.grid,
            "grid_text": ", ".join(f"{k}={','.join(f'{v:g}' for v in vs)}" for k, vs in walked.grid.items()),
            "train_days": walked.spec.train_days, "test_days": walked.spec.test_days,
            "step_days": walked.spec.step_days, "paths_per_grid_point": walked.spec.paths,
            **{k: v for k, v in walk_summary.items() if k != "parameter_stability"},
            "parameter_stability": walk_summary["parameter_stability"],
            "windows_table": window_rows(walked),
        },
        "recordings": [attrs.asdict(r) for r in regressions],
        "passed": reason is None,
        "reason": reason,
    }))


def record_text(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, indent=2, allow_nan=False) + "\n"


# --- the store -------------------------------------------------------------------

def store_path(option: Path | None) -> Path:
    return option or Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def check_store(path: Path) -> None:
    """Refuse, without touching it, anything at ``path`` that is not a
    promotions store; a missing file is fine (it is created on first write)."""
    if not path.exists():
        check_creatable(path.parent, f"promotions store {path}")
        return
    if not path.is_file():
        raise PromotionError(f"promotions store {path} is not a file")
    with open(path, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise PromotionError(f"{path} is not a fundarb promotions store (not an SQLite file); choose another --store")
    db = _connect_read_only(path)
    try:
        _check_schema(db, path)
    except sqlite3.DatabaseError as exc:
        raise PromotionError(f"{path} is not a fundarb promotions store ({scrub(str(exc))}); choose another --store") from None
    finally:
        db.close()


def _check_schema(db: sqlite3.Connection, path: Path) -> str:
    """The store's schema version (one this fundarb reads), else PromotionError."""
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("kind") != KIND:
        raise PromotionError(f"{path} is not a fundarb promotions store (kind {meta.get('kind')!r}); choose another --store")
    version = meta.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise PromotionError(f"{path}: promotions store schema version {version}, "
                             f"this fundarb reads version {SCHEMA_VERSION} (and migrates 1)")
    columns = COLUMNS + (("hmac",) if version != "1" else ())
    db.execute(f"SELECT {', '.join(columns)} FROM promotions LIMIT 0")
    return str(version)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Read without leaving files behind: opening a WAL database read-only
    creates -wal and -shm beside it, so one that nobody has open (no -shm) is
    read as immutable; its content is all in the main file then."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with open(path, "rb") as f:
        wal_mode = f.read(20)[18:19] == b"\x02"  # header byte 18: 2 = WAL
    if wal_mode and not Path(f"{path}-shm").exists():
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True, timeout=10.0)


def _create_store(path: Path) -> None:
    """An empty store at ``path``, either absent or complete (never a half-made schema)."""
    create_whole(path, SCHEMA, [("schema_version", str(SCHEMA_VERSION)), ("kind", KIND)])


def _migrate(db: sqlite3.Connection) -> None:
    """Version 1 -> 2 inside the caller's transaction: the ``hmac`` column,
    NULL on the old rows (unverified: they clear nothing)."""
    version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    if version == "1":
        db.execute("ALTER TABLE promotions ADD COLUMN hmac TEXT")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


def save_record(path: Path, record: dict[str, Any], text: str | None = None) -> int:
    """Append a record, with its HMAC under the promotion key (made on first
    use), to the store in one transaction (migrating a version 1 store in the
    same one); its row id."""
    check_store(path)  # before the key is made: a refused store leaves nothing behind
    key = promotion_key(create=True)
    assert key is not None, "promotion_key(create=True) makes the key when there is none"
    text = text if text is not None else record_text(record)
    row = (int(record["created_ns"]), record["config_hash"], record["config_name"], int(bool(record["passed"])), text)
    if not path.exists():
        _create_store(path)
        check_store(path)
    db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            _migrate(db)
            cur = db.execute(
                "INSERT INTO promotions (created_ns, config_hash, config_name, passed, record_json, hmac) "
                "VALUES (?, ?, ?, ?, ?, ?)", (*row, record_mac(key, *row)))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        assert cur.lastrowid is not None
        return cur.lastrowid
    finally:
        db.close()


def records_for(path: Path, chash: str) -> list[sqlite3.Row]:
    """The store's rows for one config hash, oldest first (a version 1
    store's rows have no ``hmac``)."""
    db = _connect_read_only(path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM promotions WHERE config_hash = ? ORDER BY id", (chash,)).fetchall()
    finally:
        db.close()


# --- the records' HMAC ------------------------------------------------------------

def key_path() -> Path:
    """The promotion key file: ``$FUNDARB_PROMOTION_KEY_FILE``, else
    ``~/.local/state/fundarb/promotion.key``."""
    return Path(os.environ.get(KEY_ENV) or Path.home() / ".local" / "state" / "fundarb" / "promotion.key")


def _new_key(path: Path) -> None:
    """A random key written beside ``path`` (0600) and linked into place: a
    key file is either absent or whole, and one another process made
    meanwhile is kept."""
    make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(KEY_BYTES).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def promotion_key(create: bool = False) -> bytes | None:
    """The promotion key (``key_path()``); None when there is none and
    ``create`` is false. PromotionError for a file that is not a key or that
    others can read (a key they can read lets them forge records)."""
    path = key_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not create:
            return None
        try:
            _new_key(path)
        except OSError as exc:
            raise PromotionError(f"cannot create the promotion key {path} ({exc.strerror or type(exc).__name__})") from None
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PromotionError(f"cannot read the promotion key {path} ({exc.strerror or type(exc).__name__})") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode & 0o777
        if mode & 0o077:
            raise PromotionError(f"the promotion key {path} is readable by others (mode {mode:o}): "
                                 f"`chmod 600 {path}`, or delete it and promote again")
        text = f.read(4 * KEY_BYTES).decode("ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise PromotionError(f"{path} is not a fundarb promotion key ({2 * KEY_BYTES} hex digits)")
    return key


def record_mac(key: bytes, created_ns: int, chash: str, name: str, passed: int, record_json: str) -> str:
    """HMAC-SHA256 (hex) of a row's canonical content: its columns and its
    record text, as one sorted, compact JSON object."""
    content = json.dumps({"kind": KIND, "created_ns": int(created_ns), "config_hash": chash, "config_name": name,
                          "passed": bool(passed), "record_json": record_json},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, content.encode(), hashlib.sha256).hexdigest()


def verified(row: sqlite3.Row, key: bytes | None) -> bool:
    """The row's HMAC is there and matches its content under ``key``."""
    mac = row["hmac"] if "hmac" in row.keys() else None
    if key is None or not isinstance(mac, str):
        return False
    try:
        expected = record_mac(key, row["created_ns"], row["config_hash"], row["config_name"], row["passed"],
                              row["record_json"])
    except (TypeError, ValueError):  # a column of the wrong type: altered
        return False
    return hmac.compare_digest(mac, expected)


# --- the JSON file ---------------------------------------------------------------

def check_creatable(folder: Path, what: str) -> None:
    """The nearest existing ancestor of ``folder`` must be a folder."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise PromotionError(f"{what}: {p} is not a folder")
            return


def check_out_folder(out: Path) -> None:
    check_creatable(out, f"--out {out}")
    if (out / RECORD_FILE).is_dir():
        raise PromotionError(f"--out {out}: {out / RECORD_FILE} is a folder")


def stage_json(out: Path, text: str) -> Path:
    """Write the record beside its final place; ``publish_json`` renames it."""
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{RECORD_FILE}.", suffix=".tmp", dir=out)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the record is not secret
    return Path(tmp)


def publish(record: dict[str, Any], store: Path, out: Path) -> tuple[int, Path]:
    """The record to the store and to ``out/promotion.json``: the JSON is
    staged first, the store row committed, then the JSON renamed into place,
    so neither is ever half-written and the file always has its row."""
    text = record_text(record)
    tmp = stage_json(out, text)
    try:
        row_id = save_record(store, record, text)
        final = out / RECORD_FILE
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return row_id, final


# --- what the live runner asks -----------------------------------------------------

def live_clearance(cfg: Config, store: Path) -> str | None:
    """None when the store holds a passing promotion record for this exact
    config hash whose HMAC verifies under this machine's promotion key;
    otherwise the reason live trading is refused, one line naming the hash
    (first 12 chars) and what to run (`fundarb promote CONFIG`). A passing
    record without a valid HMAC (altered, written by hand, made under another
    key, or older than the HMAC) clears nothing."""
    chash = config_hash(cfg)
    who = f"config {cfg.name!r} ({chash[:12]})"
    if not store.exists():
        return f"live trading refused: {who} was never promoted (no promotions store at {store}); {PROMOTE_HINT}"
    try:
        check_store(store)
        rows = records_for(store, chash)
    except (PromotionError, sqlite3.DatabaseError) as exc:
        return f"live trading refused for {who}: {scrub(str(exc))}; {PROMOTE_HINT}"
    if not rows:
        return (f"live trading refused: {who} has no promotion record in {store} "
                f"(a changed config has a new hash); {PROMOTE_HINT}")
    passing = [r for r in rows if r["passed"]]
    if passing:
        try:
            key = promotion_key(create=False)
        except PromotionError as exc:
            return f"live trading refused for {who}: {exc}; {PROMOTE_HINT}"
        cleared = [r for r in passing if verified(r, key)]
        if cleared:
            # a record made by another fundarb version still clears: the config is what was tested; a record
            # without a structure is of a config from before structures, which were all spot_linear
            promoted = json.loads(cleared[-1]["record_json"]).get("structure", SPOT_LINEAR)
            if promoted != cfg.structure_kind:
                return (f"live trading refused: {who} was promoted as structure {promoted}, "
                        f"not {cfg.structure_kind}; {PROMOTE_HINT}")
            return None
        return (f"live trading refused: the passing promotion record of {who} in {store} was altered or made "
                f"without this machine's promotion key ({key_path()}); {PROMOTE_HINT} again")
    latest = json.loads(rows[-1]["record_json"])
    failed = [g["gate"] for g in latest.get("gates", []) if not g.get("passed")]
    failed += [f"replay {r['name']}" for r in latest.get("recordings", []) if not r.get("matched")]
    return (f"live trading refused: {who} has only failing promotion records ({len(rows)}); the latest "
            f"({latest.get('created', '?')}) failed {', '.join(failed) or 'the gate'}; fix the config and {PROMOTE_HINT}")
