"""The live journal: one WAL SQLite file, written ahead, read back the same."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fundarb.live.journal as journal_module
from fundarb.core.model import Fill, Side
from fundarb.core.orders import Order, OrderStatus, client_order_id
from fundarb.live.identity import VenueIdentity
from fundarb.live.journal import Journal, JournalError, VenueTrade

H1 = hashlib.sha256(b"config one").hexdigest()
H2 = hashlib.sha256(b"config two").hexdigest()
SPOT = "binance:spot"
PERP = "binanceusdm:perp"
OPEN_STATUSES = {"new", "submitted", "accepted", "partially_filled", "cancel_pending"}


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "state" / "trade_log.sqlite")
    yield j
    j.close()


def reserve(j: Journal, op_id: int, config_hash: str = H1, side: Side = Side.BUY, qty: float = 0.01,
            ts: int = 100, account: str = SPOT) -> Order:
    return j.reserve_order(ts, op_id, config_hash, account, account.split(":")[0], "BTC/USDT", "spot", "entry",
                           side, qty, reduce_only=False)


def op(j: Journal, config_hash: str = H1) -> int:
    return j.begin_operation(1, "open", config_hash, 0.01, {"qty": 0.01})


def venue_id(exchange: str, host: str = "api.example", key: str = "k1") -> str:
    return VenueIdentity(exchange, "mainnet", host, hashlib.sha256(key.encode()).hexdigest()[:16]).key


def sent(j: Journal, order: Order) -> Order:
    order.transition(OrderStatus.SUBMITTED, order.ts_created)
    j.save_order(order, H1, "sending")
    return order


def _order_for(j: Journal, account: str, side: Side, client_id: str | None = None) -> Order:
    """One roomy order per (account, side) of the journal, reserved on first use."""
    cache = j.__dict__.setdefault("_test_orders", {})
    key = (account, side, client_id)
    if key not in cache:
        cache[key] = sent(j, reserve(j, op(j), side=side, qty=1000.0, account=account))
    return cache[key]


def fill(j: Journal, trade_id: str, side: Side = Side.BUY, qty: float = 0.01, fee: float = 0.0,
         fee_currency: str = "USDT", account: str = SPOT, exchange: str = "binance", order_id: str = "O1",
         vid: str | None = None) -> bool:
    order = _order_for(j, account, side)
    trade = VenueTrade(4, venue_id(exchange) if vid is None else vid, exchange, order_id, trade_id, account, order.client_id, side,
                       qty, 60_000.0, fee, fee_currency, None, "taker")
    return j.record_fill(order, trade, 5, H1)


# --- the file --------------------------------------------------------------------------

def test_a_commit_is_in_the_database_file_itself(journal):
    """A rollback journal, not WAL: a committed fill never lives only in a
    -wal file that a crash or a copy could cut short."""
    assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    for n in range(40):
        assert fill(journal, f"T{n}")
    assert not Path(str(journal.path) + "-wal").exists()
    copy = journal.path.with_name("copy.sqlite")
    copy.write_bytes(journal.path.read_bytes())  # the file alone, as a backup tool takes it
    assert len(Journal(copy).fills()) == 40


def test_a_trade_log_is_created_private_and_whole(tmp_path):
    j = Journal(tmp_path / "state" / "t.sqlite")
    j.close()
    assert (j.path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in j.path.parent.iterdir()] == ["t.sqlite"]  # no half-made file left beside it


def test_an_empty_file_is_refused_not_reinitialised(tmp_path):
    path = tmp_path / "t.sqlite"
    path.write_bytes(b"")
    with pytest.raises(JournalError, match="empty file.*backup"):
        Journal(path)
    assert path.read_bytes() == b""  # left as it was


def test_a_damaged_file_is_refused_with_the_way_to_recover(tmp_path):
    path = tmp_path / "t.sqlite"
    j = Journal(path)
    for n in range(200):
        fill(j, f"T{n}")
    j.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[2 * page:3 * page] = bytes(page)  # one page zeroed
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(JournalError, match="damaged|not a usable") as exc:
        Journal(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)
    assert path.read_bytes() == before


def test_a_write_that_fails_names_the_file_and_keeps_nothing(journal):
    fill(journal, "T1")
    journal.db.execute("PRAGMA max_page_count=1")  # stands in for a full disk: every growth fails
    with pytest.raises(JournalError, match=f"{journal.path}.*cannot write"):
        with journal.tx() as db:
            for n in range(500):
                db.execute("INSERT INTO state VALUES (?, ?, ?)", (f"k{n}", "x" * 1000, 1))
    assert journal.get_state("k0") is None
    assert len(journal.fills()) == 1


def test_a_transaction_inside_another_joins_it(journal):
    with pytest.raises(RuntimeError):
        with journal.tx():
            journal.set_state("a", "1", 1)
            with journal.tx():
                journal.set_state("b", "2", 1)
            raise RuntimeError("the outer block fails")
    assert journal.get_state("a") is None and journal.get_state("b") is None
    with journal.tx():
        journal.set_state("a", "1", 1)
        journal.set_state("b", "2", 1)
    assert journal.get_state("a") == "1" and journal.get_state("b") == "2"


def test_reopening_a_journal_keeps_its_rows(tmp_path):
    path = tmp_path / "log.sqlite"
    j = Journal(path)
    op_id = op(j)
    order = reserve(j, op_id)
    j.close()
    j = Journal(path)
    assert [r["client_id"] for r in j.orders()] == [order.client_id]
    assert [r["op_id"] for r in j.operations()] == [op_id]
    j.close()


def _set_meta(path: Path, key: str, value: str) -> None:
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key=?", (value, key))
    db.commit()
    db.close()


@pytest.mark.parametrize(("key", "value"), [("schema_version", "4"), ("kind", "someone else's log")])
def test_a_trade_log_of_another_version_or_kind_is_refused_naming_the_file(tmp_path, key, value):
    path = tmp_path / "log.sqlite"
    Journal(path).close()
    _set_meta(path, key, value)
    with pytest.raises(JournalError) as err:
        Journal(path)
    assert str(path) in str(err.value) and value in str(err.value)


def test_sqlite_file_of_another_program_is_refused_naming_the_file_and_left_byte_for_byte(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE things (x INTEGER)")
    db.execute("INSERT INTO things VALUES (1)")
    db.commit()
    db.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(JournalError, match="not a fundarb trade log") as err:
        Journal(path)
    assert str(path) in str(err.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # not even switched to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]


def test_text_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("this is not a database, just some notes\n" * 50)
    with pytest.raises(JournalError) as err:
        Journal(path)
    assert str(path) in str(err.value)


def test_rows_of_an_unknown_table_raises(journal):
    with pytest.raises(ValueError, match="nope"):
        journal.rows("nope")
    with pytest.raises(ValueError):
        journal.rows("meta")  # not one of the trade log's tables


# --- operations and orders -------------------------------------------------------------

def test_operation_records_plan_and_finish(journal):
    op_id = journal.begin_operation(10, "open", H1, 0.02, {"b": 1, "a": [1, 2]})
    assert [r["op_id"] for r in journal.operations("executing")] == [op_id]
    journal.finish_operation(op_id, 20, "done", "both legs filled")
    assert journal.operations("executing") == []
    (row,) = journal.operations("done")
    assert (row["result"], row["ts_done"], row["qty"]) == ("both legs filled", 20, 0.02)
    assert row["plan"] == '{"a": [1, 2], "b": 1}'


def test_reserve_order_writes_the_row_before_sending(journal):
    op_id = op(journal)
    order = reserve(journal, op_id, side=Side.SELL, qty=0.02, ts=123)
    row = journal.order_row(order.client_id)
    assert order.client_id == client_order_id(H1, 1)
    assert (row["status"], row["intent_seq"], row["side"], row["qty"], row["op_id"]) == ("new", 1, "sell", 0.02, op_id)
    assert [e["detail"] for e in journal.rows("order_events")] == ["reserved"]


def test_order_needs_an_existing_operation(journal):
    with pytest.raises(JournalError, match="FOREIGN KEY"):
        reserve(journal, op_id=999)


def test_save_order_writes_one_event_per_transition(journal):
    order = reserve(journal, op(journal))
    order.transition(OrderStatus.SUBMITTED, 101)
    journal.save_order(order, H1, "sent")
    order.transition(OrderStatus.ACCEPTED, 102)
    journal.save_order(order, H1, "acked", venue_order_id="V-1")
    order.apply_fill(Fill(103, SPOT, order.client_id, Side.BUY, 0.004, 60_000.0, 60_000.0, 0.1))
    journal.save_order(order, H1, "fill")
    events = journal.rows("order_events")
    assert [e["status"] for e in events] == ["new", "submitted", "accepted", "partially_filled"]
    assert [e["filled_qty"] for e in events] == [0.0, 0.0, 0.0, 0.004]
    assert journal.order_row(order.client_id)["venue_order_id"] == "V-1"  # kept when not given again
    assert journal.order_row(order.client_id)["filled_qty"] == 0.0  # only a recorded fill moves the row's size


def test_orders_open_only_excludes_terminal_statuses(journal):
    op_id = op(journal)
    by_status = {}
    for status in OrderStatus:
        order = reserve(journal, op_id)
        order.status = status
        journal.save_order(order, H1)
        by_status[status.value] = order.client_id
    open_ids = {r["client_id"] for r in journal.orders(open_only=True)}
    assert open_ids == {by_status[s] for s in OPEN_STATUSES}
    assert len(journal.orders()) == len(OrderStatus)


def test_orders_filter_by_operation(journal):
    a, b = op(journal), op(journal)
    in_a = {reserve(journal, a).client_id, reserve(journal, a).client_id}
    reserve(journal, b)
    assert {r["client_id"] for r in journal.orders(op_id=a)} == in_a


@given(st.lists(st.tuples(st.floats(0.001, 1.0), st.floats(1_000.0, 100_000.0), st.floats(0.0, 10.0)),
                min_size=1, max_size=4),
       st.sampled_from([Side.BUY, Side.SELL]), st.booleans())
@settings(max_examples=30, deadline=None)
def test_order_of_round_trips_an_order(fills, side, cancel):
    with tempfile.TemporaryDirectory() as tmp:
        j = Journal(Path(tmp) / "log.sqlite")
        op_id = op(j)
        order = j.reserve_order(7, op_id, H1, PERP, "binanceusdm", "BTC/USDT:USDT", "perp", "exit", side,
                                sum(q for q, _, _ in fills), reduce_only=True)
        order.transition(OrderStatus.SUBMITTED, 8)
        j.save_order(order, H1, "sending")
        for i, (q, price, fee) in enumerate(fills[:-1] if cancel else fills):  # fills reach the row with the fill
            j.record_fill(order, VenueTrade(9 + i, venue_id("binanceusdm"), "binanceusdm", "O1", f"T{i}", PERP,
                                            order.client_id, side, q, price, fee, "USDT", fee, "taker"), 9 + i, H1)
        if cancel:
            order.transition(OrderStatus.CANCEL_PENDING, 50)
            order.transition(OrderStatus.CANCELED, 51, "timeout")
        j.save_order(order, H1)
        back = Journal.order_of(j.order_row(order.client_id))
        j.close()
    assert (back.client_id, back.venue, back.side, back.reason, back.pair_id, back.reduce_only) == \
        (order.client_id, PERP, side, "exit", op_id, True)
    assert (back.status, back.status_reason, back.ts_created, back.ts_updated) == \
        (order.status, order.status_reason, 7, order.ts_updated)
    assert back.qty == order.qty and back.filled_qty == order.filled_qty
    assert back.avg_price == pytest.approx(order.avg_price, rel=1e-12)
    assert back.fees == order.fees


# --- client ids: unique, increasing, durable ---------------------------------------------

@given(st.lists(st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=8), min_size=1, max_size=3))
@settings(max_examples=25, deadline=None)
def test_client_ids_are_unique_and_intent_seq_increases_across_reopening(sessions):
    hashes = [hashlib.sha256(f"cfg{i}".encode()).hexdigest() for i in range(3)]
    seen: set[str] = set()
    last: dict[str, int] = defaultdict(int)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.sqlite"
        for session in sessions:  # each session: the process starts, reserves, exits
            j = Journal(path)
            op_id = op(j)
            for k in session:
                h = hashes[k]
                order = reserve(j, op_id, config_hash=h)
                seq = j.order_row(order.client_id)["intent_seq"]
                assert order.client_id not in seen
                assert seq > last[h]
                seen.add(order.client_id)
                last[h] = seq
            j.close()
        j = Journal(path)
        assert len(j.orders()) == len(seen) == sum(len(s) for s in sessions)
        j.close()


# --- fills, funding, position --------------------------------------------------------------

def test_same_trade_id_twice_records_once(journal):
    assert fill(journal, "T1") is True
    assert fill(journal, "T1", qty=0.5) is False
    assert [(r["trade_id"], r["qty"]) for r in journal.fills()] == [("T1", 0.01)]


def test_same_trade_id_on_another_exchange_is_another_fill(journal):
    assert fill(journal, "T1", exchange="binance")
    assert fill(journal, "T1", exchange="binanceusdm", account=PERP)
    assert len(journal.fills()) == 2


def test_a_venue_that_numbers_trades_afresh_has_its_fills_kept(journal):
    """A testnet, another account or a restarted venue re-uses trade ids: under
    another order id or venue identity the trade is a fill of its own."""
    assert fill(journal, "1", order_id="4000000001")
    assert fill(journal, "1", order_id="4000000007")  # the same venue, a new order numbering its trades from 1
    assert fill(journal, "1", order_id="4000000001", vid=venue_id("binance", host="testnet.example"))
    assert fill(journal, "1", order_id="4000000001", vid=venue_id("binance", key="another account"))
    assert not fill(journal, "1", order_id="4000000001")  # the very same report again
    assert len(journal.fills()) == 4


def test_fills_filter_by_client_id(journal):
    a = _order_for(journal, SPOT, Side.BUY)
    b = _order_for(journal, SPOT, Side.SELL)
    for order, tid in ((a, "A"), (b, "B")):
        journal.record_fill(order, VenueTrade(1, venue_id("binance"), "binance", "O", tid, SPOT, order.client_id,
                                              order.side, 0.1, 1.0, 0.0, "USDT", None, "taker"), 1, H1)
    assert [r["trade_id"] for r in journal.fills(b.client_id)] == ["B"]


def test_the_order_row_is_summed_from_its_fills_in_the_fills_transaction(journal):
    order = sent(journal, reserve(journal, op(journal), qty=0.03))
    vid = venue_id("binance")
    for tid, qty, price, fee in (("T1", 0.01, 60_000.0, 0.6), ("T2", 0.02, 60_300.0, 1.2)):
        assert journal.record_fill(order, VenueTrade(7, vid, "binance", "O9", tid, SPOT, order.client_id, Side.BUY,
                                                     qty, price, fee, "USDT", fee, "taker"), 8, H1)
    row = journal.order_row(order.client_id)
    assert row["status"] == "filled" and order.status is OrderStatus.FILLED
    assert row["filled_qty"] == pytest.approx(0.03) and row["fees"] == pytest.approx(1.8)
    assert row["avg_price"] == pytest.approx((0.01 * 60_000 + 0.02 * 60_300) / 0.03)
    assert row["venue_order_id"] == "O9"
    assert (order.filled_qty, order.fees) == (row["filled_qty"], row["fees"])  # the caller's order is the row


def test_a_fill_whose_order_row_cannot_be_written_is_not_written_either(journal):
    """One transaction: a failure between the fill and its order row (a full
    disk, a kill) leaves neither, so recovery learns the trade again."""
    order = sent(journal, reserve(journal, op(journal), qty=0.01))
    journal.db.execute("CREATE TRIGGER full_disk BEFORE UPDATE ON orders BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    trade = VenueTrade(7, venue_id("binance"), "binance", "O9", "T1", SPOT, order.client_id, Side.BUY, 0.01,
                       60_000.0, 0.0, "USDT", 0.0, "taker")
    with pytest.raises(JournalError, match="disk full.*nothing of this change was kept"):
        journal.record_fill(order, trade, 8, H1)
    assert journal.fills() == [] and order.filled_qty == 0 and order.status is not OrderStatus.FILLED
    journal.db.execute("DROP TRIGGER full_disk")
    assert journal.record_fill(order, trade, 9, H1)  # learned again, whole
    assert journal.order_row(order.client_id)["filled_qty"] == pytest.approx(0.01)


# --- the venue identity ------------------------------------------------------------------------

def _ident(network: str = "mainnet", host: str = "fapi.binance.com", key: str = "k1") -> VenueIdentity:
    return VenueIdentity("binanceusdm", network, host, hashlib.sha256(key.encode()).hexdigest()[:16] if key else "")


def test_a_trade_log_is_bound_to_its_first_venue_and_refuses_another_in_one_line(tmp_path):
    path = tmp_path / "log.sqlite"
    j = Journal(path)
    fill(j, "T1", account=PERP, exchange="binanceusdm", vid="")  # a fill from before the binding
    j.bind_venues({PERP: _ident()})
    assert j.venues() == {PERP: _ident()}
    assert {r["venue_id"] for r in j.fills()} == {_ident().key}  # earlier fills take the identity
    j.bind_venues({PERP: _ident()})  # the same: fine
    j.bind_venues({PERP: _ident(key="")}, bind=False)  # a look without keys at the same host: fine
    for other in (_ident("testnet", "testnet.binancefuture.com"), _ident(key="another account"),
                  _ident("loopback", "127.0.0.1:8765")):
        with pytest.raises(JournalError) as err:
            j.bind_venues({PERP: other})
        message = str(err.value)
        assert "\n" not in message and str(path) in message and other.describe() in message
        assert _ident().describe() in message and "--journal" in message
    assert j.venues() == {PERP: _ident()}
    j.close()


def test_a_look_without_keys_binds_nothing(journal):
    journal.bind_venues({PERP: _ident(key="")})
    journal.bind_venues({PERP: _ident()}, bind=False)
    assert journal.venues() == {}


V1_FILLS = """CREATE TABLE fills (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, venue_ts INTEGER NOT NULL, exchange TEXT NOT NULL,
    trade_id TEXT NOT NULL, account TEXT NOT NULL, client_id TEXT NOT NULL, config_hash TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL, fee_currency TEXT NOT NULL,
    fee_quote REAL, liquidity TEXT NOT NULL, UNIQUE (exchange, trade_id))"""
V1_FUNDING = """CREATE TABLE funding (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, venue_ts INTEGER NOT NULL, account TEXT NOT NULL,
    symbol TEXT NOT NULL, config_hash TEXT NOT NULL, amount REAL NOT NULL, rate REAL, payment_id TEXT NOT NULL,
    UNIQUE (account, payment_id))"""


def _version_1_file(path: Path) -> str:
    """A trade log as version 1 wrote it: one order with its fill and a funding payment."""
    j = Journal(path)
    order = reserve(j, op(j), qty=0.01, account=PERP)
    j.save_order(order, H1, "placed", venue_order_id="4000000001")
    j.close()
    db = sqlite3.connect(path)
    db.executescript(f"""DROP TABLE fills; DROP TABLE funding; {V1_FILLS}; {V1_FUNDING};
        INSERT INTO fills VALUES (1, 5, 4, 'binanceusdm', '300000001', '{PERP}', '{order.client_id}', '{H1}', 'buy',
                                  0.01, 60000.0, 0.24, 'USDT', 0.24, 'taker');
        INSERT INTO funding VALUES (1, 6, 6, '{PERP}', 'BTC/USDT:USDT', '{H1}', 1.5, NULL, 'P1');
        DROP TABLE transfers; DROP TABLE charges; DROP TABLE vetoes; DROP TABLE equity;
        UPDATE meta SET value='fundarb live trade log' WHERE key='kind';
        UPDATE meta SET value='1' WHERE key='schema_version';""")
    db.commit()
    db.close()
    return order.client_id


def test_a_version_1_trade_log_is_migrated_whole_with_a_copy_kept(tmp_path):
    path = tmp_path / "log.sqlite"
    cid = _version_1_file(path)
    j = Journal(path)
    assert j.migrated
    assert (tmp_path / "log.sqlite.v1.bak").is_file() and (tmp_path / "log.sqlite.v2.bak").is_file()
    meta = dict(j.db.execute("SELECT key, value FROM meta").fetchall())
    assert (meta["schema_version"], meta["kind"]) == ("3", "fundarb trade log")
    [f] = j.fills()
    assert (f["trade_id"], f["venue_order_id"], f["venue_id"], f["client_id"]) == ("300000001", "4000000001", "", cid)
    assert j.position(PERP) == pytest.approx(0.01)
    assert [r["payment_id"] for r in j.rows("funding")] == ["P1"]
    j.bind_venues({PERP: _ident()})
    assert j.fills()[0]["venue_id"] == j.rows("funding")[0]["venue_id"] == _ident().key
    j.close()
    again = Journal(path)  # version 3 now: opened as it is
    assert not again.migrated and len(again.fills()) == 1
    again.close()
    old = sqlite3.connect(tmp_path / "log.sqlite.v1.bak")
    assert old.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    old.close()


def test_a_version_2_trade_log_becomes_the_one_schema_whole_with_a_copy_kept(tmp_path):
    """Version 2 (live and paper only) to 3 (backtest, replay, paper, live):
    the rows stay as they were, the new columns are empty for them, the new
    tables are there, the money digests hold over the rows with their new
    columns, and the old file is kept beside it."""
    path = tmp_path / "log.sqlite"
    cid = _version_1_file(path)
    db = sqlite3.connect(path)  # the file as version 2 left it: its own migration of version 1, no digests yet
    db.executescript(journal_module._MIGRATE_V1 + "; DELETE FROM meta WHERE key LIKE 'digest:%'")
    db.commit()
    db.close()
    j = Journal(path)
    assert j.migrated
    meta = dict(j.db.execute("SELECT key, value FROM meta").fetchall())
    assert (meta["schema_version"], meta["kind"], meta["migrated_from"]) == ("3", "fundarb trade log", "2")
    [f] = j.fills()
    assert (f["client_id"], f["qty"], f["price"], f["mid"]) == (cid, 0.01, 60000.0, None)
    [pay] = j.rows("funding")
    assert (pay["amount"], pay["payment_id"], pay["qty"], pay["mark"], pay["mark_source"]) == (1.5, "P1", None, None, None)
    assert [j.count(t) for t in ("transfers", "charges", "vetoes", "equity")] == [0, 0, 0, 0]
    j.add_transfer(7, H1, "t1", "binance:spot", PERP, 100.0, 1.0, "arrived")
    j.close()
    again = Journal(path)  # opened as it is: columns and digests check out
    assert not again.migrated and again.count("transfers") == 1 and again.position(PERP) == pytest.approx(0.01)
    again.close()
    old = sqlite3.connect(tmp_path / "log.sqlite.v2.bak")
    assert old.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
    assert "transfers" not in {r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    old.close()


def test_a_version_2_trade_log_changed_outside_fundarb_is_refused_before_it_is_migrated(tmp_path):
    path = tmp_path / "log.sqlite"
    _version_1_file(path)
    Journal(path).close()  # now version 3 with digests; make it a sealed version 2 file again
    for backup in tmp_path.glob("*.bak"):
        backup.unlink()
    db = sqlite3.connect(path)
    db.executescript("""DROP TABLE transfers; DROP TABLE charges; DROP TABLE vetoes; DROP TABLE equity;
        ALTER TABLE fills DROP COLUMN mid; ALTER TABLE funding DROP COLUMN qty;
        ALTER TABLE funding DROP COLUMN mark; ALTER TABLE funding DROP COLUMN mark_source;
        UPDATE meta SET value='2' WHERE key='schema_version';""")
    for table in journal_module.SEALED:  # sealed as version 2 sealed its rows
        chain = ""
        for row in db.execute(f"SELECT * FROM {table} ORDER BY seq"):
            chain = journal_module._chain(chain, row)
        db.execute("UPDATE meta SET value=? WHERE key=?", (chain, journal_module.DIGEST_KEY + table))
    db.commit()
    db.close()
    sealed = path.read_bytes()
    Journal(path).close()  # a sealed version 2 file migrates
    path.write_bytes(sealed)
    for backup in tmp_path.glob("*.bak"):
        backup.unlink()
    db = sqlite3.connect(path)
    db.execute("UPDATE fills SET price = 61000.0")  # a price edited outside fundarb
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(JournalError, match="fills rows are not what was written"):
        Journal(path)
    assert path.read_bytes() == before and not (tmp_path / "log.sqlite.v2.bak").exists()


def test_funding_payment_is_recorded_once_per_account(journal):
    assert journal.add_funding(1, 1, PERP, "BTC/USDT:USDT", H1, 1.5, 0.0001, "P1", "v1")
    assert not journal.add_funding(2, 2, PERP, "BTC/USDT:USDT", H1, 9.9, 0.0001, "P1", "v1")
    assert journal.add_funding(2, 2, "other:perp", "BTC/USDT:USDT", H1, 2.0, None, "P1", "v1")
    assert journal.add_funding(2, 2, PERP, "BTC/USDT:USDT", H1, 3.0, None, "P1", "testnet")
    assert [r["amount"] for r in journal.rows("funding")] == [1.5, 2.0, 3.0]


fill_events = st.lists(
    st.tuples(st.sampled_from(["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8"]),
              st.sampled_from([SPOT, PERP]),
              st.sampled_from([Side.BUY, Side.SELL]),
              st.floats(0.0001, 2.0),
              st.floats(0.0, 0.01),
              st.sampled_from(["BTC", "USDT", "BNB"])),
    max_size=20)


@given(fill_events)
@settings(max_examples=40, deadline=None)
def test_position_is_buys_less_sells_less_btc_fees_of_distinct_fills(events):
    first: dict[tuple[str, str], tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        j = Journal(Path(tmp) / "log.sqlite")
        for trade_id, account, side, qty, fee, ccy in events:
            exchange = account.split(":")[0]
            recorded = fill(j, trade_id, side, qty, fee, ccy, account, exchange)
            assert recorded == ((exchange, trade_id) not in first)
            first.setdefault((exchange, trade_id), (account, side, qty, fee, ccy))
        got = {acct: j.position(acct) for acct in (SPOT, PERP)}
        j.close()
    for acct in (SPOT, PERP):
        mine = [f for f in first.values() if f[0] == acct]
        buys = sum(q for _, s, q, _, _ in mine if s is Side.BUY)
        sells = sum(q for _, s, q, _, _ in mine if s is Side.SELL)
        btc_fees = sum(fee for *_, fee, ccy in mine if ccy == "BTC")
        assert got[acct] == pytest.approx(buys - sells - btc_fees, abs=1e-9)


def test_position_of_a_spot_buy_with_a_btc_fee(journal):
    fill(journal, "T1", qty=0.01, fee=0.00001, fee_currency="BTC")
    assert journal.position(SPOT) == pytest.approx(0.00999)
    assert journal.position(PERP) == 0.0


# --- state -------------------------------------------------------------------------------

def test_entries_are_not_blocked_in_a_fresh_journal(journal):
    assert journal.blocked() is None


def test_blocked_reads_the_entries_blocked_state_and_survives_reopening(tmp_path):
    path = tmp_path / "log.sqlite"
    j = Journal(path)
    j.set_state("entries_blocked", "naked leg on binanceusdm:perp", 5)
    j.close()
    j = Journal(path)
    assert j.blocked() == "naked leg on binanceusdm:perp"
    j.set_state("entries_blocked", None, 6)
    assert j.blocked() is None
    assert j.rows("state") == []
    j.close()


def test_set_state_replaces_the_value(journal):
    journal.set_state("k", "one", 1)
    journal.set_state("k", "two", 2)
    assert journal.get_state("k") == "two"
    assert journal.rows("state") == [{"key": "k", "value": "two", "ts": 2}]


def test_reconciliations_and_alerts_are_logged(journal):
    journal.add_reconciliation(1, "start", H1, False, "spot 0.01 vs journal 0")
    journal.add_alert(2, "naked_leg", "critical", H1, "perp filled, spot refused")
    (rec,) = journal.rows("reconciliations")
    (alert,) = journal.rows("alerts")
    assert (rec["ok"], rec["trigger"]) == (0, "start")
    assert (alert["severity"], alert["message"]) == ("critical", "perp filled, spot refused")


def test_a_failed_transaction_leaves_nothing(journal):
    with pytest.raises(RuntimeError), journal.tx() as db:
        db.execute("INSERT INTO state VALUES ('k', 'v', 1)")
        raise RuntimeError("killed mid-way")
    assert journal.get_state("k") is None


def test_a_database_without_tables_is_refused_not_taken_for_a_new_trade_log(tmp_path):
    """fundarb creates a trade log whole (linked in under its name once its
    schema is written), so a SQLite file without tables is somebody else's."""
    path = tmp_path / "log.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    with pytest.raises(JournalError, match="not a fundarb trade log"):
        Journal(path)


def test_two_processes_creating_one_trade_log_end_with_one(tmp_path):
    path = tmp_path / "log.sqlite"
    a, b = Journal(path), Journal(path)
    assert a.reserve_order(1, a.begin_operation(1, "open", H1, 1.0, {}), H1, SPOT, "binance", "BTC/USDT", "spot",
                           "open", Side.BUY, 1.0, False)
    assert len(b.orders()) == 1
    a.close()
    b.close()


def test_a_trade_fundarb_did_not_send_is_learned_under_an_external_order(journal):
    """A liquidation in two trades: one external operation and order row,
    filled by its fills, in the position; each trade once."""
    vid = venue_id("binanceusdm")
    for tid, qty in (("L1", 0.6), ("L2", 0.4)):
        trade = VenueTrade(9, vid, "binanceusdm", "777", tid, PERP, "ext:777", Side.BUY, qty, 70_000.0, 14.0, "USDT",
                           14.0, "taker")
        assert journal.record_external(trade, "perp", "BTC/USDT:USDT", 10, H1)
        assert not journal.record_external(trade, "perp", "BTC/USDT:USDT", 11, H1)  # known: once
    [op] = [o for o in journal.operations() if o["kind"] == "external"]
    [row] = [r for r in journal.orders() if r["client_id"] == "ext:777"]
    assert (row["role"], row["status"], row["op_id"], row["venue_order_id"]) == ("external", "filled", op["op_id"], "777")
    assert row["qty"] == row["filled_qty"] == pytest.approx(1.0) and row["fees"] == pytest.approx(28.0)
    assert row["intent_seq"] < 0  # never one of fundarb's own client id sequence
    assert journal.position(PERP) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="ext:777"):
        journal.record_external(attrs.evolve(trade, client_id="fa1-1"), "perp", "BTC/USDT:USDT", 12, H1)


# --- rows changed in place --------------------------------------------------------------

def _sealed_log(path: Path) -> tuple[list, list]:
    j = Journal(path)
    for n in range(30):
        fill(j, f"T{n}", qty=0.001 * (n + 1))
    for n in range(10):
        j.add_funding(n, n * 8 * 3600 * 10**9, PERP, "BTC/USDT:USDT", H1, 1.5 + n, 0.0001, f"P{n}", "vid")
    rows = (j.rows("fills"), j.rows("funding"))
    j.close()
    return rows


def test_a_size_changed_in_place_is_refused(tmp_path):
    """A damaged byte inside a row's value passes SQLite's own check; the
    digest chained with every fill and funding row catches it."""
    import struct

    path = tmp_path / "t.sqlite"
    _sealed_log(path)
    data = bytearray(path.read_bytes())
    value = struct.pack(">d", 0.001 * 3)
    spots = [i for i in range(len(data)) if data.startswith(value, i)]
    assert spots
    for at in spots:  # the fill's size (and any copy of it elsewhere) now reads another size
        data[at + 1] ^= 0x10
    path.write_bytes(bytes(data))
    assert sqlite3.connect(path).execute("PRAGMA quick_check").fetchone()[0] == "ok"  # SQLite sees nothing
    with pytest.raises(JournalError, match="fills rows are not what was written"):
        Journal(path)


_SEALED_LOG: dict[str, tuple] = {}


def _sealed_bytes() -> tuple[bytes, list, list]:
    """One sealed trade log's bytes and rows, made once for the property below."""
    if not _SEALED_LOG:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "t.sqlite"
            fills, funding = _sealed_log(path)
            _SEALED_LOG["log"] = (path.read_bytes(), fills, funding)
    return _SEALED_LOG["log"]


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_any_damaged_byte_is_refused_or_changes_no_fill_and_no_payment(data):
    """Never silently wrong: one byte anywhere in the file either makes the
    trade log refuse to open (one line naming it) or leaves every fill and
    funding payment as written."""
    clean, fills, funding = _sealed_bytes()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.sqlite"
        raw = bytearray(clean)
        at = data.draw(st.integers(0, len(raw) - 1), label="offset")
        raw[at] ^= data.draw(st.integers(1, 255), label="xor")
        path.write_bytes(bytes(raw))
        try:
            j = Journal(path)
        except JournalError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
        try:
            assert j.rows("fills") == fills and j.rows("funding") == funding
        finally:
            j.close()


def test_a_log_from_before_the_digests_is_sealed_as_it_is(tmp_path):
    path = tmp_path / "t.sqlite"
    fills, _ = _sealed_log(path)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM meta WHERE key LIKE 'digest:%'")
    db.commit()
    db.close()
    j = Journal(path)
    assert j.rows("fills") == fills
    j.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE fills SET qty = 9 WHERE seq = 1")  # now a change is caught
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="not what was written"):
        Journal(path)


def _append_funding(path: str, count: int, started) -> None:
    """Another process writing the trade log as a runner does: one sealed row a transaction."""
    j = Journal(path)
    started.set()
    for i in range(count):
        j.add_funding(i, i, "perp", "BTC/USDT:USDT", H1, 0.01, 1e-4, f"pay-{i}")
    j.close()


def test_opening_a_trade_log_another_process_is_writing_reads_one_state_of_it(tmp_path):
    """A status command, the dashboard or a test opens the trade log while the
    runner writes it: the open-time checks (the digests over the rows) read
    the file as of one moment, so a row committed between reading the digest
    and reading the rows is not taken for a damaged file."""
    import multiprocessing

    path = tmp_path / "log.sqlite"
    Journal(path).close()
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    writer = ctx.Process(target=_append_funding, args=(str(path), 1000, started))
    writer.start()
    try:
        assert started.wait(60)
        opened = 0
        while writer.is_alive() and opened < 2000:
            Journal(path).close()  # raises JournalError on a torn read
            opened += 1
    finally:
        writer.join(60)
    assert writer.exitcode == 0
    j = Journal(path)
    assert j.count("funding") == 1000
    j.close()
