"""The live journal and trade log: one SQLite file in WAL mode.

Write-ahead: an order's row (with its client id) is written before the
order is sent, and every transition after it, each in its own committed
transaction, so a process killed at any instant leaves a journal that says
what may have reached a venue. Fills and funding payments are keyed by the
venue's own ids, so learning them twice (from the order path and from a
reconciliation) records them once. Every row carries the config hash.

The schema is versioned (``meta.schema_version``) and documented in
``docs/trade_log.md``; a file of another version is refused, not migrated
silently.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fundarb.core.model import Side
from fundarb.core.orders import Order, OrderStatus, client_order_id

SCHEMA_VERSION = 1
KIND = "fundarb live trade log"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE operations (
    op_id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT NULL, config_hash TEXT NOT NULL,
    qty REAL NOT NULL, status TEXT NOT NULL, plan TEXT NOT NULL, result TEXT NOT NULL DEFAULT '',
    ts_done INTEGER);
CREATE TABLE orders (
    client_id TEXT PRIMARY KEY, op_id INTEGER NOT NULL REFERENCES operations(op_id), config_hash TEXT NOT NULL,
    intent_seq INTEGER NOT NULL, account TEXT NOT NULL, exchange TEXT NOT NULL, symbol TEXT NOT NULL,
    leg TEXT NOT NULL, role TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL, reduce_only INTEGER NOT NULL,
    status TEXT NOT NULL, venue_order_id TEXT, filled_qty REAL NOT NULL, avg_price REAL NOT NULL,
    fees REAL NOT NULL, status_reason TEXT NOT NULL, ts_created INTEGER NOT NULL, ts_updated INTEGER NOT NULL,
    UNIQUE (config_hash, intent_seq));
CREATE TABLE order_events (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, client_id TEXT NOT NULL, config_hash TEXT NOT NULL,
    status TEXT NOT NULL, filled_qty REAL NOT NULL, detail TEXT NOT NULL);
CREATE TABLE fills (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, venue_ts INTEGER NOT NULL, exchange TEXT NOT NULL,
    trade_id TEXT NOT NULL, account TEXT NOT NULL, client_id TEXT NOT NULL, config_hash TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL, fee_currency TEXT NOT NULL,
    fee_quote REAL, liquidity TEXT NOT NULL, UNIQUE (exchange, trade_id));
CREATE TABLE funding (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, venue_ts INTEGER NOT NULL, account TEXT NOT NULL,
    symbol TEXT NOT NULL, config_hash TEXT NOT NULL, amount REAL NOT NULL, rate REAL, payment_id TEXT NOT NULL,
    UNIQUE (account, payment_id));
CREATE TABLE reconciliations (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, trigger TEXT NOT NULL, config_hash TEXT NOT NULL,
    ok INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE TABLE alerts (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
    config_hash TEXT NOT NULL, message TEXT NOT NULL, key TEXT NOT NULL, outcome TEXT NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE INDEX fills_ts ON fills (ts);
CREATE INDEX orders_op ON orders (op_id);
CREATE INDEX funding_ts ON funding (ts);
"""
TABLES = ("operations", "orders", "order_events", "fills", "funding", "reconciliations", "alerts", "state")


class JournalError(RuntimeError):
    """A journal file that cannot be used; the message names the file."""


class Journal:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            self.db.row_factory = sqlite3.Row
            if not fresh:
                self._check_version()  # before anything is written: another file is left as it was
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # money: a committed row survives power loss
            self.db.execute("PRAGMA foreign_keys=ON")
            if fresh:
                with self.tx():
                    for stmt in filter(str.strip, SCHEMA.split(";")):
                        self.db.execute(stmt)
                    self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                        [("schema_version", str(SCHEMA_VERSION)), ("kind", KIND)])
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: not a fundarb trade log ({exc})") from None

    def _check_version(self) -> None:
        try:
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError:
            raise JournalError(f"{self.path}: not a fundarb live trade log (no meta table)") from None
        if meta.get("kind") != KIND:
            raise JournalError(f"{self.path}: not a fundarb live trade log (kind {meta.get('kind')!r})")
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise JournalError(f"{self.path}: trade log schema version {meta.get('schema_version')}, "
                               f"this fundarb reads version {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- operations -----------------------------------------------------------
    def begin_operation(self, ts: int, kind: str, config_hash: str, qty: float, plan: dict[str, Any]) -> int:
        with self.tx() as db:
            cur = db.execute("INSERT INTO operations (ts, kind, config_hash, qty, status, plan) VALUES (?,?,?,?,?,?)",
                             (ts, kind, config_hash, qty, "executing", json.dumps(plan, sort_keys=True)))
            return int(cur.lastrowid)

    def finish_operation(self, op_id: int, ts: int, status: str, result: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE operations SET status=?, result=?, ts_done=? WHERE op_id=?", (status, result, ts, op_id))

    def operations(self, status: str | None = None) -> list[sqlite3.Row]:
        if status is None:
            return self.db.execute("SELECT * FROM operations ORDER BY op_id").fetchall()
        return self.db.execute("SELECT * FROM operations WHERE status=? ORDER BY op_id", (status,)).fetchall()

    # --- orders ---------------------------------------------------------------
    def reserve_order(self, ts: int, op_id: int, config_hash: str, account: str, exchange: str, symbol: str,
                      leg: str, role: str, side: Side, qty: float, reduce_only: bool) -> Order:
        """The next order of ``config_hash``, written before it is sent: its
        client id is (config hash, intent sequence), so it never repeats."""
        with self.tx() as db:
            row = db.execute("SELECT COALESCE(MAX(intent_seq), 0) FROM orders WHERE config_hash=?",
                             (config_hash,)).fetchone()
            seq = int(row[0]) + 1
            cid = client_order_id(config_hash, seq)
            order = Order(client_id=cid, venue=account, side=side, qty=qty, ts_created=ts, reason=role,
                          pair_id=op_id, reduce_only=reduce_only, ts_updated=ts)
            db.execute("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (cid, op_id, config_hash, seq, account, exchange, symbol, leg, role, side.value, qty,
                        int(reduce_only), order.status.value, None, 0.0, 0.0, 0.0, "", ts, ts))
            self._event(db, ts, order, config_hash, "reserved")
        return order

    def save_order(self, order: Order, config_hash: str, detail: str = "", venue_order_id: str | None = None) -> None:
        with self.tx() as db:
            db.execute("UPDATE orders SET status=?, filled_qty=?, avg_price=?, fees=?, status_reason=?, ts_updated=?, "
                       "venue_order_id=COALESCE(?, venue_order_id) WHERE client_id=?",
                       (order.status.value, order.filled_qty, order.avg_price, order.fees, order.status_reason,
                        order.ts_updated, venue_order_id, order.client_id))
            self._event(db, order.ts_updated, order, config_hash, detail)

    @staticmethod
    def _event(db: sqlite3.Connection, ts: int, order: Order, config_hash: str, detail: str) -> None:
        db.execute("INSERT INTO order_events (ts, client_id, config_hash, status, filled_qty, detail) "
                   "VALUES (?,?,?,?,?,?)", (ts, order.client_id, config_hash, order.status.value,
                                            order.filled_qty, detail))

    def order_row(self, client_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM orders WHERE client_id=?", (client_id,)).fetchone()

    def orders(self, op_id: int | None = None, open_only: bool = False) -> list[sqlite3.Row]:
        sql, args = "SELECT * FROM orders", []
        where = []
        if op_id is not None:
            where.append("op_id=?")
            args.append(op_id)
        if open_only:
            terminal = tuple(s.value for s in OrderStatus if s.terminal)
            where.append(f"status NOT IN ({','.join('?' * len(terminal))})")
            args.extend(terminal)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self.db.execute(sql + " ORDER BY ts_created, intent_seq", args).fetchall()

    @staticmethod
    def order_of(row: sqlite3.Row) -> Order:
        """The core order a journal row describes (fills already applied)."""
        order = Order(client_id=row["client_id"], venue=row["account"], side=Side(row["side"]), qty=row["qty"],
                      ts_created=row["ts_created"], reason=row["role"], pair_id=row["op_id"],
                      reduce_only=bool(row["reduce_only"]), status=OrderStatus(row["status"]),
                      filled_qty=row["filled_qty"], notional=row["filled_qty"] * row["avg_price"],
                      fees=row["fees"], ts_updated=row["ts_updated"], status_reason=row["status_reason"])
        return order

    # --- fills and funding ------------------------------------------------------
    def add_fill(self, ts: int, venue_ts: int, exchange: str, trade_id: str, account: str, client_id: str,
                 config_hash: str, side: Side, qty: float, price: float, fee: float, fee_currency: str,
                 fee_quote: float | None, liquidity: str) -> bool:
        """Record a fill once; False when the venue's trade id is already known."""
        with self.tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO fills (ts, venue_ts, exchange, trade_id, account, client_id, "
                             "config_hash, side, qty, price, fee, fee_currency, fee_quote, liquidity) "
                             "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             (ts, venue_ts, exchange, trade_id, account, client_id, config_hash, side.value, qty,
                              price, fee, fee_currency, fee_quote, liquidity))
            return cur.rowcount == 1

    def fills(self, client_id: str | None = None) -> list[sqlite3.Row]:
        if client_id is None:
            return self.db.execute("SELECT * FROM fills ORDER BY seq").fetchall()
        return self.db.execute("SELECT * FROM fills WHERE client_id=? ORDER BY seq", (client_id,)).fetchall()

    def add_funding(self, ts: int, venue_ts: int, account: str, symbol: str, config_hash: str, amount: float,
                    rate: float | None, payment_id: str) -> bool:
        with self.tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO funding (ts, venue_ts, account, symbol, config_hash, amount, "
                             "rate, payment_id) VALUES (?,?,?,?,?,?,?,?)",
                             (ts, venue_ts, account, symbol, config_hash, amount, rate, payment_id))
            return cur.rowcount == 1

    def position(self, account: str, base: str = "BTC") -> float:
        """Net BTC the journal's fills hold on ``account``: buys less fees
        charged in BTC, less sells (a spot fee in the base asset is BTC not held)."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(CASE side WHEN 'buy' THEN qty ELSE -qty END), 0), "
            "COALESCE(SUM(CASE WHEN fee_currency=? THEN fee ELSE 0 END), 0) FROM fills WHERE account=?",
            (base, account)).fetchone()
        return round(float(row[0]) - float(row[1]), 12) + 0.0  # sums of decimal lots: drop float dust (and -0.0)

    # --- state, reconciliations, alerts ------------------------------------------
    def get_state(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_state(self, key: str, value: str | None, ts: int) -> None:
        with self.tx() as db:
            if value is None:
                db.execute("DELETE FROM state WHERE key=?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO state VALUES (?,?,?)", (key, value, ts))

    def blocked(self) -> str | None:
        """Why new entries are blocked, or None."""
        return self.get_state("entries_blocked")

    def add_reconciliation(self, ts: int, trigger: str, config_hash: str, ok: bool, detail: str) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO reconciliations (ts, trigger, config_hash, ok, detail) VALUES (?,?,?,?,?)",
                       (ts, trigger, config_hash, int(ok), detail))

    def add_alert(self, ts: int, kind: str, severity: str, config_hash: str, message: str,
                  key: str = "", outcome: str = "recorded") -> None:
        """Store an alert; ``outcome`` says what became of it (``fundarb.alerts``:
        sent, failed, deduplicated, rate_limited, paused, no_channel; recorded:
        not offered to a channel)."""
        with self.tx() as db:
            db.execute("INSERT INTO alerts (ts, kind, severity, config_hash, message, key, outcome) "
                       "VALUES (?,?,?,?,?,?,?)", (ts, kind, severity, config_hash, message, key or kind, outcome))

    def rows(self, table: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(f"SELECT * FROM {self._table(table)} ORDER BY rowid")]

    def count(self, table: str) -> int:
        return int(self.db.execute(f"SELECT COUNT(*) FROM {self._table(table)}").fetchone()[0])

    @staticmethod
    def _table(table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"no table {table!r} in the trade log")
        return table
