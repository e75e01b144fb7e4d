"""Set-up of the live-trading tests: the emulator's funded wallets, keys in an
environment mapping (never the real environment), a session of the shipped
spot/perp config pointed at the emulator, and the check that the trade log,
the journal and the venue agree at the end of a test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fundarb.config import Config, load, project_file, spot_perp_config_path
from fundarb.live.ccxt.client import Target
from fundarb.live.execution.paired import execute_pair
from fundarb.live.execution.session import open_session
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.server import EmulatorServer

T = TypeVar("T")

KEYS = {f"FUNDARB_{venue}_{part}": value
        for venue in ("BINANCE", "BINANCEUSDM", "BINANCECOINM", "BYBIT", "COINBASE", "KRAKEN")
        for part, value in (("API_KEY", "emulator-key"), ("SECRET", "emulator-secret-value"))}
KEYS["FUNDARB_KRAKEN_SECRET"] = "ZW11bGF0b3Itc2VjcmV0LXZhbHVl"  # base64 of the same: Kraken's secrets are base64
USDT = 100_000.0
SPOT, PERP = ("binance", "spot"), ("binanceusdm", "perp")


def fund(server: EmulatorServer, usdt: float = USDT) -> None:
    for wallet in ("binance", "binanceusdm", "bybit"):
        server.accounts.fund(wallet, "USDT", usdt)


def spot_perp() -> Config:
    """The two-account spot/perp carry (sims/spot_perp.toml): the emulator's accounts and markets match it."""
    return load(spot_perp_config_path())


# the commands that take ``--config`` (the others take none, or the config as an argument)
_CONFIG_OPTION = (("trade", "open"), ("trade", "close"), ("trade", "rotate"), ("positions",), ("reconcile",),
                  ("statement",), ("monitor",), ("kill",), ("resume",))


def on_spot_perp(args: Sequence[str]) -> list[str]:
    """A fundarb command line on the spot/perp carry the emulator's wallets
    are funded for: ``--config sims/spot_perp.toml`` added where the command
    takes one and the line names none."""
    args = list(args)
    takes = any(tuple(args[:len(c)]) == c for c in _CONFIG_OPTION)
    return args + ["--config", str(spot_perp_config_path())] if takes and "--config" not in args else args


async def session_on(server: EmulatorServer, journal: Path, timeout_ms: int = 5000, cfg: Config | None = None,
                     paper: bool = False) -> Any:
    return await open_session(cfg or spot_perp(), journal, Target(api_url=server.base_url, timeout_ms=timeout_ms),
                              env=KEYS, dotenv=None, trading=not paper, paper=paper)


def venue_cli(app: Any, server: EmulatorServer, journal: Path, config: Path, *args: str) -> Any:
    """A command of ``app`` (fundarb's: the test kit does not import the
    command line) on ``server`` with ``journal`` and ``config``, as a user
    types it (test keys, a 160-column terminal); the click ``Result``."""
    from typer.testing import CliRunner

    return CliRunner().invoke(app, [*args, "--api-url", server.base_url, "--journal", str(journal),
                                    "--config", str(config)], env={**KEYS, "COLUMNS": "160"})


def said(result: Any) -> str:
    """What a command printed (a click ``Result``), its lines joined as one:
    a terminal's width wraps them anywhere."""
    return " ".join(result.output.split())


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def open_pair(server: EmulatorServer, journal: Path, qty: float = 0.01, **session_options: Any) -> Any:
    """One paired open of ``qty`` BTC through a session of its own (closed
    afterwards); the operation's outcome."""
    async def scenario() -> Any:
        session = await session_on(server, journal, **session_options)
        try:
            return await execute_pair(session, "open", qty, {})
        finally:
            await session.close()
    return run(scenario())


async def until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    """Wait (bounded) until ``condition()`` holds; a broken run fails, never hangs."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def placed_orders(server: EmulatorServer, market: tuple[str, str] | None = None) -> list:
    markets = [market] if market else [SPOT, PERP]
    return [o for m in markets for o in server.accounts.all_orders(*m)]


def assert_agree(server: EmulatorServer, journal_path: Path, coin_margined: bool = False,
                 inverse_venue: str = "binancecoinm", float_btc: float | None = None) -> Journal:
    """Trade log, journal and venue state agree: every venue trade is a fill
    in the log (and no other), positions match, nothing is left in flight.
    ``coin_margined``: the perp is ``inverse_venue``'s inverse BTCUSD (Binance
    COIN-M with Binance spot, or Bybit's with Bybit spot in one wallet), in
    contracts, and the carry's BTC (spot fills and what the short settled in)
    is what the wallets hold beyond the BTC float the test funded
    (``float_btc``, default ``COINM_FLOAT``; a carry on BTC held: the holding)."""
    if coin_margined:
        return _assert_agree_coinm(server, journal_path, inverse_venue, COINM_FLOAT if float_btc is None else float_btc)
    j = Journal(journal_path)
    fills = j.rows("fills")
    for (venue, kind), account in ((SPOT, "binance:spot"), (PERP, "binanceusdm:perp")):
        venue_ids = sorted(t.id for t in server.accounts.trade_list(venue, kind))
        log_ids = sorted(f["trade_id"] for f in fills if f["account"] == account)
        assert venue_ids == log_ids, (account, venue_ids, log_ids)
        ours = {o["client_id"] for o in j.rows("orders") if o["account"] == account}
        assert {o.client_id for o in server.accounts.all_orders(venue, kind)} <= ours
    assert j.position("binanceusdm:perp") == pytest.approx(server.accounts.position("binanceusdm").qty, abs=1e-12)
    assert j.position("binance:spot") == pytest.approx(server.accounts.wallets["binance"].get("BTC"), abs=1e-12)
    assert j.orders(open_only=True) == []
    assert j.operations("executing") == []
    return j


COINM = ("binancecoinm", "inverse")
COINM_FLOAT = 0.01  # BTC in the COIN-M wallet before the carry: the short's initial margin


def fund_coinm(server: EmulatorServer, usdt: float = USDT, btc: float = COINM_FLOAT, venue: str = "binancecoinm") -> None:
    """The spot wallet's USDT that buys the carry's BTC, and a BTC float in the
    COIN-M wallet that is the short's initial margin until that BTC is moved
    in (``venue`` "bybit": both in Bybit's one wallet)."""
    server.accounts.fund("bybit" if venue == "bybit" else "binance", "USDT", usdt)
    if btc:
        server.accounts.fund(venue, "BTC", btc)


def coinm_config(held: bool = False, **live: Any) -> Config:
    """The shipped coin-margined config with short live timings (``held``:
    the shipped one on BTC already held)."""
    import attrs

    from fundarb.config import LiveSettings

    cfg = load(project_file(Path("sims") / ("coin_margined_btc.toml" if held else "coin_margined.toml")))
    timings = {"hedge_timeout_seconds": 20.0, "order_timeout_seconds": 5.0, "request_timeout_seconds": 2.0, **live}
    return attrs.evolve(cfg, live=LiveSettings(**timings))


def _assert_agree_coinm(server: EmulatorServer, journal_path: Path, venue: str, float_btc: float) -> Journal:
    from fundarb.live.execution.holdings import holdings

    class Leg:  # what holdings() reads of a live leg
        def __init__(self, account: str, face: float) -> None:
            self.account, self.base, self.face = account, "BTC", face

    j = Journal(journal_path)
    fills = j.rows("fills")
    spot_venue = "bybit" if venue == "bybit" else "binance"
    for (name, kind), account in (((spot_venue, "spot"), f"{spot_venue}:spot"), ((venue, "inverse"), f"{venue}:perp")):
        venue_ids = sorted(t.id for t in server.accounts.trade_list(name, kind))
        log_ids = sorted(f["trade_id"] for f in fills if f["account"] == account)
        assert venue_ids == log_ids, (account, venue_ids, log_ids)
        ours = {o["client_id"] for o in j.rows("orders") if o["account"] == account}
        assert {o.client_id for o in server.accounts.all_orders(name, kind)} <= ours
    pos = server.accounts.position(venue, "inverse")
    assert j.units(f"{venue}:perp") == pytest.approx(pos.qty, abs=1e-9)
    paid = sorted(f["amount"] for f in j.rows("funding"))
    assert paid == pytest.approx(sorted(f.amount for f in server.accounts.funding_list(venue, "inverse")))
    face = 1.0 if venue == "bybit" else 100.0
    held = holdings(j, Leg(f"{spot_venue}:spot", 0.0), Leg(f"{venue}:perp", face))
    wallets = sum(server.accounts.wallets[w].get("BTC") for w in dict.fromkeys((spot_venue, venue)))
    assert held.spot_btc == pytest.approx(wallets - float_btc, abs=1e-8)
    assert j.orders(open_only=True) == []
    assert j.operations("executing") == []
    return j


PERP_PERP_START = "2024-03-04T00:30"  # Binance USD-M paid about 11% APR more than Bybit then; at 08:30, Bybit 23% more
PERP_PERP_VENUES = ("bybit", "binanceusdm")  # sims/perp_perp.toml: long Bybit, short Binance USD-M


def perp_perp_config(**live: Any) -> Config:
    """The shipped perp/perp config (long Bybit, short Binance USD-M) with short live timings."""
    import attrs

    from fundarb.config import LiveSettings

    cfg = load(project_file(Path("sims") / "perp_perp.toml"))
    timings = {"hedge_timeout_seconds": 20.0, "order_timeout_seconds": 5.0, "request_timeout_seconds": 2.0, **live}
    return attrs.evolve(cfg, live=LiveSettings(**timings))


def fund_perp_perp(server: EmulatorServer, usdt: float = USDT / 2) -> None:
    """Each venue's USDT: Bybit's unified wallet (its linear perp margins there) and Binance USD-M's."""
    for wallet in PERP_PERP_VENUES:
        server.accounts.fund(wallet, "USDT", usdt)


def assert_agree_perp_perp(server: EmulatorServer, journal_path: Path,
                           venues: tuple[str, ...] = PERP_PERP_VENUES) -> Journal:
    """Trade log, journal and both venues agree for a perp/perp carry: on each
    venue, every trade of its BTCUSDT perp is a fill of the trade log under an
    account on that venue (``bybit:long``, and ``bybit:perp`` after a
    rotation), and no other; the venue's position is what those accounts'
    fills hold; its funding payments are the trade log's funding rows of those
    accounts, one for one; nothing is left in flight."""
    j = Journal(journal_path)
    fills, paid = j.rows("fills"), j.rows("funding")
    for venue in venues:
        accounts = {a for a in j.venues() if a.split(":")[0] == venue}
        venue_ids = sorted(t.id for t in server.accounts.trade_list(venue, "perp"))
        log_ids = sorted(f["trade_id"] for f in fills if f["account"] in accounts)
        assert venue_ids == log_ids, (venue, venue_ids, log_ids)
        ours = {o["client_id"] for o in j.rows("orders") if o["account"] in accounts}
        sent = {o.client_id for o in server.accounts.all_orders(venue, "perp") if o.client_id.startswith("fa")}
        assert sent <= ours, venue  # an order placed by hand is in the log by its trades (``ext:``)
        held = sum(j.position(a) for a in accounts)
        assert held == pytest.approx(server.accounts.position(venue).qty, abs=1e-12), (venue, held)
        log_paid = sorted((f["venue_ts"] // 1_000_000, f["amount"]) for f in paid if f["account"] in accounts)
        venue_paid = sorted((f.time_ms, f.amount) for f in server.accounts.funding_list(venue))
        assert [t for t, _ in log_paid] == [t for t, _ in venue_paid], (venue, log_paid, venue_paid)
        assert [a for _, a in log_paid] == pytest.approx([a for _, a in venue_paid]), (venue, log_paid, venue_paid)
    assert not [f for f in paid if f["account"].split(":")[0] not in venues]
    assert j.orders(open_only=True) == []
    assert j.operations("executing") == []
    return j


# ---------------------------------------------------------------- spot venues of their own: Coinbase, Kraken

# the shipped configs of a spot venue paired with another venue's linear perp: (spot venue, perp venue)
SPOT_VENUE_PAIRS = {"coinbase_binance": ("coinbase", "binanceusdm"), "kraken_bybit": ("kraken", "bybit")}


def pair_config(name: str, **live: Any) -> Config:
    """The shipped config ``sims/<name>.toml`` of a ``SPOT_VENUE_PAIRS`` pair with short live timings."""
    import attrs

    from fundarb.config import LiveSettings

    cfg = load(project_file(Path("sims") / f"{name}.toml"))
    timings = {"hedge_timeout_seconds": 20.0, "order_timeout_seconds": 5.0, "request_timeout_seconds": 2.0, **live}
    return attrs.evolve(cfg, live=LiveSettings(**timings))


def fund_pair(server: EmulatorServer, spot_venue: str, perp_venue: str, usdt: float = USDT) -> None:
    """Each venue's own USDT: the spot venue's wallet (what the buy spends) and the perp venue's (the short's margin)."""
    server.accounts.fund(spot_venue, "USDT", usdt)
    server.accounts.fund(perp_venue, "USDT", usdt)


def _venue_trade_id(venue: str, order_id: str, trade_id: str) -> str:
    """A trade's id as the venue names it to ccxt: the emulator's own, or the
    rendering of it by the venue's module (Coinbase's UUIDs, Kraken's txids)."""
    from fundarb.testkit.emulator import coinbase, kraken

    module = {"coinbase": coinbase, "kraken": kraken}.get(venue)
    return trade_id if module is None else str(module.venue_ids(order_id, trade_id)[1])


def assert_pair_agrees(server: EmulatorServer, journal_path: Path, spot_venue: str, perp_venue: str) -> Journal:
    """Trade log, journal and both venues agree for a spot venue and another
    venue's linear perp: every trade of each market is a fill of the trade
    log under its account (``<spot venue>:spot``, ``<perp venue>:perp``) and no
    other, and every order there is one of the journal's; the spot wallet
    holds the BTC the spot fills hold (these venues take their fees in USDT),
    the perp position is what the perp fills hold, and the two are equal and
    opposite (no naked leg); each settlement the venue paid the short is a
    funding row of the trade log, one for one; nothing is left in flight."""
    j = Journal(journal_path)
    fills = j.rows("fills")
    spot_account, perp_account = f"{spot_venue}:spot", f"{perp_venue}:perp"
    for (venue, kind), account in (((spot_venue, "spot"), spot_account), ((perp_venue, "perp"), perp_account)):
        venue_ids = sorted(_venue_trade_id(venue, t.order_id, t.id) for t in server.accounts.trade_list(venue, kind))
        log_ids = sorted(f["trade_id"] for f in fills if f["account"] == account)
        assert venue_ids == log_ids, (account, venue_ids, log_ids)
        ours = {o["client_id"] for o in j.rows("orders") if o["account"] == account}
        assert {o.client_id for o in server.accounts.all_orders(venue, kind)} <= ours, account
    spot_btc, short = server.accounts.wallets[spot_venue].get("BTC"), server.accounts.position(perp_venue).qty
    assert j.position(spot_account) == pytest.approx(spot_btc, abs=1e-12)
    assert j.position(perp_account) == pytest.approx(short, abs=1e-12)
    assert spot_btc == pytest.approx(-short, abs=1e-12), ("naked leg", spot_btc, short)
    paid = sorted((f["venue_ts"] // 1_000_000, f["amount"]) for f in j.rows("funding") if f["account"] == perp_account)
    venue_paid = sorted((f.time_ms, f.amount) for f in server.accounts.funding_list(perp_venue))
    assert [t for t, _ in paid] == [t for t, _ in venue_paid], (paid, venue_paid)
    assert [a for _, a in paid] == pytest.approx([a for _, a in venue_paid]), (paid, venue_paid)
    assert j.orders(open_only=True) == []
    assert j.operations("executing") == []
    return j
