"""Which venue account a trade log trades: the venue identity.

A venue identity is the exchange (ccxt id), the network (``mainnet``, the
venue's ``testnet``, a ``loopback`` server such as the emulator, or another
``custom`` host), the API host the orders go to, and a digest of the API key
(the key names the account; the digest is the first 16 hex digits of its
SHA-256, so the key itself is never stored or shown). It is worked out
before anything is sent, from the config, the target and the keys.

It keys two things:

- the trade log: a trade log is bound to the identities it was first traded
  with (``Journal.bind_venues``) and refuses any other with one line, so the
  fills of a testnet and of mainnet, or of two accounts, never share a log;
A paper run has identities of its own (``VenueIdentity.as_paper``: network
``paper``, the host whose market data it watches, no key), so its trade log
is bound to paper trading on that venue and refuses live trading, and a live
trade log refuses a paper run.

- the one-actor lock (``fundarb.live.runlock.ActorLock``): one lock
  per identity, so two trade logs on one account still exclude each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from fundarb.live.ccxt.credentials import Credentials, load_credentials
from fundarb.venues import quirks_or_plain

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
PAPER = "paper"  # the network of a paper-trading identity
BACKTEST = "backtest"  # the network of a backtest's or a replay's simulated venue


@attrs.frozen
class VenueIdentity:
    exchange: str
    network: str  # mainnet | testnet | loopback | custom | paper
    host: str  # host[:port] the orders are sent to
    key_digest: str  # first 16 hex digits of sha256(API key); "" without a key

    @property
    def key(self) -> str:
        """The identity as one string (stored in the trade log, hashed for the lock)."""
        return f"{self.exchange}|{self.network}|{self.host}|{self.key_digest or '-'}"

    def describe(self) -> str:
        if self.network == BACKTEST:
            return f"{self.exchange} simulated in a {self.host}"
        if self.network == PAPER:
            return f"{self.exchange} paper trading on the market data of {self.host}"
        key = f"API key #{self.key_digest[:8]}" if self.key_digest else "no API key"
        return f"{self.exchange} {self.network} at {self.host} ({key})"

    @property
    def run(self) -> str:
        """What trades on this identity: ``live``, ``paper``, or the simulated run (``backtest``, ``replay``)."""
        return self.host if self.simulated_venue else PAPER if self.paper else "live"

    @property
    def simulated_venue(self) -> bool:
        """A backtest's or a replay's venue: the simulator."""
        return self.network == BACKTEST

    @property
    def paper(self) -> bool:
        return self.network == PAPER

    def as_paper(self) -> VenueIdentity:
        """Paper trading on top of this venue: its market data, the simulator's
        fills. Its own identity (no key: nothing is sent), so a paper trade log
        never mixes with a live one of the same account."""
        return VenueIdentity(self.exchange, PAPER, self.host, "")

    @classmethod
    def simulated(cls, exchange: str, run: str = "backtest") -> VenueIdentity:
        """The venue of a backtest or a replay: the simulator, no key."""
        return cls(exchange, BACKTEST, run, "")

    @classmethod
    def parse(cls, key: str) -> VenueIdentity:
        exchange, network, host, digest = key.split("|")
        return cls(exchange, network, host, "" if digest == "-" else digest)

    def same_account(self, other: VenueIdentity) -> bool:
        """The same account: equal, or equal but for a key one side does not have
        (a read-only look at a trade log made with keys)."""
        if (self.exchange, self.network, self.host) != (other.exchange, other.network, other.host):
            return False
        return not self.key_digest or not other.key_digest or self.key_digest == other.key_digest


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else ""


def venue_identity(exchange_id: str, leg: str, creds: Credentials, api_url: str | None, sandbox: bool) -> VenueIdentity:
    """The identity of ``leg`` ("spot" | "perp") of ``exchange_id`` as the target reaches it."""
    if api_url:
        host = urlsplit(api_url).netloc or api_url
        network = "loopback" if urlsplit(api_url).hostname in LOOPBACK_HOSTS else "custom"
        return VenueIdentity(exchange_id, network, host, key_digest(creds.api_key))
    return VenueIdentity(exchange_id, "testnet" if sandbox else "mainnet", _venue_host(exchange_id, leg, sandbox),
                         key_digest(creds.api_key))


def _venue_host(exchange_id: str, leg: str, sandbox: bool) -> str:
    """The host ccxt sends ``leg``'s private (order) requests to, read from
    ccxt's URL table (no request is made)."""
    import ccxt

    cls = getattr(ccxt, exchange_id, None)
    if cls is None:
        return exchange_id
    client: Any = cls()
    urls = (client.urls.get("test") if sandbox else None) or client.urls.get("api") or {}
    if isinstance(urls, str):
        urls = {"private": urls}
    names = quirks_or_plain(exchange_id).private_urls if leg == "perp" else ("private",)
    url = next((urls[n] for n in names if isinstance(urls.get(n), str)), None)
    if url is None:
        url = sorted(v for v in urls.values() if isinstance(v, str))[0] if urls else exchange_id
    url = url.replace("{hostname}", str(getattr(client, "hostname", "") or ""))
    return urlsplit(url).netloc or url


def session_identities(cfg: Any, api_url: str | None, sandbox: bool, env: Mapping[str, str] | None = None,
                       dotenv: Path | None = Path(".env")) -> dict[str, VenueIdentity]:
    """The identity of each of the config's accounts (spot, perp; a perp/perp
    carry's long leg is reached where its venue takes perp orders)."""
    out: dict[str, VenueIdentity] = {}
    long = "perp" if cfg.long_perp else "spot"
    for leg, venue, account in ((long, cfg.spot, cfg.spot_account), ("perp", cfg.perp, cfg.perp_account)):
        creds = load_credentials(venue.exchange, env, dotenv)
        out[account] = venue_identity(venue.exchange, leg, creds, api_url, sandbox)
    return out
