"""The kill sweep: `fundarb trade open|close` killed (SIGKILL) right after
every commit of its trade log, in five situations, then recovered, against
the loopback emulator.

The kill is deterministic: the trading process is a fork of the test whose
``Journal.tx`` kills it the instant its N-th transaction has committed, for
every N the run makes (counted by a run that is not killed). Situations: a
plain open; a close of an open carry; an open whose perp order fills half
(the leg is completed); an open whose spot order the venue refuses (the perp
is unwound); an open whose perp placement answer is lost and that lands
anyway (a late arrival, found by its client id); a coin-margined open
and close (Binance spot with a COIN-M short, the bought BTC moved into the
COIN-M wallet after the pair and back before a close); and the open and
close of a coin-margined carry on BTC held (the holding moved under the
short before it is placed, never traded). Each killed run is
recovered the two ways a user recovers: `fundarb reconcile` (even kill
points) and the strategy runner's start (odd points), and then:

- no naked leg: the venue's spot BTC and perp short differ by less than a
  lot (coin-margined: the carry's BTC in both wallets and the short's BTC at
  its entry differ by less than a contract's worth);
- no doubled leg: neither leg holds more than the size asked;
- no client id reached the venue twice;
- coin-margined, while the short is open: the carry's BTC is in the COIN-M
  wallet (a move a kill cut off is made good by the recovery);
- on BTC held: no spot trade, and the holding is what it was but for what
  the short settled;
- the journal equals the venue: every venue trade is a fill, positions agree,
  nothing is left in flight.

The table of kill points and outcomes is written to ``kill_sweep.json`` in
the test's folder and printed.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest

import fundarb.live.ccxt.client as exchange_module
from fundarb.cli.main import app
from fundarb.config import LiveSettings
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.guards import guarded
from fundarb.testkit.live import COINM, COINM_FLOAT, KEYS, PERP, SPOT, assert_agree, coinm_config, fund, fund_coinm, venue_cli
from fundarb.testkit.runner import runner_config, write_config

SIZE = 0.01
PERP_LOT = 0.001
WORKERS = 4  # kill points run at once
SITUATIONS = ("open", "close", "partial_fill", "leg_refused", "late_arrival", "coinm_open", "coinm_close",
              "coinm_held_open", "coinm_held_close")
HELD_BTC = 0.08  # a carry on BTC held: on the spot wallet before it, more than the short is worth
COINM_SIZE, COINM_START, FACE = 0.05, "2024-03-01T06:00", 100.0  # real COIN-M funding about 60% APR then


@pytest.fixture
def sweep_guard(loopback_only):
    """The suite's hang guard, with a longer bound for this long test."""
    with guarded(loopback_only, 600):
        yield


pytestmark = pytest.mark.usefixtures("sweep_guard")


def _config(folder: Path, situation: str) -> Path:
    timings = LiveSettings(reconcile_interval_seconds=60.0, hedge_timeout_seconds=20.0, order_timeout_seconds=3.0,
                           request_timeout_seconds=1.0)
    cfg = coinm_config() if _coin(situation) else runner_config()
    if _held(situation):
        cfg = attrs.evolve(cfg, structure=attrs.evolve(cfg.structure, capital_asset="BTC"))
    return write_config(attrs.evolve(cfg, live=timings), folder)


def _coin(situation: str) -> bool:
    return situation.startswith("coinm")


def _held(situation: str) -> bool:
    return "_held_" in situation


@contextmanager
def _venue_for(situation: str):
    """A funded emulator of its own (coin-margined: at a time its funding clears the entry rule)."""
    with running_emulator(**({"start": COINM_START} if _coin(situation) else {})) as server:
        if _held(situation):
            server.accounts.fund("binance", "BTC", HELD_BTC)
        else:
            (fund_coinm if _coin(situation) else fund)(server)
        yield server




def _faults(server, situation: str) -> None:
    if situation == "partial_fill":
        server.faults.add("partial_fill", venue="binanceusdm", fill_ratio=0.5)
    elif situation == "leg_refused":
        server.faults.add("refuse", venue="binance")
    elif situation == "late_arrival":  # placed, but the answer comes after the client gave up (1 s)
        server.faults.add("timeout_after_place", venue="binanceusdm", delay_s=1.5)


def _open_args(situation: str) -> tuple[str, ...]:
    return ("trade", "open", "--size", str(COINM_SIZE if _coin(situation) else SIZE), "--yes")


def _trade_args(situation: str) -> tuple[str, ...]:
    return ("trade", "close", "--yes") if situation.endswith("close") else _open_args(situation)


def _killed_run(server, journal: Path, config: Path, args: tuple[str, ...], kill_at: int | None) -> int:
    """Run the trade command in a fork that SIGKILLs itself right after its
    ``kill_at``-th trade log commit (None: never); the commits it made."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the trading process
        try:
            os.close(read)
            original = Journal.tx
            count = 0

            @contextmanager
            def counted(self):
                nonlocal count
                with original(self) as db:
                    yield db
                count += 1  # committed
                os.write(write, b".")
                if count == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            Journal.tx = counted
            venue_cli(app, server, journal, config, *args)
        finally:
            os._exit(0)
    os.close(write)
    seen = b""
    while chunk := os.read(read, 4096):
        seen += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert killed == (kill_at is not None and kill_at <= len(seen)), (kill_at, len(seen), status)
    return len(seen)


def _recover_by_runner_start(server, journal: Path, config: Path) -> None:
    """What a restarted `fundarb run --live` does before its first event."""
    from fundarb.app.runner.logs import run_logger
    from fundarb.app.runner.loop import Runner
    from fundarb.config import load
    from fundarb.live.ccxt.client import Target
    from fundarb.live.execution.session import open_session

    cfg = load(config)

    async def start() -> None:
        session = await open_session(cfg, journal, Target(api_url=server.base_url, timeout_ms=1000), env=KEYS,
                                     dotenv=None)
        try:
            runner = Runner(cfg, "live", session, run_logger(session.config_hash, "live", None))
            await runner.start()
        finally:
            await session.close()

    asyncio.run(start())


def _venue(server, situation: str) -> dict:
    """The venue's two legs in BTC: coin-margined, the short's contracts at
    their entry and the BTC both wallets hold beyond the funded float."""
    wallets = server.accounts.wallets
    if _coin(situation):
        pos = server.accounts.position(*COINM)
        perp = pos.qty * FACE / pos.entry if pos.qty else 0.0
        spot = wallets["binance"].get("BTC") + wallets["binancecoinm"].get("BTC") - _float(situation)
        markets = (SPOT, COINM)
    else:
        perp, spot, markets = server.accounts.position("binanceusdm").qty, wallets["binance"].get("BTC"), (SPOT, PERP)
    ids = Counter(o.client_id for market in markets for o in server.accounts.all_orders(*market))
    return {"perp": perp, "spot": spot, "reused_client_ids": sorted(c for c, n in ids.items() if n > 1 and c)}


def _float(situation: str) -> float:
    """BTC on the venue before the trade that is not the carry's: the COIN-M float, or the holding."""
    return HELD_BTC if _held(situation) else COINM_FLOAT


def _check(server, journal: Path, situation: str, point: int, how: str) -> dict:
    venue = _venue(server, situation)
    where = f"{situation} killed after commit {point}, recovered by {how}"
    size = COINM_SIZE * 1.01 if _coin(situation) else SIZE  # coin-margined: the contracts nearest the size asked
    # the least either leg trades: a contract's worth at about 60,000 (coin-margined), else the perp's lot
    lot = FACE / 60_000 if _coin(situation) else PERP_LOT
    assert -size - 1e-12 <= venue["perp"] <= 1e-12, (where, venue)  # never more than asked, never long
    assert venue["reused_client_ids"] == [], (where, venue)
    wallets = server.accounts.wallets
    if _held(situation):
        # the holding is never traded: what it lost or gained is what the short settled, a few fees' worth
        assert server.accounts.trade_list(*SPOT) == [], (where, "the holding was traded")
        assert abs(venue["spot"]) < 1e-4, (where, venue)
        if venue["perp"] < 0:  # the short is covered, by the BTC moved under it in the COIN-M wallet
            assert wallets["binancecoinm"].get("BTC") > -venue["perp"] - lot, (where, "the short's margin not moved")
    else:
        assert venue["spot"] <= size + 1e-12, (where, venue)
        assert abs(venue["spot"] + venue["perp"]) < lot, (where, "naked", venue)
        if _coin(situation) and venue["perp"] < 0:  # an open short is margined by the carry's BTC, none left behind
            assert wallets["binance"].get("BTC") < 1e-5, (where, "BTC left on the spot wallet")
    j = assert_agree(server, journal, coin_margined=_coin(situation), float_btc=_float(situation))
    try:
        assert j.operations("needs_recovery") == [], where
        statuses = [op["status"] for op in j.operations()]
    finally:
        j.close()
    return {"situation": situation, "killed_after_commit": point, "recovered_by": how,
            "venue_perp": round(venue["perp"], 8), "venue_spot": round(venue["spot"], 8), "operations": statuses}


def _count_commits(situation: str, folder: Path, config: Path) -> int:
    """The commits of an unkilled run, on a venue of its own."""
    with _venue_for(situation) as clean:
        probe = folder / f"{situation}-probe.sqlite"
        if situation.endswith("close"):
            assert venue_cli(app, clean, probe, config, *_open_args(situation)).exit_code == 0
        _faults(clean, situation)
        return _killed_run(clean, probe, config, _trade_args(situation), None)


def _kill_point(situation: str, folder: Path, config: Path, point: int, blocked: list) -> dict:
    """One kill point on a venue of its own: trade, kill, recover, check."""
    run_dir = folder / f"{situation}-{point}"
    run_dir.mkdir()
    journal = run_dir / "fundarb.sqlite"
    with _venue_for(situation) as server:
        if situation.endswith("close"):
            opened = venue_cli(app, server, journal, config, *_open_args(situation))
            assert opened.exit_code == 0, opened.output
        _faults(server, situation)
        _killed_run(server, journal, config, _trade_args(situation), point)
        server.faults.clear()
        how = "reconcile" if point % 2 == 0 else "runner start"
        if how == "reconcile":
            rec = venue_cli(app, server, journal, config, "reconcile")
            assert rec.exit_code in (0, 1), rec.output  # 1: a mismatch it reports (checked below)
        else:
            _recover_by_runner_start(server, journal, config)
        row = _check(server, journal, situation, point, how)
    assert not blocked, f"a kill point tried to leave loopback: {list(blocked)}"
    return row


def _sweep(situation: str, folder: Path, monkeypatch, blocked: list) -> list[dict]:
    # a 1 s receive window instead of 5 s: recovery waits it out before it calls an order absent
    monkeypatch.setattr(exchange_module, "RECV_WINDOW_MS", 1_000)
    config = _config(folder, situation)
    total = _count_commits(situation, folder, config)
    assert total > 5, (situation, total)
    # Each kill point has its own venue, trade log and folder, so the points run
    # side by side in forked workers (which keep this test's patches and its
    # loopback guard); the sweep mostly waits on the venue's clocks.
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_kill_point, situation, folder, config, point, blocked) for point in range(1, total + 1)]
        return [f.result() for f in futures]


@pytest.mark.parametrize("situation", SITUATIONS)
def test_killed_after_every_commit_then_recovered_no_naked_no_doubled_leg(situation, tmp_path, monkeypatch, loopback_only):
    rows = _sweep(situation, tmp_path, monkeypatch, loopback_only)
    (tmp_path / "kill_sweep.json").write_text(json.dumps(rows, indent=1))
    print(f"\nkill sweep, {situation}: {len(rows)} kill points")
    for r in rows:
        print(f"  after commit {r['killed_after_commit']:>2} -> {r['recovered_by']:<12} perp {r['venue_perp']:+.3f} "
              f"spot {r['venue_spot']:.5f} operations {r['operations']}")
    assert len(rows) > 5
