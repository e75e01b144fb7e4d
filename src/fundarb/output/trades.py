"""SQLite trade log: every intent, order transition, fill, funding payment,
transfer, charge, alert and risk veto, each row carrying the config hash.

Schema version 1 (``meta.schema_version``). Tables and columns are listed in
``SCHEMA``; ``seq`` is the row's position in the decision log, so rows of all
tables interleave back into the order the engine saw them. ``equity`` holds the
hourly mark-to-market curve. A backtest writes the whole file in one
transaction to a temporary path and renames it into place: a failed run never
leaves a half-written log.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# table -> (decision-log kind, columns after seq/config_hash)
SCHEMA: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "intents": ("intent", (("ts", "INTEGER"), ("client_id", "TEXT"), ("venue", "TEXT"), ("side", "TEXT"),
                           ("qty", "REAL"), ("reason", "TEXT"), ("pair_id", "INTEGER"), ("reduce_only", "INTEGER"))),
    "orders": ("order", (("ts", "INTEGER"), ("client_id", "TEXT"), ("venue", "TEXT"), ("side", "TEXT"),
                         ("qty", "REAL"), ("filled_qty", "REAL"), ("avg_price", "REAL"), ("fees", "REAL"),
                         ("status", "TEXT"), ("reason", "TEXT"), ("status_reason", "TEXT"), ("pair_id", "INTEGER"))),
    "fills": ("fill", (("ts", "INTEGER"), ("venue", "TEXT"), ("client_id", "TEXT"), ("side", "TEXT"), ("qty", "REAL"),
                       ("price", "REAL"), ("mid", "REAL"), ("fee", "REAL"), ("liquidity", "TEXT"),
                       ("liquidation", "INTEGER"))),
    "funding": ("funding", (("ts", "INTEGER"), ("venue", "TEXT"), ("qty", "REAL"), ("rate", "REAL"), ("mark", "REAL"),
                            ("amount", "REAL"), ("mark_source", "TEXT"))),
    "transfers": ("transfer", (("ts", "INTEGER"), ("transfer_id", "TEXT"), ("from_venue", "TEXT"),
                               ("to_venue", "TEXT"), ("amount", "REAL"), ("fee", "REAL"), ("status", "TEXT"))),
    "charges": ("charge", (("ts", "INTEGER"), ("venue", "TEXT"), ("amount", "REAL"), ("kind", "TEXT"))),
    "alerts": ("alert", (("ts", "INTEGER"), ("kind", "TEXT"), ("severity", "TEXT"), ("message", "TEXT"))),
    "vetoes": ("veto", (("ts", "INTEGER"), ("venue", "TEXT"), ("side", "TEXT"), ("qty", "REAL"), ("reason", "TEXT"),
                        ("why", "TEXT"))),
}
EQUITY_COLUMNS = ("ts", "equity", "funding", "fees", "delta", "drift", "margin_buffer", "leverage", "spot", "mark")
KIND_TO_TABLE = {kind: table for table, (kind, _) in SCHEMA.items()}


def create_schema(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for table, (_, cols) in SCHEMA.items():
        body = ", ".join(f"{name} {typ}" for name, typ in cols)
        db.execute(f"CREATE TABLE {table} (seq INTEGER PRIMARY KEY, config_hash TEXT NOT NULL, {body})")
        db.execute(f"CREATE INDEX {table}_ts ON {table} (ts)")
    db.execute(
        "CREATE TABLE equity (ts INTEGER PRIMARY KEY, "
        + ", ".join(f"{c} REAL" for c in EQUITY_COLUMNS[1:])
        + ")"
    )


def _insert_log(db: sqlite3.Connection, config_hash: str, log: Iterable[tuple[str, dict[str, Any]]]) -> None:
    for seq, (kind, row) in enumerate(log, start=1):
        table = KIND_TO_TABLE[kind]
        cols = SCHEMA[table][1]
        values = [seq, config_hash] + [row[name] for name, _ in cols]
        marks = ", ".join("?" * len(values))
        db.execute(f"INSERT INTO {table} VALUES ({marks})", values)


def write_trade_log(
    path: Path,
    config_hash: str,
    meta: dict[str, str],
    log: Iterable[tuple[str, dict[str, Any]]],
    curve: dict[str, list],
) -> None:
    """Write a complete trade log to ``path`` atomically."""
    tmp = path.with_name(path.name + ".partial")
    if tmp.exists():
        tmp.unlink()
    db = sqlite3.connect(tmp)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        with db:
            create_schema(db)
            rows = {"schema_version": str(SCHEMA_VERSION), "config_hash": config_hash, **meta}
            db.executemany("INSERT INTO meta VALUES (?, ?)", sorted(rows.items()))
            _insert_log(db, config_hash, log)
            n = len(curve["ts"])
            db.executemany(
                f"INSERT INTO equity VALUES ({', '.join('?' * len(EQUITY_COLUMNS))})",
                ([curve[c][i] for c in EQUITY_COLUMNS] for i in range(n)),
            )
    except BaseException:
        db.close()
        tmp.unlink(missing_ok=True)
        raise
    db.close()
    os.replace(tmp, path)


def read_table(path: Path, table: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    finally:
        db.close()
