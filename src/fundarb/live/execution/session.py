"""A live session: the configured venues' clients, request queues, market
rules, the journal and the leg trader, opened and closed together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import ccxt

from fundarb.config import COIN_MARGINED, Config, config_hash
from fundarb.live.ccxt.client import MarketRules, Target, VenueSetupError, VenueUnreachable, connect
from fundarb.live.ccxt.credentials import Credentials, load_credentials, require_credentials
from fundarb.live.ccxt.ratelimit import RequestQueue
from fundarb.live.execution.orders import LegTrader, LiveLeg
from fundarb.live.identity import session_identities
from fundarb.live.journal import Journal
from fundarb.support.scrub import scrub


@attrs.define
class LiveSession:
    cfg: Config
    config_hash: str
    journal: Journal
    spot: LiveLeg
    perp: LiveLeg
    trader: LegTrader
    clients: dict[str, Any]
    now_ns: Callable[[], int] = time.time_ns
    # one paired operation or one reconciliation at a time: a reconciliation
    # running while an order is in flight would see the venue ahead of the journal
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    alerter: Any = None  # fundarb.live.alerts.Alerter when FUNDARB_ALERT_URLS names channels
    # a process that is not the account's actor for its whole life (the dashboard): a context
    # manager that takes the one-actor lock for one reconciliation if it can (yields whether it did)
    alone: Callable[[], Any] | None = None
    paper: bool = False  # a paper trade log: the simulator's fills, nothing sent to the venues

    @property
    def legs(self) -> tuple[LiveLeg, LiveLeg]:
        return self.spot, self.perp

    @property
    def one_wallet(self) -> bool:
        """Both legs on one venue id's wallet (Bybit's unified account): nothing moves between them."""
        return self.spot.exchange.id == self.perp.exchange.id

    def alert(self, kind: str, message: str, severity: str = "warning") -> None:
        """Journal an alert and, when alert channels are configured, send it
        (de-duplicated and rate-limited by ``fundarb.live.alerts``)."""
        if self.alerter is None:
            self.journal.add_alert(self.now_ns(), kind, severity, self.config_hash, message)
            return
        from fundarb.live.alerts import Notice

        title = f"[{self.cfg.name} {self.config_hash[:12]}] {kind.replace('_', ' ')}"
        self.alerter.raise_notice(Notice(self.now_ns(), kind, kind, severity, title, scrub(message)))

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        self.journal.close()


async def open_session(cfg: Config, journal_path: Path, target: Target, *, trading: bool = True,
                       paper: bool = False, env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env"),
                       now_ns: Callable[[], int] = time.time_ns, waits: Any = None) -> LiveSession:
    """Open the journal, check (and, trading or ``paper``, bind) the venue
    identities it was made with, connect the config's venues (keys from the
    environment / .env) and load their markets. ``trading`` requires keys on
    both venues. ``paper``: the identities are paper ones on top of the
    venues (no key needed: nothing is sent); a session that does not trade
    on a paper trade log (the dashboard, ``positions``) watches it as paper."""
    journal = Journal(journal_path)  # first: a bad file is refused before any venue is asked
    try:
        identities = session_identities(cfg, target.api_url, target.sandbox, env, dotenv)
        if paper or (not trading and any(i.paper for i in journal.venues().values())):
            paper, identities = True, {a: i.as_paper() for a, i in identities.items()}
        journal.bind_venues(identities, bind=trading or paper)  # another venue or account: refused before any request
        h = config_hash(cfg)
        alerter = _alerter(cfg, h, journal, env, dotenv)  # a malformed alert URL: refused before any client is made
    except BaseException:
        journal.close()
        raise
    clients: dict[str, Any] = {}
    queues: dict[str, RequestQueue] = {}
    try:
        for exchange_id in dict.fromkeys((cfg.spot.exchange, cfg.perp.exchange)):
            creds: Credentials = load_credentials(exchange_id, env, dotenv)
            if trading and not paper:
                require_credentials(creds)
            clients[exchange_id] = client = connect(exchange_id, creds, target)
            queues[exchange_id] = queue = RequestQueue.for_exchange(client)
            if waits is not None:
                queue.on_retry = waits.on_retry
            await _load_markets(client, queue, exchange_id)
        legs = []
        for leg, venue, account in (("spot", cfg.spot, cfg.spot_account), ("perp", cfg.perp, cfg.perp_account)):
            client = clients[venue.exchange]
            rules = MarketRules.of(client, account, venue.symbol)
            market = client.market(venue.symbol)
            kind = _market_kind(cfg, leg)
            wanted = market["spot"] if kind == "spot market" else (market.get("swap") and market.get(kind.split()[0]))
            if not wanted:
                raise VenueSetupError(f"{account}: {venue.symbol} on {venue.exchange} is not a {kind}")
            legs.append(LiveLeg(leg, account, client, venue.symbol, queues[venue.exchange], rules,
                                identities[account].key))
    except BaseException:
        for client in clients.values():
            await client.close()
        journal.close()
        raise
    session = LiveSession(cfg, h, journal, legs[0], legs[1], LegTrader(journal, h, now_ns), clients, now_ns,
                          paper=paper)
    session.alerter = alerter
    return session


def _market_kind(cfg: Config, leg: str) -> str:
    """What the config's ``leg`` must be on its venue: the long leg a spot
    market, or a linear perpetual in a perp/perp carry (``Config.long_perp``);
    the short a linear perpetual, or an inverse one in a coin-margined carry."""
    if leg == "spot":
        return "linear perpetual" if cfg.long_perp else "spot market"
    return "inverse perpetual" if cfg.structure_kind == COIN_MARGINED else "linear perpetual"


def _alerter(cfg: Config, h: str, journal: Journal, env: Mapping[str, str] | None, dotenv: Path | None) -> Any:
    from fundarb.live.alerts import Alerter, channel_from_env

    try:
        channel = channel_from_env(env, dotenv)
    except ValueError as exc:  # one line (the URL itself is never echoed), before anything is opened
        raise VenueSetupError(str(exc)) from None
    return Alerter(channel, journal, h, cfg.alert_settings) if channel is not None else None


async def _load_markets(client: Any, queue: RequestQueue, exchange_id: str) -> None:
    try:
        await queue.call(client.load_markets)
    except ccxt.AuthenticationError as exc:
        raise VenueSetupError(f"{exchange_id}: the venue refused the API key ({_short(exc)}); "
                              f"check FUNDARB_{exchange_id.upper()}_API_KEY and _SECRET") from None
    except ccxt.NetworkError as exc:
        raise VenueUnreachable(f"{exchange_id}: unreachable ({type(exc).__name__}: {_short(exc)})") from None


def _short(exc: BaseException) -> str:
    return scrub(str(exc))[:300]
