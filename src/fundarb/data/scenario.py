"""Stress scenarios: the real market history with stated changes.

A scenario never invents a path: it takes the real hourly prices and funding
settlements of the configured window and changes them by a formula the config
states (``Scenario``), so a report can say exactly what was real and what not.

Funding, per settlement of ``interval_hours`` (taken from the data):
    rate' = rate * funding_scale + funding_shift_apr * interval_hours / 8760
Shock at hour index k = floor(shock_after_days * 24) after the first hour:
    spot'[i] = spot[i] * (1 + shock_return),  perp'[i] = perp[i] * (1 + shock_return)  for i >= k
so the hour-k return jumps by the shock, every other hourly return and the
basis (perp / spot) stay as they were. Funding rates are unchanged by the
shock; a settlement mark at or after the shock hour moves with the level (a
missing mark stays missing and the shocked perp close stands in for it).

The changed history must still hold finite numbers only (a missing mark stays
NaN): anything else is a DataError naming the scenario and the instant, never
a run on inf or nan.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from fundarb.config import Scenario
from fundarb.data.history import DataError, MarketHistory, fmt_time

HOURS_PER_YEAR = 8760.0


def shock_hour_index(history: MarketHistory, scenario: Scenario) -> int:
    """Index into ``history.hours`` of the shock; a DataError unless the shock
    falls after the first hour and inside the history."""
    k = math.floor(scenario.shock_after_days * 24)
    n = int(history.hours.size)
    if not 1 <= k < n:
        raise DataError(
            f"scenario.shock_after_days {scenario.shock_after_days:g} puts the shock {k} h after "
            f"{fmt_time(history.start)}, outside the history {fmt_time(history.start)} .. {fmt_time(history.end)} "
            f"(allowed: 1 h to {n - 1} h, i.e. {1 / 24:.4f} to {(n - 1) / 24:.4f} days)"
        )
    return k


def scaled_funding(history: MarketHistory, scenario: Scenario) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # judged by _require_finite
        shift = scenario.funding_shift_apr * history.funding_interval / HOURS_PER_YEAR
        return history.funding_rate * scenario.funding_scale + shift


def _require_finite(history: MarketHistory, scenario: Scenario) -> None:
    """Every price and rate of the changed history is a finite number (a
    missing settlement mark stays NaN, an infinite one is refused)."""
    marks = history.funding_mark
    for name, values, times in (("spot price", history.spot, history.hours), ("perp price", history.perp, history.hours),
                                ("hourly mark", history.mark, history.hours),
                                ("funding rate", history.funding_rate, history.funding_ts),
                                ("settlement mark", np.where(np.isnan(marks), 1.0, marks), history.funding_ts)):
        if values is None:
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"scenario {scenario.description!r} makes the {name} at {fmt_time(int(times[i]))} "
                            f"{values[i]}: not a finite number")


def summary(history: MarketHistory, scenario: Scenario) -> str:
    """One line for the report's sources: what the scenario changed."""
    parts = []
    if scenario.funding_scale != 1.0:
        parts.append(f"funding x{scenario.funding_scale:g}")
    if scenario.funding_shift_apr != 0.0:
        parts.append(f"funding {scenario.funding_shift_apr:+.2%} APR")
    if scenario.shock_return != 0.0:
        ts = int(history.hours[shock_hour_index(history, scenario)])
        parts.append(f"spot and perp {scenario.shock_return:+.1%} from {fmt_time(ts)}")
    return "scenario: " + ("; ".join(parts) if parts else "real data unchanged")


def apply_scenario(history: MarketHistory, scenario: Scenario | None) -> MarketHistory:
    """The history with the scenario's changes (a new object; the input's
    arrays are not touched). ``None`` returns the history itself."""
    if scenario is None:
        return history
    spot, perp, mark = history.spot, history.perp, history.funding_mark
    hourly_mark = history.mark
    if scenario.shock_return != 0.0:
        k = shock_hour_index(history, scenario)
        level = np.ones_like(spot)
        level[k:] = 1.0 + scenario.shock_return
        with np.errstate(over="ignore", invalid="ignore"):  # judged by _require_finite
            spot, perp = spot * level, perp * level
            hourly_mark = None if hourly_mark is None else hourly_mark * level
            after = history.funding_ts >= history.hours[k]
            mark = np.where(after, mark * (1.0 + scenario.shock_return), mark)
    out = attrs.evolve(
        history,
        spot=spot,
        perp=perp,
        mark=hourly_mark,
        funding_rate=scaled_funding(history, scenario),
        funding_mark=mark,
        sources=(*history.sources, summary(history, scenario)),
    )
    _require_finite(out, scenario)
    return out
