"""`fundarb trade rotate` of a perp/perp carry against the loopback emulator:
the pair held is closed (paired), then the new pair opened, each journaled;
every account name binds to its venue identity; funding rows per account
match what each venue paid; a process stopped between the close and the
open leaves a flat old pair and no new one, which the next start says and
never opens twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from fundarb.cli.main import app
from fundarb.config import project_file
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import PERP_PERP_START, assert_agree_perp_perp, fund_perp_perp, said, venue_cli

pytestmark = pytest.mark.usefixtures("hang_guard")
CONFIG = project_file(Path("sims") / "perp_perp.toml")
ROTATE = ("trade", "rotate", "--long", "binanceusdm", "--short", "bybit")


@pytest.fixture
def venues():
    """The emulator at 00:30 on 2024-03-04: Binance USD-M pays about 11% APR more than Bybit; by the
    08:00 settlement Bybit pays about 23% more."""
    with running_emulator(start=PERP_PERP_START) as server:
        yield server


class Killed(BaseException):
    """The process dies here: nothing after it runs (not an error any handler takes)."""


def cli(server, journal, *args):
    return venue_cli(app, server, journal, CONFIG, *args)


def orders(server) -> int:
    return sum(len(server.accounts.all_orders(v, "perp")) for v in ("bybit", "binanceusdm"))


def open_first_pair(server, journal) -> None:
    fund_perp_perp(server)
    opened = cli(server, journal, "trade", "open", "--size", "0.01", "--yes")
    assert opened.exit_code == 0, opened.output
    server.advance_hours(8)  # across the 08:00 settlement: both legs are paid


def test_a_rotation_flips_the_pair_and_each_accounts_funding_is_its_venues(venues, tmp_path):
    journal = tmp_path / "trades.sqlite"
    open_first_pair(venues, journal)
    dry = cli(venues, journal, *ROTATE, "--dry-run")
    assert dry.exit_code == 0 and "dry run: nothing was sent" in dry.output, dry.output
    assert orders(venues) == 2
    rotated = cli(venues, journal, *ROTATE, "--yes")
    assert rotated.exit_code == 0, rotated.output
    text = said(rotated)
    assert "rotation: long bybit / short binanceusdm to long binanceusdm / short bybit" in text
    assert "operation 3: close -> done" in text and "operation 4: open -> done" in text
    assert "the pair held is now long binanceusdm / short bybit" in text
    assert "rotation 2: done" in text
    # sized from what the venues held of the pair before: 0.01 BTC a leg
    assert "then the open of long binanceusdm / short bybit, 0.01 BTC a leg (the venues hold 0.01" in text
    assert venues.accounts.position("binanceusdm").qty == pytest.approx(0.01)
    assert venues.accounts.position("bybit").qty == pytest.approx(-0.01)
    j = assert_agree_perp_perp(venues, journal)
    # the new account names are bound to the same venue accounts, not refused as others
    bound = {a: i.key for a, i in j.venues().items()}
    assert set(bound) == {"bybit:long", "binanceusdm:perp", "binanceusdm:long", "bybit:perp"}
    assert bound["bybit:long"] == bound["bybit:perp"] and bound["binanceusdm:perp"] == bound["binanceusdm:long"]
    (rotation,) = [o for o in j.operations() if o["kind"] == "rotate"]
    assert rotation["status"] == "done" and rotation["op_id"] == 2
    assert [(o["kind"], o["status"]) for o in j.operations()] == [
        ("open", "done"), ("rotate", "done"), ("close", "done"), ("open", "done")]
    j.close()

    again = cli(venues, journal, *ROTATE, "--yes")  # already there: nothing is sent
    assert again.exit_code == 0 and "already long binanceusdm / short bybit" in said(again), again.output
    assert orders(venues) == 6
    venues.advance_hours(8)  # across the 16:00 settlement, on the new pair
    shown = cli(venues, journal, "positions")
    assert shown.exit_code == 0, shown.output
    assert "long binanceusdm:long, short bybit:perp" in said(shown)
    closed = cli(venues, journal, "trade", "close", "--yes")  # the config's commands act on the pair held
    assert closed.exit_code == 0, closed.output
    assert "long binanceusdm:long: venue +0 BTC" in said(closed)
    j = assert_agree_perp_perp(venues, journal)
    assert venues.accounts.position("binanceusdm").qty == 0 and venues.accounts.position("bybit").qty == 0
    paid = {(f["account"], f["venue_ts"] // 1_000_000): f["amount"] for f in j.rows("funding")}
    first, second = (int(venues_ms) for venues_ms in (1709539200000, 1709568000000))  # 08:00 and 16:00
    expected = {}
    for venue, (before, after) in (("bybit", ("bybit:long", "bybit:perp")),
                                   ("binanceusdm", ("binanceusdm:perp", "binanceusdm:long"))):
        for f in venues.accounts.funding_list(venue):
            expected[(before if f.time_ms == first else after, f.time_ms)] = pytest.approx(f.amount)
    assert paid == expected and {t for _, t in paid} == {first, second}
    # the long paid its venue, the short was paid, on both pairs
    assert paid[("bybit:long", first)] < 0 < paid[("binanceusdm:perp", first)]
    assert paid[("binanceusdm:long", second)] < 0 < paid[("bybit:perp", second)]
    # each close reduce-only on both legs
    assert all(o["reduce_only"] for o in j.rows("orders") if o["role"] == "exit")


def test_an_unknown_or_repeated_venue_is_refused_before_anything_is_asked(venues, tmp_path):
    journal = tmp_path / "trades.sqlite"
    unknown = cli(venues, journal, "trade", "rotate", "--long", "okx", "--short", "bybit", "--yes")
    assert unknown.exit_code == 2 and "--long okx is not a venue of config perp_perp (its venues: bybit, " \
                                      "binanceusdm)" in said(unknown)
    same = cli(venues, journal, "trade", "rotate", "--long", "bybit", "--short", "bybit", "--yes")
    assert same.exit_code == 2 and "--long and --short name one venue (bybit)" in said(same)
    assert len(venues.log) == 0 and not journal.exists()


@pytest.mark.parametrize("where", ["before the pair held changed", "before the open was sent"])
def test_stopped_between_the_close_and_the_open_the_next_start_says_so_and_opens_nothing(venues, tmp_path,
                                                                                          monkeypatch, where):
    import fundarb.cli.trade as trade
    import fundarb.live.execution.rotation as rotation

    journal = tmp_path / "trades.sqlite"
    open_first_pair(venues, journal)

    def die(*args, **kwargs):
        raise Killed(where)

    monkeypatch.setattr(*((rotation, "set_held", die) if where.startswith("before the pair")
                          else (trade, "_set_venue_leverage", die)))
    with pytest.raises(Killed):
        cli(venues, journal, *ROTATE, "--yes")
    monkeypatch.undo()
    assert orders(venues) == 4  # the first open and the close; nothing of the new pair
    assert venues.accounts.position("bybit").qty == 0 and venues.accounts.position("binanceusdm").qty == 0

    start = cli(venues, journal, "reconcile")
    assert start.exit_code == 0, start.output
    text = said(start)
    assert "rotation 2: interrupted; stopped after its close (operation 3)" in text
    assert "the pair held before (long bybit / short binanceusdm) is flat" in text
    assert "recovery opens nothing" in text
    j = assert_agree_perp_perp(venues, journal)
    assert [(o["kind"], o["status"]) for o in j.rows("operations")] == [
        ("open", "done"), ("rotate", "interrupted"), ("close", "done")]
    assert any(a["kind"] == "recovery" and "rotation 2" in a["message"] for a in j.rows("alerts"))
    assert j.blocked() is None
    j.close()

    again = cli(venues, journal, "reconcile")  # a second start: nothing more to finish, nothing sent
    assert again.exit_code == 0 and "rotation 2" not in said(again), again.output
    rerun = cli(venues, journal, *ROTATE, "--yes")  # nothing held to size the new pair from: it is not guessed
    assert rerun.exit_code == 0 and "holds nothing" in said(rerun) and "--size" in said(rerun), rerun.output
    assert orders(venues) == 4
    if where == "before the pair held changed":  # the trade log still holds the old pair, flat
        opened = cli(venues, journal, *ROTATE, "--size", "0.01", "--yes")
        assert opened.exit_code == 0, opened.output
        text = said(opened)
        assert "operation 5: open -> done" in text and "first the close" not in text
        assert "rotation 4: done (long bybit / short binanceusdm held nothing, long binanceusdm / short bybit " \
               "opened by operation 5)" in text
    else:  # it holds the new pair, flat: that is an open, not a rotation
        told = cli(venues, journal, *ROTATE, "--size", "0.01", "--yes")
        assert told.exit_code == 0 and "already and holds nothing" in said(told), told.output
        assert orders(venues) == 4
        opened = cli(venues, journal, "trade", "open", "--size", "0.01", "--yes")
        assert opened.exit_code == 0 and "operation 4: open -> done" in said(opened), opened.output
    assert orders(venues) == 6  # the new pair, once
    assert venues.accounts.position("binanceusdm").qty == pytest.approx(0.01)
    assert venues.accounts.position("bybit").qty == pytest.approx(-0.01)
    assert_agree_perp_perp(venues, journal).close()


def test_an_open_cut_short_by_timeouts_leaves_the_rotation_to_the_recovery_that_finishes_both(venues, tmp_path,
                                                                                            monkeypatch):
    import fundarb.cli.trade as trade

    config = tmp_path / "perp_perp.toml"  # the shipped config with a short request timeout
    config.write_text(CONFIG.read_text() + "\n[live]\nrequest_timeout_seconds = 0.4\n")
    journal = tmp_path / "trades.sqlite"
    fund_perp_perp(venues)
    assert venue_cli(app, venues, journal, config, "trade", "open", "--size", "0.01", "--yes").exit_code == 0
    venues.advance_hours(8)
    leverage = trade._set_venue_leverage

    async def then_the_network_fails(session):  # the open's last step before its orders
        await leverage(session)
        # the new long's order is placed but its answer never comes, and every look-up of it times out
        venues.faults.add("timeout_after_place", venue="binanceusdm", delay_s=1.0)
        venues.faults.add("timeout", venue="binanceusdm", path="/fapi/v1/order", times=None, delay_s=0.8)

    monkeypatch.setattr(trade, "_set_venue_leverage", then_the_network_fails)
    cut = venue_cli(app, venues, journal, config, *ROTATE, "--yes")
    monkeypatch.undo()
    venues.faults.clear()  # the network is back
    assert cut.exit_code == 1, cut.output
    assert "rotation 2 waits for operation 4 (open)" in said(cut)
    recovered = venue_cli(app, venues, journal, config, "reconcile")
    assert recovered.exit_code == 0, recovered.output
    text = said(recovered)
    assert "recovering operation 4 (open)" in text and "rotation 2: done" in text
    j = assert_agree_perp_perp(venues, journal)
    assert [(o["kind"], o["status"]) for o in j.rows("operations")] == [
        ("open", "done"), ("rotate", "done"), ("close", "done"), ("open", "done")]
    assert len(venues.accounts.all_orders("binanceusdm", "perp")) == 3  # the open's long found, never sent twice
    assert venues.accounts.position("binanceusdm").qty == pytest.approx(0.01)
    assert venues.accounts.position("bybit").qty == pytest.approx(-0.01)
    j.close()
