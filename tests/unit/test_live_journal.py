"""The live journal: one WAL SQLite file, written ahead, read back the same."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core.model import Fill, Side
from fundarb.core.orders import Order, OrderStatus, client_order_id
from fundarb.venues.live.journal import Journal, JournalError

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


def fill(j: Journal, trade_id: str, side: Side = Side.BUY, qty: float = 0.01, fee: float = 0.0,
         fee_currency: str = "USDT", account: str = SPOT, exchange: str = "binance") -> bool:
    return j.add_fill(5, 4, exchange, trade_id, account, "cid", H1, side, qty, 60_000.0, fee, fee_currency,
                      None, "taker")


# --- the file --------------------------------------------------------------------------

def test_journal_is_in_wal_mode(journal):
    assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other = sqlite3.connect(journal.path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent, seen by other readers
    other.close()


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


def test_empty_file_is_initialised(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.touch()
    j = Journal(path)
    assert j.orders() == []
    j.close()


def _set_meta(path: Path, key: str, value: str) -> None:
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key=?", (value, key))
    db.commit()
    db.close()


@pytest.mark.parametrize(("key", "value"), [("schema_version", "2"), ("kind", "someone else's log")])
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
    with pytest.raises(JournalError, match="not a fundarb live trade log") as err:
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
    with pytest.raises(sqlite3.IntegrityError):
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
        for i, (q, price, fee) in enumerate(fills[:-1] if cancel else fills):
            order.apply_fill(Fill(9 + i, PERP, order.client_id, side, q, price, price, fee))
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


def test_fills_filter_by_client_id(journal):
    journal.add_fill(1, 1, "binance", "A", SPOT, "c-a", H1, Side.BUY, 0.1, 1.0, 0.0, "USDT", None, "taker")
    journal.add_fill(1, 1, "binance", "B", SPOT, "c-b", H1, Side.BUY, 0.2, 1.0, 0.0, "USDT", None, "taker")
    assert [r["trade_id"] for r in journal.fills("c-b")] == ["B"]


def test_funding_payment_is_recorded_once_per_account(journal):
    assert journal.add_funding(1, 1, PERP, "BTC/USDT:USDT", H1, 1.5, 0.0001, "P1")
    assert not journal.add_funding(2, 2, PERP, "BTC/USDT:USDT", H1, 9.9, 0.0001, "P1")
    assert journal.add_funding(2, 2, "other:perp", "BTC/USDT:USDT", H1, 2.0, None, "P1")
    assert [r["amount"] for r in journal.rows("funding")] == [1.5, 2.0]


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
            recorded = j.add_fill(1, 1, exchange, trade_id, account, "cid", H1, side, qty, 60_000.0, fee, ccy,
                                  None, "taker")
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
