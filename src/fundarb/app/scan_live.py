"""The live ``fundarb scan``: where the money is now, read from the venues'
public endpoints through ccxt (no keys).

Each market is read on its own client, all at once, each within
``timeout_s``: its current funding rate (and the predicted next one where
the venue publishes it), the settlement interval and next instant, and its
last settlements. A market that fails, times out or is rate-limited is shown
as such; the others are ranked without it. Nothing is retried: a scan is a
look, not a job.

The ranking is ``research.scan``'s: each carry's signal (the mean of its
last ``strategy.signal_settlements`` settlements, annualised at its own
interval, as the strategy's entry rule reads it), net of the config's round
trip over its holding period, over the capital it ties up. Spot/linear on
each linear perp, coin-margined on each inverse perp, perp/perp on each two
linear perps of different venues (short the one whose signal is higher).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import attrs

from fundarb.config import Config
from fundarb.core.funding import annualize
from fundarb.core.strategy import settlements_covering
from fundarb.live.ccxt.client import Target, connect
from fundarb.live.ccxt.credentials import load_credentials
from fundarb.live.execution.preflight import funding_interval_hours
from fundarb.research.funding_stats import fmt_ms
from fundarb.research.scan import COIN_MARGINED, PERP_PERP, SPOT_LINEAR, ScanCosts, candidate, pairs, ranked
from fundarb.sim.rotation import REFERENCE_INTERVAL_H
from fundarb.support.scrub import describe

# the BTC perpetuals fundarb trades: the linear (USDT) and inverse (BTC) ones of Binance and Bybit
LIVE_MARKETS = (("binanceusdm", "BTC/USDT:USDT"), ("bybit", "BTC/USDT:USDT"),
                ("binancecoinm", "BTC/USD:BTC"), ("bybit", "BTC/USD:BTC"))
HISTORY_ROWS = 100  # the last settlements asked for: 33 days at 8 h
TRAILING_DAYS = 30


@attrs.frozen
class MarketFunding:
    """One perpetual's funding as its venue states it now."""

    exchange: str
    symbol: str
    inverse: bool
    rate: float  # the current (next settlement's) rate, per interval
    predicted: float | None
    interval_hours: float
    next_ts_ms: int
    mark: float
    signal_apr: float  # mean of the settlements of the last N 8-hour periods, annualised
    trailing_apr: float  # mean over the last TRAILING_DAYS days, annualised
    settlements: int

    @property
    def label(self) -> str:
        return f"{self.exchange} {self.symbol}"


def market_of(exchange: str, symbol: str, fr: dict[str, Any], history: list[dict[str, Any]], n_signal: int,
              inverse: bool) -> MarketFunding:
    """The figures of one market from ccxt's funding-rate and history answers."""
    interval = funding_interval_hours(fr)
    rows = sorted((int(h["timestamp"]), float(h["fundingRate"])) for h in history if h.get("fundingRate") is not None)
    if not rows:
        raise ValueError("the venue gave no past settlement")
    last = rows[-1][0]
    recent = [r for t, r in rows if t > last - TRAILING_DAYS * 86_400_000]
    # as many of its settlements as cover n_signal 8-hour ones (an hourly venue: 8x), the rotation's rule
    signal = [r for _, r in rows[-settlements_covering(n_signal, REFERENCE_INTERVAL_H, interval):]]
    predicted = fr.get("nextFundingRate")
    rate = float(fr.get("fundingRate") or 0.0)
    step = int(interval * 3_600_000)
    announced = int(fr.get("fundingTimestamp") or fr.get("nextFundingTimestamp") or 0)
    # an announced instant that is not the venue's next by its own settlements (a client that computes it
    # from this machine's clock) gives way to the last settlement plus the interval
    nxt = announced if last < announced <= last + 2 * step else last + step
    return MarketFunding(exchange, symbol, inverse, rate, float(predicted) if predicted is not None else None, interval,
                         nxt,
                         float(fr.get("markPrice") or math.nan), annualize(sum(signal) / len(signal), interval),
                         annualize(sum(recent) / len(recent), interval), len(rows))


def failure_of(exc: BaseException) -> str:
    """What a market's failure is shown as: rate-limited, unreachable, or failed, with the venue's words."""
    import ccxt

    if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
        return f"rate-limited ({describe(exc, 120)})"
    if isinstance(exc, (TimeoutError, ccxt.NetworkError)):
        return f"unreachable ({describe(exc, 120) or 'no answer in time'})"
    return f"failed ({describe(exc, 120)})"


async def read_market(exchange: str, symbol: str, target: Target, n_signal: int) -> MarketFunding:
    client = connect(exchange, load_credentials(exchange, {}, None), target)  # public data: no keys
    try:
        await client.load_markets()
        market = client.market(symbol)
        fr = await client.fetch_funding_rate(symbol)
        # the history's start by the venue's own clock (some ccxt clients count it back from this machine's)
        since = None
        if client.has.get("fetchTime"):
            since = int(await client.fetch_time()) - int(HISTORY_ROWS * funding_interval_hours(fr) * 3_600_000)
        history = await client.fetch_funding_rate_history(symbol, since, HISTORY_ROWS)
        return market_of(exchange, symbol, fr, history, n_signal, bool(market.get("inverse")))
    finally:
        await client.close()


async def read_markets(markets: tuple[tuple[str, str], ...], target: Target, n_signal: int,
                       timeout_s: float) -> tuple[list[MarketFunding], dict[str, str]]:
    """Every market at once, each within ``timeout_s``: the ones read, and the others -> why not."""
    async def one(exchange: str, symbol: str) -> MarketFunding | str:
        try:
            return await asyncio.wait_for(read_market(exchange, symbol, target, n_signal), timeout_s)
        except Exception as exc:  # noqa: BLE001 - a market that fails is shown, the others go on
            return failure_of(exc)

    answers = await asyncio.gather(*(one(e, s) for e, s in markets))
    read = [a for a in answers if isinstance(a, MarketFunding)]
    failed = {f"{e} {s}": a for (e, s), a in zip(markets, answers) if isinstance(a, str)}
    return read, failed


def rank_live(read: list[MarketFunding], costs: ScanCosts, notional: float) -> list[dict[str, Any]]:
    """The carries the markets read allow, ranked (``research.scan.candidate``)."""
    by = {(m.exchange, m.symbol): m for m in read}
    rows = []

    def add(structure: str, short: MarketFunding, long: MarketFunding | None) -> None:
        gross = short.signal_apr - (long.signal_apr if long else 0.0)
        row = candidate(structure, short.label, long.label if long else None, gross, costs,
                        current_apr=annualize(short.rate, short.interval_hours)
                        - (annualize(long.rate, long.interval_hours) if long else 0.0),
                        interval_hours=short.interval_hours, next_settlement=fmt_ms(short.next_ts_ms)
                        if short.next_ts_ms else None)
        row["capital_for_notional"] = row["capital_per_notional"] * notional
        rows.append(row)

    for m in read:
        add(COIN_MARGINED if m.inverse else SPOT_LINEAR, m, None)
    for a, b in pairs([k for k, m in by.items() if not m.inverse]):
        if by[a].signal_apr > by[b].signal_apr:  # short the one whose signal is higher
            add(PERP_PERP, by[a], by[b])
    return ranked(rows)


def run_live_scan(cfg: Config, markets: tuple[tuple[str, str], ...], target: Target, hold_days: float | None,
                  timeout_s: float) -> dict[str, Any]:
    return asyncio.run(live_scan(cfg, markets, target, hold_days, timeout_s))


async def live_scan(cfg: Config, markets: tuple[tuple[str, str], ...], target: Target, hold_days: float | None,
                    timeout_s: float) -> dict[str, Any]:
    """The live scan's document: the markets read, those that failed and why, the ranked carries."""
    read, failed = await read_markets(markets, target, cfg.strategy.signal_settlements, timeout_s)
    marks = [m.mark for m in read if m.mark == m.mark]
    costs = ScanCosts.of(cfg, sorted(marks)[len(marks) // 2] if marks else math.nan, hold_days) if read else None
    return {
        "config": cfg.name, "signal_settlements": cfg.strategy.signal_settlements,
        "hold_days": costs.hold_days if costs else None, "notional": cfg.strategy.notional,
        "markets": [attrs.asdict(m) | {"label": m.label} for m in read], "failed": failed,
        "rows": rank_live(read, costs, cfg.strategy.notional) if costs else [],
    }
