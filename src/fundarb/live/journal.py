"""The journal and trade log: one SQLite file (rollback journal,
``synchronous=FULL``: a committed row is in the file when the commit returns).

Write-ahead: an order's row (with its client id) is written before the
order is sent, and every transition after it, each in its own committed
transaction, so a process killed at any instant leaves a journal that says
what may have reached a venue. Fills are keyed by the venue identity, the
venue's order id and its trade id, and funding payments by the venue
identity and the payment id, so learning them twice (from the order path and
from a reconciliation) records them once, and a venue that numbers its trades
afresh (a testnet, another account, a restarted emulator) never has a real
fill taken for a known one. A fill and the order row it changes are written
in one transaction: the row's filled size, average price and fees are summed
from the fills table, never written apart from them. Every row carries the
config hash.

A trade log is bound to the venue identities (``fundarb.live.identity``)
it was first traded with, in ``meta``; any other is refused with one line.

A trade log is created whole (made aside with mode 0600, then linked in
under its name). An existing file is checked when it is opened (``PRAGMA
quick_check``): an empty or damaged file is refused with one line, never
re-initialised. A write that fails (a full disk, a read-only folder) is a
``JournalError`` naming the file and the cause, with nothing of its
transaction kept.

The schema is versioned (``meta.schema_version``) and documented in
``docs/trade_log.md``; it is one schema for backtest, replay, paper and live
runs (``meta.source``). A file of version 1 or 2 is migrated to 3 in one
transaction per step, after a copy of it is kept beside it
(``<file>.v1.bak``, ``<file>.v2.bak``); any other version is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from fundarb.core.engine import CURVE_FIELDS
from fundarb.core.errors import FundarbError
from fundarb.core.model import Fill, Side
from fundarb.core.orders import Order, OrderStatus, client_order_id
from fundarb.live.identity import VenueIdentity
from fundarb.support.scrub import scrub
from fundarb.support.sqlite_files import create_whole

# the engine's hourly marks as its curve names them (less the in-position flag the metrics use)
# the hourly figures a journal keeps (a capital held in BTC: the held BTC's PnL is in the report, not the journal)
EQUITY_COLUMNS = tuple(c for c in CURVE_FIELDS if c not in ("in_position", "held_pnl"))

DEFAULT_JOURNAL = Path("state") / "fundarb.sqlite"  # the trade log a command uses when given none
SCHEMA_VERSION = 3
KIND = "fundarb trade log"  # backtest, replay, paper and live alike (meta ``source`` says which)
KINDS_READ = (KIND, "fundarb live trade log")  # the second: versions 1 and 2, live and paper only

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
    fee_quote REAL, liquidity TEXT NOT NULL, venue_id TEXT NOT NULL, venue_order_id TEXT NOT NULL,
    mid REAL, UNIQUE (venue_id, venue_order_id, trade_id));
CREATE TABLE funding (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, venue_ts INTEGER NOT NULL, account TEXT NOT NULL,
    symbol TEXT NOT NULL, config_hash TEXT NOT NULL, amount REAL NOT NULL, rate REAL, payment_id TEXT NOT NULL,
    venue_id TEXT NOT NULL, qty REAL, mark REAL, mark_source TEXT, UNIQUE (venue_id, account, payment_id));
CREATE TABLE reconciliations (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, trigger TEXT NOT NULL, config_hash TEXT NOT NULL,
    ok INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE TABLE alerts (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
    config_hash TEXT NOT NULL, message TEXT NOT NULL, key TEXT NOT NULL, outcome TEXT NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE transfers (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, config_hash TEXT NOT NULL, transfer_id TEXT NOT NULL,
    from_account TEXT NOT NULL, to_account TEXT NOT NULL, amount REAL NOT NULL, fee REAL NOT NULL,
    status TEXT NOT NULL);
CREATE TABLE charges (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, config_hash TEXT NOT NULL, account TEXT NOT NULL,
    amount REAL NOT NULL, kind TEXT NOT NULL);
CREATE TABLE vetoes (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, config_hash TEXT NOT NULL, account TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, reason TEXT NOT NULL, why TEXT NOT NULL);
CREATE TABLE equity (ts INTEGER PRIMARY KEY, """ + ", ".join(f"{c} REAL" for c in EQUITY_COLUMNS[1:]) + """);
CREATE INDEX fills_ts ON fills (ts);
CREATE INDEX orders_op ON orders (op_id);
CREATE INDEX funding_ts ON funding (ts);
"""
TABLES = ("operations", "orders", "order_events", "fills", "funding", "reconciliations", "alerts", "state",
          "transfers", "charges", "vetoes", "equity")


FILL_COLUMNS = ("ts", "venue_ts", "exchange", "trade_id", "account", "client_id", "config_hash", "side", "qty",
                "price", "fee", "fee_currency", "fee_quote", "liquidity", "venue_id", "venue_order_id", "mid")
KILL_SWITCH_PREFIX = "kill switch"  # an entries block the kill switch set (held until `fundarb resume`)
PAPER_ACCOUNTS_KEY = "paper_accounts"  # state: the simulator's accounts after a paper runner's last step
# state: the BTC a paper carry on BTC held (``structure.capital_asset = "BTC"``) started with, outside its fills
PAPER_HELD_KEY = "paper_held_btc"
HEARTBEAT_KEY = "runner_heartbeat"  # state: the runner's last heartbeat
VENUE_KEY = "venue:"  # meta: venue:<account> -> the VenueIdentity key the trade log is bound to

# version 1 -> 2: fills keyed by (venue identity, order id, trade id), funding by
# (venue identity, account, payment id); rows from before carry venue_id '' until
# the trade log is bound, and the order id their order row has
_MIGRATE_V1 = """
ALTER TABLE fills RENAME TO fills_v1;
ALTER TABLE funding RENAME TO funding_v1;
DROP INDEX IF EXISTS fills_ts;
DROP INDEX IF EXISTS funding_ts;
CREATE TABLE fills (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, venue_ts INTEGER NOT NULL, exchange TEXT NOT NULL,
    trade_id TEXT NOT NULL, account TEXT NOT NULL, client_id TEXT NOT NULL, config_hash TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL, fee_currency TEXT NOT NULL,
    fee_quote REAL, liquidity TEXT NOT NULL, venue_id TEXT NOT NULL, venue_order_id TEXT NOT NULL,
    UNIQUE (venue_id, venue_order_id, trade_id));
CREATE TABLE funding (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, venue_ts INTEGER NOT NULL, account TEXT NOT NULL,
    symbol TEXT NOT NULL, config_hash TEXT NOT NULL, amount REAL NOT NULL, rate REAL, payment_id TEXT NOT NULL,
    venue_id TEXT NOT NULL, UNIQUE (venue_id, account, payment_id));
CREATE INDEX fills_ts ON fills (ts);
CREATE INDEX funding_ts ON funding (ts);
INSERT INTO fills SELECT f.seq, f.ts, f.venue_ts, f.exchange, f.trade_id, f.account, f.client_id, f.config_hash,
    f.side, f.qty, f.price, f.fee, f.fee_currency, f.fee_quote, f.liquidity, '',
    COALESCE((SELECT o.venue_order_id FROM orders o WHERE o.client_id = f.client_id), '')
    FROM fills_v1 f ORDER BY f.seq;
INSERT INTO funding SELECT seq, ts, venue_ts, account, symbol, config_hash, amount, rate, payment_id, ''
    FROM funding_v1 ORDER BY seq;
DROP TABLE fills_v1;
DROP TABLE funding_v1;
UPDATE meta SET value = '2' WHERE key = 'schema_version'
"""

# version 2 -> 3: one schema for backtest, replay, paper and live: the
# simulator's reference mid of a fill and the position and mark of a funding
# payment (empty where a venue does not say them), and the tables of what the
# engine also records (transfers, charges, vetoes, the hourly equity curve)
_MIGRATE_V2 = """
ALTER TABLE fills ADD COLUMN mid REAL;
ALTER TABLE funding ADD COLUMN qty REAL;
ALTER TABLE funding ADD COLUMN mark REAL;
ALTER TABLE funding ADD COLUMN mark_source TEXT;
{transfers};
{charges};
{vetoes};
{equity};
UPDATE meta SET value = '3' WHERE key = 'schema_version';
UPDATE meta SET value = '{kind}' WHERE key = 'kind'
"""


SEALED = ("fills", "funding")  # the tables whose rows are the money: chained digests in meta
DIGEST_KEY = "digest:"  # meta: digest:<table> -> sha256 chain over the table's rows, in row order


def schema_columns(table: str) -> list[str]:
    """``table``'s columns in the schema's order (a column is a name followed by its type)."""
    body = SCHEMA.split(f"CREATE TABLE {table} (", 1)[1].split(");", 1)[0]
    return re.findall(r"(?:^|,)\s*([a-z_]+) (?:INTEGER|TEXT|REAL)", body)


def _chain(prev: str, row: sqlite3.Row | tuple) -> str:
    return hashlib.sha256((prev + json.dumps(list(row), separators=(",", ":"))).encode()).hexdigest()


def lift_hint(blocked: str) -> str:
    """The command that lifts an entries block: the kill switch's is lifted
    by ``fundarb resume`` only, any other by a reconciliation that agrees."""
    if blocked.startswith(KILL_SWITCH_PREFIX):
        return '`fundarb resume "reason"` lifts the kill switch'
    return "`fundarb reconcile` lifts the block once the venues and the trade log agree"


class JournalError(FundarbError, RuntimeError):
    """A journal file that cannot be used; the message names the file.
    ``write_failure``: SQLite's reason when a write failed (a full disk, a
    file-size limit), for a caller that names the file otherwise."""

    def __init__(self, message: str, write_failure: str | None = None) -> None:
        super().__init__(message)
        self.write_failure = write_failure


@attrs.frozen
class VenueTrade:
    """One trade of one of our orders as the venue reports it, ready for the fills table."""

    venue_ts: int
    venue_id: str
    exchange: str
    venue_order_id: str
    trade_id: str
    account: str
    client_id: str
    side: Side
    qty: float
    price: float
    fee: float  # as charged, in fee_currency
    fee_currency: str
    fee_quote: float | None  # in the quote currency; None for a fee in a third asset
    liquidity: str
    mid: float | None = None  # the simulator's reference mid (backtest, replay, paper); a venue does not say it


class Journal:
    def __init__(self, path: Path | str) -> None:
        """Open the trade log at ``path``, creating it when no file is there.
        An existing file is checked before anything is written: an empty
        (zero-byte) or damaged file, or one that is not a trade log, is
        refused with one line saying how to recover, never re-initialised."""
        self.path = Path(path)
        self.migrated = False
        self._depth = 0  # nested ``tx`` blocks join the outermost transaction
        try:
            if not self.path.exists():
                _create(self.path)
            elif self.path.is_dir():
                raise JournalError(f"{self.path}: is a folder, not a trade log (--journal names the file)")
            elif self.path.stat().st_size == 0:
                raise JournalError(
                    f"{self.path}: empty file (0 bytes), not a trade log; nothing in it can be read. Restore it "
                    "from a backup, or, if nothing was ever traded with it, remove it and run the command again")
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot open the trade log ({exc.strerror or exc})") from None
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot open the trade log ({exc})") from None
        try:
            self.db.row_factory = sqlite3.Row
            with self._snapshot():
                self._check_integrity()
                version = self._check_version()  # before anything is written: another file is left as it was
            if version == 1:
                self._migrate_v1()
                version = 2
            if version == 2:
                with self._snapshot():
                    self._verify_chains()  # before the backup: a changed file is left as it was
                self._migrate_v2()
            self._check_digests()
            # a rollback journal, not WAL: a commit is in the database file itself once it returns,
            # so no committed row can be lost with a -wal file that was cut short or removed
            self.db.execute("PRAGMA journal_mode=DELETE")
            self.db.execute("PRAGMA synchronous=FULL")  # money: a committed row survives power loss
            self.db.execute("PRAGMA foreign_keys=ON")
        except JournalError:
            self.db.close()
            raise
        except (sqlite3.DatabaseError, UnicodeDecodeError, ValueError) as exc:
            self.db.close()
            raise JournalError(f"{self.path}: not a usable fundarb trade log ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]}); restore it from a backup "
                               "(`sqlite3 FILE .recover` may save its rows)") from None

    def _check_digests(self) -> None:
        """The fills and funding rows must be what was written: each table's
        rows, in order, hash to the chain kept in ``meta`` with every insert.
        A row changed in place (a damaged byte that SQLite's own check cannot
        see, an edit outside fundarb) is refused. A file from before the
        digests gets them now, from its rows as they are."""
        with self._snapshot():
            missing = self._verify_chains()
            for table in TABLES:
                # the columns are the schema's (a damaged byte in the schema's text renames one) ...
                have = [r[1] for r in self.db.execute(f"PRAGMA table_info({table})")]
                if have != schema_columns(table):
                    raise JournalError(f"{self.path}: the trade log's {table} table is not fundarb's (columns "
                                       f"{have}); the file is damaged or was changed outside fundarb. Restore it "
                                       "from a backup")
                if table not in SEALED:  # ... and every text reads back: a damaged one is refused now, not mid-command
                    self.db.execute(f"SELECT * FROM {table}").fetchall()
        if missing:
            with self.tx():
                self._seal(*missing)  # the rows as they are when the seal is written, in its own transaction

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Reads of one state of the file: a runner that writes the trade log
        while it is opened elsewhere (a status command, the dashboard) commits
        before or after these reads, never between two of them, so a digest and
        its rows are always of the same moment (a torn read would look like a
        damaged file). Outside ``tx``: it writes nothing and holds no write lock."""
        self.db.execute("BEGIN DEFERRED")
        try:
            yield
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _verify_chains(self) -> list[str]:
        """Each sealed table's rows hash to its chain in ``meta``; the tables
        with no chain yet (a file from before the digests)."""
        meta = dict(self.db.execute("SELECT key, value FROM meta WHERE key LIKE ?", (DIGEST_KEY + "%",)).fetchall())
        missing = [t for t in SEALED if DIGEST_KEY + t not in meta]
        for table in SEALED:
            if table in missing:
                continue
            if self._digest(table) != meta[DIGEST_KEY + table]:
                raise JournalError(
                    f"{self.path}: the trade log's {table} rows are not what was written (a row was changed outside "
                    "fundarb, or the file is damaged); nothing was read or written. Restore it from a backup")
        return missing

    def _digest(self, table: str) -> str:
        digest = ""
        for row in self.db.execute(f"SELECT * FROM {table} ORDER BY seq"):
            digest = _chain(digest, row)
        return digest

    def _seal(self, *tables: str) -> None:
        """Store the digest of ``tables`` as they are (inside a transaction)."""
        for table in tables:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (DIGEST_KEY + table, self._digest(table)))

    def _sealed_insert(self, table: str, cur: sqlite3.Cursor) -> bool:
        """Chain the row ``cur`` inserted (if it did) onto ``table``'s digest."""
        if cur.rowcount != 1:
            return False
        row = self.db.execute(f"SELECT * FROM {table} WHERE rowid=?", (cur.lastrowid,)).fetchone()
        prev = self.db.execute("SELECT value FROM meta WHERE key=?", (DIGEST_KEY + table,)).fetchone()
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        (DIGEST_KEY + table, _chain(prev[0] if prev else "", row)))
        return True

    def _check_integrity(self) -> None:
        """``PRAGMA quick_check``: a damaged file is refused before it is read or written."""
        try:
            problems = [r[0] for r in self.db.execute("PRAGMA quick_check(5)").fetchall()]
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: not a fundarb trade log ({exc}); if it is one, it is damaged: restore "
                               "it from a backup (`sqlite3 FILE .recover` may save its rows)") from None
        if problems != ["ok"]:
            raise JournalError(f"{self.path}: the trade log is damaged ({' '.join('; '.join(problems).split())[:300]}); nothing was "
                               "read or written. Restore it from a backup (`sqlite3 FILE .recover` may save its rows)")

    def _check_version(self) -> int:
        try:
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError:
            raise JournalError(f"{self.path}: not a fundarb trade log (no meta table)") from None
        if meta.get("kind") not in KINDS_READ:
            raise JournalError(f"{self.path}: not a fundarb trade log (kind {meta.get('kind')!r})")
        if meta.get("schema_version") not in ("1", "2", str(SCHEMA_VERSION)):
            raise JournalError(f"{self.path}: trade log schema version {meta.get('schema_version')}, "
                               f"this fundarb reads versions 1 and 2 (migrated) and {SCHEMA_VERSION}")
        return int(meta["schema_version"])

    def _migrate_v1(self) -> None:
        """Version 1 to 2 in one transaction, a copy of the old file kept first."""
        self._backup(".v1.bak")
        script = _MIGRATE_V1
        with self.tx() as db:
            for stmt in filter(str.strip, script.split(";")):
                db.execute(stmt)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('migrated_from', '1')")
            self._seal(*SEALED)
        self.migrated = True

    def _migrate_v2(self) -> None:
        """Version 2 to 3 in one transaction, a copy of the old file kept first:
        the new columns are empty for the rows already written, and the digests
        are taken again over the rows with them."""
        self._backup(".v2.bak")
        create = {name: stmt.strip() for name in ("transfers", "charges", "vetoes", "equity")
                  for stmt in SCHEMA.split(";") if stmt.strip().startswith(f"CREATE TABLE {name} (")}
        script = _MIGRATE_V2.format(kind=KIND, **create)
        with self.tx() as db:
            self._verify_chains()  # still, under the write lock: the rows carried over are what was written
            for stmt in filter(str.strip, script.split(";")):
                db.execute(stmt)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('migrated_from', '2')")
            self._seal(*SEALED)
        self.migrated = True

    def _backup(self, suffix: str) -> None:
        backup = self.path.with_name(self.path.name + suffix)
        if not backup.exists():
            target = sqlite3.connect(backup)
            try:
                self.db.backup(target)
            finally:
                target.close()

    # --- venue identity -------------------------------------------------------------
    def venues(self) -> dict[str, VenueIdentity]:
        """The venue identity of each account the trade log is bound to."""
        rows = self.db.execute("SELECT key, value FROM meta WHERE key LIKE ?", (VENUE_KEY + "%",)).fetchall()
        return {r["key"][len(VENUE_KEY):]: VenueIdentity.parse(r["value"]) for r in rows}

    def bind_venues(self, identities: Mapping[str, VenueIdentity], bind: bool = True) -> None:
        """Refuse venue identities other than those the trade log was made
        with (one line naming both); bind the accounts not yet bound (when
        ``bind`` and the identity has a key or is a paper one), giving their earlier fills and
        payments the identity."""
        bound = self.venues()
        for account, ident in identities.items():
            known = bound.get(account)
            if known is not None and not known.same_account(ident):
                raise JournalError(
                    f"{self.path} is the trade log of {known.describe()} for {account}; this run reaches "
                    f"{ident.describe()}: another venue or account; use another trade log (--journal)")
        fresh = {a: i for a, i in identities.items() if a not in bound and (i.key_digest or i.paper or i.simulated_venue)}
        if not bind or not fresh:
            return
        with self.tx() as db:
            for account, ident in fresh.items():
                db.execute("INSERT INTO meta VALUES (?, ?)", (VENUE_KEY + account, ident.key))
                db.execute("UPDATE fills SET venue_id=? WHERE account=? AND venue_id=''", (ident.key, account))
                db.execute("UPDATE funding SET venue_id=? WHERE account=? AND venue_id=''", (ident.key, account))
            self._seal(*SEALED)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; a ``tx`` inside another joins it (all or nothing).
        A failing write (a full disk, a read-only file) is a JournalError
        naming the file and the cause, with nothing of the transaction kept."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot write the trade log ({exc})") from None
        self._depth = 1
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise JournalError(f"{self.path}: cannot write the trade log ({exc}); nothing of this change "
                                   "was kept", write_failure=str(exc)) from None
            raise
        finally:
            self._depth = 0

    # --- operations -----------------------------------------------------------
    def begin_operation(self, ts: int, kind: str, config_hash: str, qty: float, plan: dict[str, Any]) -> int:
        with self.tx() as db:
            cur = db.execute("INSERT INTO operations (ts, kind, config_hash, qty, status, plan) VALUES (?,?,?,?,?,?)",
                             (ts, kind, config_hash, qty, "executing", json.dumps(plan, sort_keys=True)))
            assert cur.lastrowid is not None
            return cur.lastrowid

    def finish_operation(self, op_id: int, ts: int, status: str, result: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE operations SET status=?, result=?, ts_done=? WHERE op_id=?", (status, result, ts, op_id))

    def plan_of(self, op_id: int) -> dict[str, Any]:
        """The plan operation ``op_id`` was begun with ({} when there is none)."""
        row = self.db.execute("SELECT plan FROM operations WHERE op_id=?", (op_id,)).fetchone()
        return dict(json.loads(row[0])) if row is not None else {}

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
            return self.add_order(ts, op_id, config_hash, int(row[0]) + 1, account, exchange, symbol, leg, role,
                                  side, qty, reduce_only)

    def add_order(self, ts: int, op_id: int, config_hash: str, seq: int, account: str, exchange: str, symbol: str,
                  leg: str, role: str, side: Side, qty: float, reduce_only: bool) -> Order:
        """Write the order row of intent ``seq`` of ``config_hash`` (client id
        ``client_order_id(config_hash, seq)``); an intent sequence already used
        is refused by the table's key."""
        cid = client_order_id(config_hash, seq)
        order = Order(client_id=cid, venue=account, side=side, qty=qty, ts_created=ts, reason=role,
                      pair_id=op_id, reduce_only=reduce_only, ts_updated=ts)
        with self.tx() as db:
            db.execute("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (cid, op_id, config_hash, seq, account, exchange, symbol, leg, role, side.value, qty,
                        int(reduce_only), order.status.value, None, 0.0, 0.0, 0.0, "", ts, ts))
            self._event(db, ts, order, config_hash, "reserved")
        return order

    def max_intent_seq(self, config_hash: str) -> int:
        """The highest intent sequence of ``config_hash``'s orders (0 for none)."""
        row = self.db.execute("SELECT COALESCE(MAX(intent_seq), 0) FROM orders WHERE config_hash=?",
                              (config_hash,)).fetchone()
        return int(row[0])

    def save_order(self, order: Order, config_hash: str, detail: str = "", venue_order_id: str | None = None) -> None:
        """A change of the order's state (placed, found, ended); its filled
        size, price and fees stay what its fills say (``record_fill``)."""
        with self.tx() as db:
            db.execute("UPDATE orders SET status=?, status_reason=?, ts_updated=?, "
                       "venue_order_id=COALESCE(?, venue_order_id) WHERE client_id=?",
                       (order.status.value, order.status_reason, order.ts_updated, venue_order_id, order.client_id))
            self._event(db, order.ts_updated, order, config_hash, detail)

    @staticmethod
    def _write_order(db: sqlite3.Connection, order: Order, venue_order_id: str | None) -> None:
        db.execute("UPDATE orders SET status=?, filled_qty=?, avg_price=?, fees=?, status_reason=?, ts_updated=?, "
                   "venue_order_id=COALESCE(?, venue_order_id) WHERE client_id=?",
                   (order.status.value, order.filled_qty, order.avg_price, order.fees, order.status_reason,
                    order.ts_updated, venue_order_id, order.client_id))

    @staticmethod
    def _event(db: sqlite3.Connection, ts: int, order: Order, config_hash: str, detail: str) -> None:
        db.execute("INSERT INTO order_events (ts, client_id, config_hash, status, filled_qty, detail) "
                   "VALUES (?,?,?,?,?,?)", (ts, order.client_id, config_hash, order.status.value,
                                            order.filled_qty, detail))

    def order_row(self, client_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM orders WHERE client_id=?", (client_id,)).fetchone()

    def orders(self, op_id: int | None = None, open_only: bool = False) -> list[sqlite3.Row]:
        sql = "SELECT * FROM orders"
        args: list[object] = []
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
    def record_fill(self, order: Order, trade: VenueTrade, ts: int, config_hash: str) -> bool:
        """Journal ``trade`` of ``order`` once and, in the same transaction,
        the order row it changes: its filled size, notional and fees summed
        from the fills table. ``order`` is brought to the row (an open order
        through the core state machine; a terminal order that missed a fill
        keeps its state with corrected totals). False (nothing written) when
        the venue's (identity, order id, trade id) is already known."""
        if trade.client_id != order.client_id:
            raise ValueError(f"trade of {trade.client_id} recorded against order {order.client_id}")
        after = attrs.evolve(order)
        with self.tx() as db:
            if not self._insert_fill(db, trade, ts, config_hash):
                return False
            if after.is_open:
                after.apply_fill(Fill(trade.venue_ts, trade.account, trade.client_id, trade.side, trade.qty,
                                      trade.price, trade.price, trade.fee_quote or 0.0))
            after.filled_qty, after.notional, after.fees = self._fill_totals(db, order.client_id)
            after.ts_updated = max(after.ts_updated, ts)
            self._write_order(db, after, trade.venue_order_id)
            self._event(db, ts, after, config_hash, f"fill {trade.trade_id}")
        for field in attrs.fields(Order):  # committed: the caller's order is the row
            setattr(order, field.name, getattr(after, field.name))
        return True

    def record_external(self, trade: VenueTrade, leg: str, symbol: str, ts: int, config_hash: str) -> bool:
        """Learn a trade on the account that fundarb did not send (a
        liquidation, an auto-deleveraging, a manual trade): in one
        transaction, the fill under an ``external`` order row (client id
        ``ext:<venue order id>``, a negative intent sequence, filled by its
        fills) of an ``external`` operation, so the trade log's position is
        the venue's. False when the trade is already known."""
        cid = f"ext:{trade.venue_order_id}"
        if trade.client_id != cid:
            raise ValueError(f"an external trade is recorded under {cid}, not {trade.client_id}")
        with self.tx() as db:
            if not self._insert_fill(db, trade, ts, config_hash):
                return False
            if db.execute("SELECT 1 FROM orders WHERE client_id=?", (cid,)).fetchone() is None:
                op = db.execute("INSERT INTO operations (ts, kind, config_hash, qty, status, plan, result, ts_done) "
                                "VALUES (?,?,?,?,?,?,?,?)",
                                (ts, "external", config_hash, trade.qty, "done",
                                 json.dumps({"venue_order_id": trade.venue_order_id}, sort_keys=True),
                                 "a trade on the account that fundarb did not send, learned from the venue", ts))
                seq = db.execute("SELECT COALESCE(MIN(intent_seq), 0) FROM orders "
                                 "WHERE config_hash=? AND intent_seq < 0", (config_hash,)).fetchone()[0] - 1
                db.execute("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           (cid, op.lastrowid, config_hash, seq, trade.account, trade.exchange, symbol, leg, "external",
                            trade.side.value, 0.0, 0, OrderStatus.FILLED.value, trade.venue_order_id, 0.0, 0.0, 0.0,
                            "not sent by fundarb", ts, ts))
            qty, notional, fees = self._fill_totals(db, cid)
            db.execute("UPDATE orders SET qty=?, filled_qty=?, avg_price=?, fees=?, ts_updated=? WHERE client_id=?",
                       (qty, qty, notional / qty if qty else 0.0, fees, ts, cid))
            db.execute("INSERT INTO order_events (ts, client_id, config_hash, status, filled_qty, detail) "
                       "VALUES (?,?,?,?,?,?)", (ts, cid, config_hash, OrderStatus.FILLED.value, qty,
                                                f"external trade {trade.trade_id} learned"))
        return True

    def _insert_fill(self, db: sqlite3.Connection, trade: VenueTrade, ts: int, config_hash: str) -> bool:
        """The fills row of ``trade``, once: False when its (identity, order id, trade id) is known."""
        values = (ts, trade.venue_ts, trade.exchange, trade.trade_id, trade.account, trade.client_id, config_hash,
                  trade.side.value, trade.qty, trade.price, trade.fee, trade.fee_currency, trade.fee_quote,
                  trade.liquidity, trade.venue_id, trade.venue_order_id, trade.mid)
        cur = db.execute(f"INSERT OR IGNORE INTO fills ({', '.join(FILL_COLUMNS)}) "
                         f"VALUES ({','.join('?' * len(FILL_COLUMNS))})", values)
        return self._sealed_insert("fills", cur)

    @staticmethod
    def _fill_totals(db: sqlite3.Connection, client_id: str) -> tuple[float, float, float]:
        """(BTC, notional, quote fees) of an order's fills: what its row says."""
        qty, notional, fees = db.execute(
            "SELECT COALESCE(SUM(qty), 0), COALESCE(SUM(qty * price), 0), COALESCE(SUM(fee_quote), 0) "
            "FROM fills WHERE client_id=?", (client_id,)).fetchone()
        return float(qty), float(notional), float(fees)

    def last_fill_seq(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM fills").fetchone()[0])

    def external_fills_after(self, seq: int) -> list[sqlite3.Row]:
        """Fills of trades fundarb did not send (``ext:`` orders) recorded after row ``seq``."""
        return self.db.execute("SELECT * FROM fills WHERE seq > ? AND client_id LIKE 'ext:%' ORDER BY seq",
                               (seq,)).fetchall()

    def fills(self, client_id: str | None = None) -> list[sqlite3.Row]:
        if client_id is None:
            return self.db.execute("SELECT * FROM fills ORDER BY seq").fetchall()
        return self.db.execute("SELECT * FROM fills WHERE client_id=? ORDER BY seq", (client_id,)).fetchall()

    def add_funding(self, ts: int, venue_ts: int, account: str, symbol: str, config_hash: str, amount: float,
                    rate: float | None, payment_id: str, venue_id: str = "", qty: float | None = None,
                    mark: float | None = None, mark_source: str | None = None) -> bool:
        """A funding payment once (False when its payment id is known); the
        position and mark it was paid on when known (the simulator's)."""
        with self.tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO funding (ts, venue_ts, account, symbol, config_hash, amount, "
                             "rate, payment_id, venue_id, qty, mark, mark_source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                             (ts, venue_ts, account, symbol, config_hash, amount, rate, payment_id, venue_id, qty,
                              mark, mark_source))
            return self._sealed_insert("funding", cur)

    # --- what the engine records besides orders, fills and funding -----------------
    def add_transfer(self, ts: int, config_hash: str, transfer_id: str, from_account: str, to_account: str,
                     amount: float, fee: float, status: str) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO transfers (ts, config_hash, transfer_id, from_account, to_account, amount, fee, "
                       "status) VALUES (?,?,?,?,?,?,?,?)",
                       (ts, config_hash, transfer_id, from_account, to_account, amount, fee, status))

    def add_charge(self, ts: int, config_hash: str, account: str, amount: float, kind: str) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO charges (ts, config_hash, account, amount, kind) VALUES (?,?,?,?,?)",
                       (ts, config_hash, account, amount, kind))

    def add_veto(self, ts: int, config_hash: str, account: str, side: str, qty: float, reason: str, why: str) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO vetoes (ts, config_hash, account, side, qty, reason, why) VALUES (?,?,?,?,?,?,?)",
                       (ts, config_hash, account, side, qty, reason, why))

    def add_equity(self, rows: Iterable[Sequence[float | int | None]]) -> None:
        """Hourly marks of the engine's curve, columns ``EQUITY_COLUMNS``."""
        with self.tx() as db:
            db.executemany(f"INSERT INTO equity VALUES ({', '.join('?' * len(EQUITY_COLUMNS))})", rows)

    def set_meta(self, items: Mapping[str, str]) -> None:
        """Facts about the run that wrote the trade log (``source``, config name, data window, ...)."""
        reserved = [k for k in items if k in ("schema_version", "kind") or k.startswith((VENUE_KEY, DIGEST_KEY))]
        if reserved:
            raise ValueError(f"meta keys {reserved} are the trade log's own")
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", sorted(items.items()))

    def position(self, account: str, base: str = "BTC") -> float:
        """Net BTC the journal's fills hold on ``account``: buys less fees
        charged in BTC, less sells (a spot fee in the base asset is BTC not held)."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(CASE side WHEN 'buy' THEN qty ELSE -qty END), 0), "
            "COALESCE(SUM(CASE WHEN fee_currency=? THEN fee ELSE 0 END), 0) FROM fills WHERE account=?",
            (base, account)).fetchone()
        return round(float(row[0]) - float(row[1]), 12) + 0.0  # sums of decimal lots: drop float dust (and -0.0)

    def units(self, account: str) -> float:
        """Net size the journal's fills hold on ``account`` in the venue's own
        unit (an inverse perp's contracts), fees not counted."""
        row = self.db.execute("SELECT COALESCE(SUM(CASE side WHEN 'buy' THEN qty ELSE -qty END), 0) FROM fills "
                              "WHERE account=?", (account,)).fetchone()
        return round(float(row[0]), 12) + 0.0

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
        """Store an alert; ``outcome`` says what became of it (``fundarb.live.alerts``:
        sent, failed, deduplicated, rate_limited, paused, no_channel; recorded:
        not offered to a channel)."""
        message = scrub(message)  # whatever raised it, no credential is kept in the trade log
        with self.tx() as db:
            db.execute("INSERT INTO alerts (ts, kind, severity, config_hash, message, key, outcome) "
                       "VALUES (?,?,?,?,?,?,?)", (ts, kind, severity, config_hash, message, key or kind, outcome))

    def last_seq(self, table: str) -> int:
        """The row number of ``table``'s last row (0 when empty)."""
        return int(self.db.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {self._table(table)}").fetchone()[0])

    def rows(self, table: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(f"SELECT * FROM {self._table(table)} ORDER BY rowid")]

    def count(self, table: str) -> int:
        return int(self.db.execute(f"SELECT COUNT(*) FROM {self._table(table)}").fetchone()[0])

    @staticmethod
    def _table(table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"no table {table!r} in the trade log")
        return table


def _create(path: Path) -> None:
    """A new trade log at ``path``, whole or not at all (``create_whole``)."""
    create_whole(path, SCHEMA, [("schema_version", str(SCHEMA_VERSION)), ("kind", KIND)]
                 + [(DIGEST_KEY + t, "") for t in SEALED])


def last_step(journal: Journal) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """What a paper trade log says of its runner's last step: the simulator's
    accounts by name, and the runner's last heartbeat (empty when none)."""
    accounts = json.loads(journal.get_state(PAPER_ACCOUNTS_KEY) or "{}").get("accounts", {})
    return accounts, json.loads(journal.get_state(HEARTBEAT_KEY) or "{}")
