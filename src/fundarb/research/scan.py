"""Where the funding has been: every structure the stored settlements allow,
over a window, ranked by net APR on capital (``fundarb scan --history``).

Candidates, for each funding series that covers the window (at least
``MIN_COVERAGE`` of its 8-hour buckets hold a settlement):

- ``spot_linear`` on a linear (USDT) perp: long spot, short the perp there;
- ``coin_margined`` on an inverse perp: BTC as the short's margin;
- ``perp_perp`` for each two linear perps of different venues: short the one
  that paid more over the window, long the other, each leg margined on its
  own venue.

Every series is summed into the 8-hour buckets of the window (00/08/16 UTC,
so an hourly venue's eight settlements make one bucket), which puts venues
of any interval side by side. Per unit of notional held all window:

- gross APR = the short's funding less the long's, summed over the buckets,
  times 8760 / 8 / buckets in the window;
- cost APR = one round trip (both legs in and out: each leg's taker fee, mean
  half spread and impact at the configured size, from the config's spot or
  perp costs, ``wiring.leg_cost``: the venues' own fee schedules are not
  modelled; spot_linear adds its two transfers) x 365 / the holding period;
- capital per notional: spot_linear, the config's capital over its notional
  (spot paid in full plus the perp's collateral); coin_margined, 1 (the BTC
  held is the margin); perp_perp, two perp legs' collateral at the config's
  perp leverage (notional / perp collateral);
- net APR on capital = (gross - cost) / capital per notional.

Negative buckets: the share of buckets in which the carry paid (its gross
for that bucket below 0). Hindsight ranks the pairs (the short leg is the
one that paid more over the window): the table says where the money was,
not what a strategy entering on its signal would have made.
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import attrs
import numpy as np
import polars as pl

from fundarb.config import Config
from fundarb.research.funding_stats import StatsError, cost_apr, fmt_ms, funding_apr_frame, series_label
from fundarb.wiring import leg_cost

BUCKET_MS = 8 * 3_600_000
BUCKETS_PER_YEAR = 8760 / 8
MIN_COVERAGE = 0.95
SPOT_LINEAR, COIN_MARGINED, PERP_PERP = "spot_linear", "coin_margined", "perp_perp"
# the symbols of inverse (coin-margined) BTC perpetuals in the stored series
INVERSE_SYMBOLS = frozenset({"BTCUSD_PERP", "BTCUSD", "XBTUSD", "BTC-USD-SWAP", "BTC-PERPETUAL"})


def is_inverse(symbol: str) -> bool:
    """An inverse BTC perp: one of ``INVERSE_SYMBOLS``, or a fetch store's
    series settled in BTC (``BTC/USD:BTC`` is stored as ``BTC_USD_BTC``)."""
    return symbol in INVERSE_SYMBOLS or symbol.endswith(("_BTC", ":BTC"))
COLUMNS = ("rank", "structure", "short", "long", "gross_apr", "cost_apr", "capital_per_notional",
           "net_apr_on_capital", "negative_buckets", "buckets")


@attrs.frozen
class ScanCosts:
    """What a round trip costs per structure (fractions of notional) and
    what each structure ties up per unit of notional, from a config."""

    spot_leg: float  # one trade on a spot market: taker fee, half spread, impact
    perp_leg: float  # one trade on a perp market
    hold_days: float
    spot_linear_capital: float
    perp_leg_capital: float  # one perp leg's collateral per notional
    transfers: float = 0.0  # spot_linear: the two transfers of its round trip (core: wiring.round_trip_cost)

    @classmethod
    def of(cls, cfg: Config, price: float, hold_days: float | None = None) -> ScanCosts:
        if not price > 0:
            raise StatsError(f"the scan sizes its costs at a BTC price, got {price}")
        qty = cfg.strategy.notional / price
        perp_cash = cfg.capital * cfg.perp_allocation
        return cls(leg_cost(cfg.spot, qty), leg_cost(cfg.perp, qty),
                   cfg.strategy.expected_holding_days if hold_days is None else hold_days,
                   cfg.capital / cfg.strategy.notional, perp_cash / cfg.strategy.notional,
                   2 * cfg.transfer.fee / cfg.strategy.notional)

    def round_trip(self, structure: str) -> float:
        if structure == PERP_PERP:
            return 4 * self.perp_leg
        return 2 * (self.spot_leg + self.perp_leg) + (self.transfers if structure == SPOT_LINEAR else 0.0)

    def capital(self, structure: str) -> float:
        return {SPOT_LINEAR: self.spot_linear_capital, COIN_MARGINED: 1.0, PERP_PERP: 2 * self.perp_leg_capital}[structure]


def buckets(funding: pl.DataFrame, since_ms: int, until_ms: int) -> tuple[dict[tuple[str, str], np.ndarray],
                                                                         dict[tuple[str, str], float], int]:
    """Each series' funding summed per 8-hour bucket of [since, until) (nan
    where it has no settlement), its coverage, and the number of buckets."""
    if until_ms <= since_ms:
        raise StatsError(f"the window {fmt_ms(since_ms)} .. {fmt_ms(until_ms)} is empty")
    lo = since_ms // BUCKET_MS * BUCKET_MS
    n = int(-(-(until_ms - lo) // BUCKET_MS))
    f = funding_apr_frame(funding, None, since_ms, until_ms)
    out: dict[tuple[str, str], np.ndarray] = {}
    coverage: dict[tuple[str, str], float] = {}
    for (venue, symbol), one in f.group_by(["venue", "symbol"], maintain_order=True):
        idx = ((one["ts_ms"].to_numpy() - lo) // BUCKET_MS).astype(np.int64)
        sums = np.full(n, np.nan)
        seen = np.zeros(n, dtype=bool)
        seen[idx] = True
        sums[seen] = 0.0
        np.add.at(sums, idx, one["rate"].to_numpy())
        key = (str(venue), str(symbol))
        out[key] = sums
        coverage[key] = float(seen.mean())
    return out, coverage, n


def candidate(structure: str, short: str, long: str | None, gross_apr: float, costs: ScanCosts,
              **extra: Any) -> dict[str, Any]:
    """One carry's row: its gross APR on notional net of the round trip over
    the holding period, over the capital it ties up (the one rule of the
    history and the live scan)."""
    cost = cost_apr(costs.round_trip(structure), costs.hold_days)
    capital = costs.capital(structure)
    return {"structure": structure, "short": short, "long": long or "spot", "gross_apr": gross_apr, "cost_apr": cost,
            "capital_per_notional": capital, "net_apr_on_capital": (gross_apr - cost) / capital, **extra}


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` best first by net APR on capital, numbered."""
    rows = sorted(rows, key=lambda r: (-r["net_apr_on_capital"], r["structure"], r["short"], r["long"]))
    return [{"rank": i, **r} for i, r in enumerate(rows, 1)]


def pairs(linear: list[tuple[str, str]]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """(a, b) of every two perps of different venues, both ways round (a
    cross-venue carry: two perps of one venue are not one)."""
    return [(a, b) for a, b in permutations(linear, 2) if a[0] != b[0]]


def scan_history(funding: pl.DataFrame, since_ms: int, until_ms: int, costs: ScanCosts) -> dict[str, Any]:
    """The ranked candidates over [since, until) (rows of ``COLUMNS``) and
    the series left out for not covering it, with their coverage."""
    series, coverage, n = buckets(funding, since_ms, until_ms)
    covered = sorted(k for k, c in coverage.items() if c >= MIN_COVERAGE)
    left_out = {series_label(*k): coverage[k] for k in sorted(coverage) if coverage[k] < MIN_COVERAGE}
    rows: list[dict[str, Any]] = []

    def add(structure: str, short: tuple[str, str], long: tuple[str, str] | None, per_bucket: np.ndarray) -> None:
        both = per_bucket[~np.isnan(per_bucket)]
        rows.append(candidate(structure, series_label(*short), series_label(*long) if long else None,
                              float(both.sum()) * BUCKETS_PER_YEAR / n, costs,
                              negative_buckets=float((both < 0).mean()) if both.size else None, buckets=int(both.size)))

    for key in covered:
        add(COIN_MARGINED if is_inverse(key[1]) else SPOT_LINEAR, key, None, series[key])
    for a, b in pairs([k for k in covered if not is_inverse(k[1])]):
        diff = series[a] - series[b]
        if np.nansum(diff) > 0:  # short the one that paid more; the other way round is its mirror
            add(PERP_PERP, a, b, diff)
    return {"window": [fmt_ms(since_ms), fmt_ms(until_ms)], "buckets": n,
            "rows": [{c: r[c] for c in COLUMNS} for r in ranked(rows)], "left_out": left_out}


def best(doc: dict[str, Any], structure: str | None = None) -> dict[str, Any] | None:
    """The top row of a scan, or of one structure."""
    return next((r for r in doc["rows"] if structure is None or r["structure"] == structure), None)


def windows_of(since_ms: int, until_ms: int, years: bool) -> list[tuple[str, int, int]]:
    """(label, since, until) of the whole window and, with ``years``, each calendar year it spans."""
    from datetime import UTC, datetime

    out = [(f"{fmt_ms(since_ms)[:10]}..{fmt_ms(until_ms)[:10]}", since_ms, until_ms)]
    if not years:
        return out
    first = datetime.fromtimestamp(since_ms / 1000, UTC).year
    last = datetime.fromtimestamp((until_ms - 1) / 1000, UTC).year
    if first == last:
        return out
    for y in range(first, last + 1):
        lo = max(since_ms, int(datetime(y, 1, 1, tzinfo=UTC).timestamp() * 1000))
        hi = min(until_ms, int(datetime(y + 1, 1, 1, tzinfo=UTC).timestamp() * 1000))
        out.append((str(y), lo, hi))
    return out


def scan_windows(funding: pl.DataFrame, since_ms: int, until_ms: int, costs: ScanCosts,
                 years: bool = True) -> list[dict[str, Any]]:
    return [{"label": label, **scan_history(funding, lo, hi, costs)} for label, lo, hi in windows_of(since_ms, until_ms, years)]
