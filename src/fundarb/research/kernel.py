"""The compiled path kernel: a whole one-carry path in one numba call.

A Monte Carlo path through the event simulator builds an object per event
(quote, mark, fill, order update) and runs the engine's generic loop. On
hourly bars the events are few and fixed (per hour: spot quote, perp quote,
mark, the settlement when one is due, the timer), so the same run fits in
one loop over arrays. This module is that loop, compiled.

One rule, one place. Every decision rule and formula the kernel uses is the
core's own function compiled here (``jit_core``): the entry rule and size,
the exit rule, the risk limits, the margin monitor's steps, the cut-size
search, the top-up, the venue's tiered liquidation price and maintenance
margin, the linear perp's trade, the book's equity, funding, and the
simulator's fee, slippage and latency formulas. What is the kernel's own is
the order of events (the simulator's priorities, ``fundarb.sim.queue``) and
the state they act on. The tests (tests/test_kernel.py) hold it equal to the
simulator, trade by trade, within 1e-9.

Scope (``out_of_scope`` names the feature that puts a config outside it):
a spot_linear carry (long spot, short linear perp, each venue its own cash,
transfers between them), USDT capital, the perp venue's cross liquidation
rule of binance_usdm or bybit_linear style, normal carry only, no
settlement quiet window, a price guard whose references do not reach back an
hour. A path the kernel meets something on that it does not model (an order
filled in part or refused, a liquidation, a drift rebalance, a failed
flatten, a gap in the settlement schedule while a position is open, a price
the guard would hold) is flagged, and the caller runs that path on the
simulator instead (``PATH_FLAGS`` names why), so every result is the
simulator's.
"""

from __future__ import annotations

import hashlib
import math
import os
import types
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numba
import numpy as np
from numba.np.unsafe.ndarray import to_fixed_tuple as _to_fixed_tuple

from fundarb.config import SPOT_LINEAR, Config
from fundarb.core import book as _book
from fundarb.core import funding as _funding
from fundarb.core import liquidation as _liquidation
from fundarb.core import risk as _risk
from fundarb.core import strategy as _strategy
from fundarb.core.market_guard import sure_ratios
from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import MarketHistory
from fundarb.sim import models as _models
from fundarb.sim import queue as q
from fundarb.sim.models import seconds
from fundarb.wiring import round_trip_cost, venue_costs


def _cache_dir() -> str:
    """Where numba keeps the compiled kernel between runs: a folder named by
    a digest of numba's version and every source the kernel compiles (this
    module, the core modules whose functions it compiles, the simulator's
    models and priorities), so a change to any of them compiles afresh and
    a stale kernel is never loaded. Under $FUNDARB_CACHE (default ~/.cache/fundarb)."""
    digest = hashlib.sha256(numba.__version__.encode())
    for mod in (_liquidation, _book, _funding, _strategy, _risk, _models, q):
        with open(str(mod.__file__), "rb") as f:
            digest.update(f.read())
    with open(__file__, "rb") as f:
        digest.update(f.read())
    base = os.environ.get("FUNDARB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fundarb")
    return os.path.join(base, "kernel", digest.hexdigest()[:16])


# every function below is compiled with cache=True into that folder (numba
# reads its cache folder when a function is decorated; it is set back after)
_numba_config: Any = numba.config
_previous_cache_dir = _numba_config.CACHE_DIR
_numba_config.CACHE_DIR = _cache_dir()
CACHE_DIR: str = _numba_config.CACHE_DIR
njit = numba.njit(cache=True, nogil=True)
njit_inline = numba.njit(inline="always", cache=True, nogil=True)

KERNEL, SIMULATOR = "kernel", "simulator"
ENGINES = (KERNEL, SIMULATOR)
LINEAR_AT_MARK_STYLES = (_liquidation.BINANCE_USDM, _liquidation.BYBIT_LINEAR)
ANNOUNCED_BEFORE_NS = _funding.ANNOUNCED_BEFORE_NS


def jit_core(func: Callable[..., Any], inline: bool = True, **overrides: Any) -> Any:
    """``func`` (a core function of plain floats) compiled by numba as it is
    written, its module's names but ``overrides`` (compiled stand-ins for the
    functions it calls) resolved as they are: the core's own code, not a copy.
    ``inline``: compiled into each caller (the rules on every event's path)."""
    names = {**func.__globals__, **overrides}
    clone = types.FunctionType(func.__code__, names, func.__name__, func.__defaults__, func.__closure__)
    return (njit_inline if inline else njit)(clone)


# --- the core's rules, compiled --------------------------------------------------
tiered_maintenance = jit_core(_liquidation.tiered_maintenance, inline=True)
linear_liquidation = jit_core(_liquidation.linear_liquidation, inline=True)
linear_wallet_for = jit_core(_liquidation.linear_wallet_for, inline=False)
margin_buffer = jit_core(_book.margin_buffer, inline=True)
drift_of = jit_core(_book.drift_of, inline=True)
linear_perp_trade = jit_core(_book.linear_perp_trade, inline=False)
book_equity = jit_core(_book.book_equity, inline=True)
flat_legs = jit_core(_book.flat_legs, inline=True)
linear_equity = jit_core(_book.linear_equity, inline=True)
perp_leverage = jit_core(_book.perp_leverage, inline=True)
slippage_cost = jit_core(_book.slippage_cost, inline=False)
spot_trade = jit_core(_book.spot_trade, inline=False)
linear_perp_fill = jit_core(_book.linear_perp_fill, inline=False, linear_perp_trade=linear_perp_trade)
funding_payment = jit_core(_funding.funding_payment, inline=True)
annualize = jit_core(_funding.annualize, inline=True)
entry_qty = jit_core(_strategy.entry_qty, inline=False)
cooldown_end = jit_core(_strategy.cooldown_end, inline=False)
max_hold_reached = jit_core(_strategy.max_hold_reached, inline=True)
carry_of = jit_core(_strategy.carry_of, inline=True)
mean_apr = jit_core(_strategy.mean_apr, inline=True, annualize=annualize)
exit_code = jit_core(_strategy.exit_code, inline=True, max_hold_reached=max_hold_reached)
clears_entry = jit_core(_strategy.clears_entry, inline=True)
amortised_cost_apr = jit_core(_strategy.amortised_cost_apr, inline=False)
position_over = jit_core(_risk.position_over, inline=False)
notional_over = jit_core(_risk.notional_over, inline=False)
leverage_over = jit_core(_risk.leverage_over, inline=False)
buffer_under = jit_core(_risk.buffer_under, inline=False)
own_perp_after = jit_core(_risk.own_perp_after, inline=False)
spot_cash_need = jit_core(_risk.spot_cash_need, inline=False)
margin_state = jit_core(_risk.margin_state, inline=True)
topup_step = jit_core(_risk.topup_step, inline=False)
drawdown_of = jit_core(_risk.drawdown_of, inline=True)
allocation_excess = jit_core(_risk.allocation_excess, inline=True)
fee_of = jit_core(_models.fee_of, inline=False)
slipped_price = jit_core(_models.slipped_price, inline=False)
lognormal_delay_ns = jit_core(_models.lognormal_delay_ns, inline=False)
spot_buy_short_of_cash = jit_core(_models.spot_buy_short_of_cash, inline=False)
over_venue_leverage = jit_core(_models.over_venue_leverage, inline=False)


@njit_inline
def rule_liquidation(rule: Any, wallet: float, qty: float, entry: float) -> float:
    """``MarginRule.liquidation_price`` in cross mode of a linear rule of the
    binance_usdm / bybit_linear style, the rule given as its four columns
    (``MarginRule.columns``): nan without a position or beyond the tiers."""
    if qty == 0:
        return math.nan
    side = 1.0 if qty > 0 else -1.0
    lp = linear_liquidation(wallet, side, abs(qty), entry, 0.0, rule[0], rule[1], rule[2], rule[3])
    return max(lp, 0.0) if side > 0 else lp


@njit
def rule_wallet_for(rule: Any, liq: float, qty: float, entry: float) -> float:
    """``MarginRule.wallet_for`` in cross mode of the same rules (nan beyond the tiers)."""
    if qty == 0:
        return math.nan
    side = 1.0 if qty > 0 else -1.0
    size = abs(qty)
    n = size * liq
    mm = tiered_maintenance(n, rule[1], rule[2], rule[3]) if n >= 0 else math.nan
    return linear_wallet_for(liq, side, size, entry, 0.0, mm)


topup_cash = jit_core(_risk.topup_cash, inline=False, _wallet_for=rule_wallet_for)
cut_size = jit_core(_risk.cut_size, inline=False, _liq=rule_liquidation, margin_buffer=margin_buffer)

# the core functions compiled above, for the test that they are the core's own code
COMPILED_CORE = {
    "tiered_maintenance": (tiered_maintenance, _liquidation.tiered_maintenance),
    "linear_liquidation": (linear_liquidation, _liquidation.linear_liquidation),
    "linear_wallet_for": (linear_wallet_for, _liquidation.linear_wallet_for),
    "margin_buffer": (margin_buffer, _book.margin_buffer),
    "drift_of": (drift_of, _book.drift_of),
    "linear_perp_trade": (linear_perp_trade, _book.linear_perp_trade),
    "book_equity": (book_equity, _book.book_equity),
    "flat_legs": (flat_legs, _book.flat_legs),
    "linear_equity": (linear_equity, _book.linear_equity),
    "perp_leverage": (perp_leverage, _book.perp_leverage),
    "slippage_cost": (slippage_cost, _book.slippage_cost),
    "spot_trade": (spot_trade, _book.spot_trade),
    "linear_perp_fill": (linear_perp_fill, _book.linear_perp_fill),
    "funding_payment": (funding_payment, _funding.funding_payment),
    "annualize": (annualize, _funding.annualize),
    "entry_qty": (entry_qty, _strategy.entry_qty),
    "cooldown_end": (cooldown_end, _strategy.cooldown_end),
    "max_hold_reached": (max_hold_reached, _strategy.max_hold_reached),
    "carry_of": (carry_of, _strategy.carry_of),
    "mean_apr": (mean_apr, _strategy.mean_apr),
    "exit_code": (exit_code, _strategy.exit_code),
    "clears_entry": (clears_entry, _strategy.clears_entry),
    "amortised_cost_apr": (amortised_cost_apr, _strategy.amortised_cost_apr),
    "position_over": (position_over, _risk.position_over),
    "notional_over": (notional_over, _risk.notional_over),
    "leverage_over": (leverage_over, _risk.leverage_over),
    "buffer_under": (buffer_under, _risk.buffer_under),
    "own_perp_after": (own_perp_after, _risk.own_perp_after),
    "spot_cash_need": (spot_cash_need, _risk.spot_cash_need),
    "margin_state": (margin_state, _risk.margin_state),
    "topup_step": (topup_step, _risk.topup_step),
    "drawdown_of": (drawdown_of, _risk.drawdown_of),
    "allocation_excess": (allocation_excess, _risk.allocation_excess),
    "topup_cash": (topup_cash, _risk.topup_cash),
    "cut_size": (cut_size, _risk.cut_size),
    "fee_of": (fee_of, _models.fee_of),
    "slipped_price": (slipped_price, _models.slipped_price),
    "lognormal_delay_ns": (lognormal_delay_ns, _models.lognormal_delay_ns),
    "spot_buy_short_of_cash": (spot_buy_short_of_cash, _models.spot_buy_short_of_cash),
    "over_venue_leverage": (over_venue_leverage, _models.over_venue_leverage),
}

# --- why a path goes to the simulator ------------------------------------------------
PATH_FLAGS = (
    "", "an order filled in part", "an order refused by the venue", "a liquidation", "a delta drift above max_drift",
    "a flatten that left a position", "more random draws than were prepared", "a liquidation price beyond the margin tiers",
    "a number that is not finite", "more orders in flight than the kernel holds", "more trades than the trace holds",
    "a missing funding settlement while a position was open", "a price the market guard would hold",
    "a settlement off the hourly grid",
)
(F_OK, F_PARTIAL, F_REJECTED, F_LIQUIDATION, F_DRIFT, F_FLATTEN, F_DRAWS, F_TIERS, F_NOT_FINITE, F_HEAP, F_TRACE,
 F_MISSED, F_GUARD, F_OFF_GRID) = range(len(PATH_FLAGS))

# --- parameters (float64 array P) -------------------------------------------------------
(P_SPOT_TAKER, P_PERP_TAKER, P_SLIP_ALLOW, P_XFER_FEE, P_ALLOC, P_REBAL_TOL, P_MAX_POS, P_MAX_NOTIONAL, P_MAX_LEV,
 P_MIN_BUF, P_TOPUP_BUF, P_HARD_BUF, P_MAX_DD, P_MAX_DRIFT, P_FLATTEN_ON_KILL, P_NOTIONAL, P_ENTRY_APR, P_EXIT_APR,
 P_WINDOW, P_MAX_HOLD_DAYS, P_TARGET, P_COOLDOWN_H, P_LOT, P_COST_APR, P_XFER_DELAY_NS, P_SPOT_CASH, P_PERP_CASH,
 P_TARGET_LEV, P_ACC) = range(29)
# per account (0 spot, 1 perp), at P_ACC + ACC_FIELDS * account
(A_LAT_MEDIAN_NS, A_LAT_SIGMA, A_HS_LO, A_HS_HI, A_IMPACT, A_DEPTH, A_TAKER, A_MAX_VENUE_LEV) = range(8)
ACC_FIELDS = 8
N_PARAMS = P_ACC + 2 * ACC_FIELDS

# --- float state (array F) ---------------------------------------------------------------
(S_CASH_S, S_QTY_S, S_PX_S, S_CASH_P, S_QTY_P, S_ENTRY_P, S_PX_P, S_MARK, S_IN_TRANSIT, S_FEES, S_SLIP, S_FUND_RCV,
 S_FUND_PAID, S_SPOT_MID, S_Q_MID_S, S_DEPTH_BUY_S, S_DEPTH_SELL_S, S_Q_MID_P, S_DEPTH_BUY_P, S_DEPTH_SELL_P,
 S_ENTRY_CARRY, S_APR, S_INTERVAL, S_PEAK, S_SETTLED_DRIFT, S_REQUESTED, S_FILLED, S_DRIFT_MAX, S_MIN_BUF,
 S_INITIAL, S_LIQ, S_LIQ_CASH, S_LIQ_QTY, S_LIQ_ENTRY, S_PRED_APR) = range(35)
N_FLOAT_STATE = 35

# --- int state (array N) ---------------------------------------------------------------
(N_NOW, N_DIRECTION, N_ENTRY_TS, N_COOLDOWN, N_ENTRIES, N_ORDERS, N_OPEN, N_XFER_PENDING, N_HALTED, N_FLATTEN,
 N_ALERTS, N_VETOES, N_FLAG, N_RATES, N_HEAP, N_SEQ, N_LAT_S, N_SLIP_S, N_LAT_P, N_SLIP_P, N_IN_POS, N_SNAPS,
 N_FILLS, N_FUNDINGS, N_DUE, N_TRACE, N_HAVE_Q_S, N_HAVE_Q_P, N_HAS_PRED) = range(29)
N_INT_STATE = 29

FLATTEN_NONE, FLATTEN_SENT = 0, 1
# the heap of what the simulator schedules: columns of HI (ints) and HF (floats)
HEAP_CAP = 64
(H_TS, H_PRIO, H_SEQ, H_KIND, H_ACCT, H_SIGN, H_REDUCE) = range(7)
(H_QTY, H_FEE) = range(2)
K_ORDER, K_TRANSFER = 1, 2
# trace rows: fills (ts, account, sign, qty, price, fee) and settlements (ts, qty, rate, mark, amount)
TRACE_CAP = 4096
NO_DUE = 1 << 62
DRAWS = 256


@njit_inline
def _flag(N: Any, why: int) -> None:
    if N[N_FLAG] == 0:
        N[N_FLAG] = why


@njit_inline
def _is_flat(F: Any) -> bool:
    return flat_legs(F[S_QTY_S], F[S_QTY_P])


@njit_inline
def _equity(F: Any) -> float:
    return book_equity(F[S_CASH_S], F[S_CASH_P], F[S_IN_TRANSIT], F[S_QTY_S], F[S_PX_S], 0.0, F[S_QTY_P], F[S_PX_P],
                       F[S_ENTRY_P], 0.0)


@njit_inline
def _drift(F: Any) -> float:
    return drift_of(F[S_QTY_S] + 0.0, F[S_QTY_P])


@njit_inline
def _carry(F: Any) -> float:
    return carry_of(F[S_FUND_RCV] + F[S_FUND_PAID], F[S_FEES], F[S_SLIP])


@njit
def _push(N: Any, HI: Any, HF: Any, ts: int, prio: int, kind: int, acct: int, sign: int, reduce: int, qty: float,
          fee: float) -> None:
    i = N[N_HEAP]
    if i >= HEAP_CAP:
        _flag(N, F_HEAP)
        return
    N[N_SEQ] += 1
    HI[i, H_TS], HI[i, H_PRIO], HI[i, H_SEQ], HI[i, H_KIND] = ts, prio, N[N_SEQ], kind
    HI[i, H_ACCT], HI[i, H_SIGN], HI[i, H_REDUCE] = acct, sign, reduce
    HF[i, H_QTY], HF[i, H_FEE] = qty, fee
    N[N_HEAP] = i + 1


@njit_inline
def _top(N: Any, HI: Any) -> int:
    best = -1
    for i in range(N[N_HEAP]):
        if best < 0 or (HI[i, H_TS], HI[i, H_PRIO], HI[i, H_SEQ]) < (HI[best, H_TS], HI[best, H_PRIO], HI[best, H_SEQ]):
            best = i
    return best


@njit
def _remove(N: Any, HI: Any, HF: Any, i: int) -> None:
    last = N[N_HEAP] - 1
    for c in range(HI.shape[1]):
        HI[i, c] = HI[last, c]
    for c in range(HF.shape[1]):
        HF[i, c] = HF[last, c]
    N[N_HEAP] = last


@njit
def _draw(N: Any, slot: int, draws: Any) -> float:
    i = N[slot]
    if i >= draws.size:
        _flag(N, F_DRAWS)
        return 0.0
    N[slot] = i + 1
    return draws[i]


# --- the engine's sending side ---------------------------------------------------
@njit
def _send(P: Any, F: Any, N: Any, HI: Any, HF: Any, acct: int, sign: int, qty: float, reduce: int,
          lat_s: Any, lat_p: Any) -> None:
    """Engine._send, then SimExchange.submit: the order arrives after the account's drawn latency."""
    N[N_ORDERS] += 1
    N[N_OPEN] += 1
    a = P_ACC + ACC_FIELDS * acct
    sigma = P[a + A_LAT_SIGMA]
    z = 0.0
    if sigma != 0:
        z = _draw(N, N_LAT_S, lat_s) if acct == 0 else _draw(N, N_LAT_P, lat_p)
    delay = lognormal_delay_ns(P[a + A_LAT_MEDIAN_NS], sigma, z)
    F[S_REQUESTED] += qty
    _push(N, HI, HF, N[N_NOW] + delay, q.P_ORDER, K_ORDER, acct, sign, reduce, qty, 0.0)


@njit
def _send_close(P: Any, F: Any, N: Any, HI: Any, HF: Any, lat_s: Any, lat_p: Any) -> None:
    """close_intents, approved by risk.check (reduce-only: clipped to what is held), sent."""
    sq = F[S_QTY_S]
    if abs(sq) > 1e-12:
        _send(P, F, N, HI, HF, 0, -1 if sq > 0 else 1, min(abs(sq), abs(F[S_QTY_S])), 1, lat_s, lat_p)
    pq = F[S_QTY_P]
    if abs(pq) > 1e-12:
        _send(P, F, N, HI, HF, 1, -1 if pq > 0 else 1, min(abs(pq), abs(F[S_QTY_P])), 1, lat_s, lat_p)


@njit
def _send_cut(P: Any, F: Any, N: Any, HI: Any, HF: Any, x: float, lat_s: Any, lat_p: Any) -> None:
    """reduce_intents of x BTC on both legs, approved by risk.check, sent."""
    for acct in range(2):
        held = F[S_QTY_S] if acct == 0 else F[S_QTY_P]
        qx = min(x, abs(held))
        if qx > 1e-12:
            _send(P, F, N, HI, HF, acct, -1 if held > 0 else 1, min(qx, abs(held)), 1, lat_s, lat_p)


@njit
def _transfer(P: Any, F: Any, N: Any, HI: Any, HF: Any, to_perp: bool, amount: float) -> None:
    """Engine._transfer, then SimExchange.request_transfer (the same cash: never refused here)."""
    if not math.isfinite(amount):
        _flag(N, F_NOT_FINITE)
        return
    src = S_CASH_S if to_perp else S_CASH_P
    if amount <= 0 or F[src] < amount:
        return
    F[src] -= amount
    F[S_IN_TRANSIT] += amount
    N[N_XFER_PENDING] += 1
    _push(N, HI, HF, N[N_NOW] + int(P[P_XFER_DELAY_NS]), q.P_TRANSFER, K_TRANSFER, 1 if to_perp else 0, 0, 0,
          amount, P[P_XFER_FEE])


# --- strategy and risk -------------------------------------------------------------
@njit
def _entry_vetoed(P: Any, F: Any, rule: Any, qty: float, perp_qty: float) -> bool:
    """risk.check of an entry pair (spot buy, perp sell): either leg vetoed vetoes both."""
    price = F[S_PX_S] if F[S_PX_S] == F[S_PX_S] else F[S_SPOT_MID]
    new_qty = F[S_QTY_S] + 1 * qty
    spot_vetoed = position_over(new_qty, P[P_MAX_POS]) or notional_over(new_qty, price, P[P_MAX_NOTIONAL])
    if not spot_vetoed:
        spot_vetoed = F[S_CASH_S] < spot_cash_need(qty, price, P[P_SPOT_TAKER], P[P_SLIP_ALLOW])
    price = F[S_PX_P] if F[S_PX_P] == F[S_PX_P] else F[S_SPOT_MID]
    new_qty = F[S_QTY_P] + -1 * perp_qty
    if position_over(new_qty, P[P_MAX_POS]) or notional_over(new_qty, price, P[P_MAX_NOTIONAL]):
        return True
    cash, entry, equity = own_perp_after(F[S_QTY_P], F[S_ENTRY_P], F[S_CASH_P], new_qty, perp_qty, price,
                                         P[P_PERP_TAKER] + P[P_SLIP_ALLOW])
    if equity <= 0 or leverage_over(perp_leverage(new_qty, price, equity), P[P_MAX_LEV]):
        return True
    liq = rule_liquidation(rule, cash, new_qty, entry)
    if liq != liq:  # beyond the tiers: the check refuses the trade
        return True
    return spot_vetoed or buffer_under(margin_buffer(liq, price, new_qty), P[P_MIN_BUF])


# What the strategy and the monitor decide is judged from scalars alone (the
# hot path, every event); what they then do (send, transfer) touches the
# arrays (rare).
DEC_NONE, DEC_CLOSED, DEC_ENTER, DEC_EXIT = 0, 1, 2, 3


@njit_inline
def _decide_action(P: Any, now: int, halted: int, qs: float, qp: float, direction: int, cooldown: int, n_rates: int,
                   spot_mid: float, px_p: float, apr: float, entry_ts: int, carry: float, entry_carry: float,
                   has_pred: int, pred_apr: float) -> int:
    """Engine._decide and CarryStrategy.decide up to the orders: what to do
    now (``has_pred``: the coming settlement's rate is announced, and
    ``pred_apr`` is the window's mean with it as the newest rate,
    ``FundingSignal.known_apr``)."""
    flat = flat_legs(qs, qp)
    if halted and flat:
        return DEC_NONE  # halted: no entries until resumed, and nothing left to exit
    if flat:
        if direction != 0:  # closed elsewhere (risk)
            return DEC_CLOSED
        if now < cooldown or n_rates + has_pred < int(P[P_WINDOW]) or not spot_mid > 0:
            return DEC_NONE
        if not px_p > 0:
            return DEC_NONE
        edge = (pred_apr if has_pred else apr) - 0.0  # CarryStrategy.entry_edge: known_apr, less no long leg
        return DEC_ENTER if clears_entry(edge, P[P_COST_APR], P[P_ENTRY_APR]) else DEC_NONE
    if direction == 0:
        return DEC_NONE  # a position the strategy did not open: risk owns it
    signal = pred_apr if has_pred else apr  # CarryStrategy.exit_reason: known_apr
    code = exit_code(direction, signal - 0.0, P[P_EXIT_APR], now - entry_ts, P[P_MAX_HOLD_DAYS], carry - entry_carry,
                     P[P_TARGET], P[P_NOTIONAL])
    return DEC_NONE if code == 0 else DEC_EXIT


@njit
def _decide(P: Any, F: Any, N: Any, HI: Any, HF: Any, rule: Any, lat_s: Any, lat_p: Any, action: int) -> None:
    """Carry out ``action`` (``_decide_action``): the orders, checked by risk.check, sent."""
    now = N[N_NOW]
    if action == DEC_CLOSED:
        N[N_DIRECTION] = 0
        N[N_COOLDOWN] = cooldown_end(now, P[P_COOLDOWN_H])
        action = _decide_action(P, now, N[N_HALTED], F[S_QTY_S], F[S_QTY_P], 0, N[N_COOLDOWN], N[N_RATES],
                                F[S_SPOT_MID], F[S_PX_P], F[S_APR], N[N_ENTRY_TS], _carry(F), F[S_ENTRY_CARRY],
                                N[N_HAS_PRED], F[S_PRED_APR])
    if action == DEC_ENTER:
        qty = entry_qty(P[P_NOTIONAL], F[S_SPOT_MID], P[P_LOT])
        perp_qty = abs(qty * 1)
        if qty <= 0 or perp_qty <= 0:
            return
        N[N_ENTRIES] += 1
        N[N_DIRECTION] = 1
        N[N_ENTRY_TS] = now
        F[S_ENTRY_CARRY] = _carry(F)
        if _entry_vetoed(P, F, rule, qty, perp_qty):
            N[N_VETOES] += 2
            N[N_ENTRIES] -= 1  # abandon: back to flat, and wait out the cooldown
            N[N_DIRECTION] = 0
            N[N_COOLDOWN] = cooldown_end(now, P[P_COOLDOWN_H])
            return
        _send(P, F, N, HI, HF, 0, 1, qty, 0, lat_s, lat_p)
        _send(P, F, N, HI, HF, 1, -1, perp_qty, 0, lat_s, lat_p)
    elif action == DEC_EXIT:
        N[N_DIRECTION] = 0
        N[N_COOLDOWN] = cooldown_end(now, P[P_COOLDOWN_H])
        _send_close(P, F, N, HI, HF, lat_s, lat_p)


(MON_NONE, MON_NOT_FINITE, MON_HALT, MON_ALLOCATE, MON_FLATTEN, MON_STUCK, MON_DRIFT, MON_TIERS, MON_HARD_CUT,
 MON_TOPUP) = range(10)


@njit_inline
def _monitor_action(P: Any, liq: float, eq: float, peak: float, halted: int, flatten: int, busy: bool, pending: bool,
                    qs: float, qp: float, cash_p: float, entry_p: float, px_p: float) -> tuple[int, float, int]:
    """RiskMonitor.evaluate up to its actions: (what to do, the new peak
    equity, the new flatten state); ``liq`` the perp's liquidation price."""
    if not math.isfinite(eq):
        return MON_NOT_FINITE, peak, flatten
    if eq > peak:
        peak = eq
    dd = drawdown_of(eq, peak)
    if not halted:
        flatten = FLATTEN_NONE
    if dd >= P[P_MAX_DD] and not halted:
        return MON_HALT, peak, flatten
    if busy:
        return MON_NONE, peak, flatten
    flat = flat_legs(qs, qp)
    if flat:
        if pending:
            return MON_NONE, peak, FLATTEN_NONE
        excess = allocation_excess(cash_p, eq + 0.0, P[P_ALLOC], P[P_REBAL_TOL])
        return (MON_NONE if excess == 0.0 else MON_ALLOCATE), peak, FLATTEN_NONE
    if halted and (P[P_FLATTEN_ON_KILL] != 0 or flatten != FLATTEN_NONE):
        return (MON_STUCK if flatten == FLATTEN_SENT else MON_FLATTEN), peak, flatten
    if drift_of(qs + 0.0, qp) > P[P_MAX_DRIFT]:
        return MON_DRIFT, peak, flatten
    if qp == 0:
        return MON_NONE, peak, flatten
    if liq != liq:
        return MON_TIERS, peak, flatten
    buf = margin_buffer(liq, px_p, qp)
    lev = perp_leverage(qp, px_p, linear_equity(cash_p, qp, px_p, entry_p))
    state = margin_state(buf, lev, P[P_MIN_BUF], P[P_HARD_BUF], P[P_MAX_LEV], pending)
    if state == _risk.MARGIN_OK or state == _risk.MARGIN_WAIT:
        return MON_NONE, peak, flatten
    return (MON_HARD_CUT if state == _risk.MARGIN_HARD_CUT else MON_TOPUP), peak, flatten


@njit
def _monitor(P: Any, F: Any, N: Any, HI: Any, HF: Any, rule: Any, lat_s: Any, lat_p: Any, action: int) -> None:
    """Carry out ``action`` (``_monitor_action``) as Engine._monitor does: alerts, transfers, orders."""
    if action == MON_NOT_FINITE:
        _flag(N, F_NOT_FINITE)
    elif action == MON_HALT:
        N[N_HALTED] = 1
        N[N_ALERTS] += 1
        N[N_FLATTEN] = FLATTEN_NONE
        if P[P_FLATTEN_ON_KILL] != 0 and not _is_flat(F):
            N[N_FLATTEN] = FLATTEN_SENT
            _send_close(P, F, N, HI, HF, lat_s, lat_p)
    elif action == MON_ALLOCATE:
        excess = allocation_excess(F[S_CASH_P], _equity(F), P[P_ALLOC], P[P_REBAL_TOL])
        N[N_ALERTS] += 1
        _transfer(P, F, N, HI, HF, excess < 0, abs(excess))
    elif action == MON_FLATTEN:
        N[N_FLATTEN] = FLATTEN_SENT
        _send_close(P, F, N, HI, HF, lat_s, lat_p)
    elif action == MON_STUCK:
        _flag(N, F_FLATTEN)
    elif action == MON_DRIFT:
        _flag(N, F_DRIFT)
    elif action == MON_TIERS:
        _flag(N, F_TIERS)
    elif action == MON_HARD_CUT:
        x = cut_size(F[S_QTY_P], F[S_ENTRY_P], F[S_CASH_P], F[S_PX_P], P[P_HARD_BUF], math.inf, F[S_CASH_S],
                     P[P_XFER_FEE], False, rule)
        N[N_ALERTS] += 1
        _send_cut(P, F, N, HI, HF, x, lat_s, lat_p)
    elif action == MON_TOPUP:
        qty, entry, cash, mark = F[S_QTY_P], F[S_ENTRY_P], F[S_CASH_P], F[S_PX_P]
        need = topup_cash(qty, mark, entry, cash, qty * (mark - entry), P[P_TOPUP_BUF], P[P_TARGET_LEV],
                          rule) + P[P_XFER_FEE]
        if need != need:
            _flag(N, F_TIERS)
            return
        step = topup_step(F[S_CASH_S], need, P[P_XFER_FEE])
        if step == _risk.TOPUP_FULL:
            N[N_ALERTS] += 1
            _transfer(P, F, N, HI, HF, True, need)
        elif step == _risk.TOPUP_PARTIAL:
            _transfer(P, F, N, HI, HF, True, F[S_CASH_S])
        else:
            x = cut_size(qty, entry, cash, mark, P[P_TOPUP_BUF], P[P_TARGET_LEV], F[S_CASH_S], P[P_XFER_FEE], True,
                         rule)
            N[N_ALERTS] += 1
            _send_cut(P, F, N, HI, HF, x, lat_s, lat_p)


# --- the simulator's side of an order -------------------------------------------------
@njit
def _arrive(P: Any, F: Any, N: Any, HI: Any, HF: Any, rule: Any, i: int, slip_s: Any, slip_p: Any,
            TF: Any, TI: Any) -> None:
    """SimExchange._arrive of a market order, then the engine's handling of
    its update and fill (Engine._on_update, _on_fill, PositionBook.apply_fill)."""
    acct, sign, reduce, qty = HI[i, H_ACCT], HI[i, H_SIGN], HI[i, H_REDUCE], HF[i, H_QTY]
    a = P_ACC + ACC_FIELDS * acct
    have_quote = N[N_HAVE_Q_S] if acct == 0 else N[N_HAVE_Q_P]
    held = F[S_QTY_S] if acct == 0 else F[S_QTY_P]
    mid = F[S_Q_MID_S] if acct == 0 else F[S_Q_MID_P]
    if not have_quote or (reduce and (held == 0 or (held > 0) == (sign > 0))):
        _flag(N, F_REJECTED)
        return
    if acct == 0:
        if sign > 0 and spot_buy_short_of_cash(F[S_CASH_S], qty, mid, mid, P[a + A_HS_HI], P[a + A_IMPACT],
                                               P[a + A_TAKER], False):
            _flag(N, F_REJECTED)
            return
        if sign < 0 and held - qty < -1e-12:
            _flag(N, F_REJECTED)
            return
    else:
        new_qty = held + sign * qty
        equity = linear_equity(F[S_CASH_P], held, mid, F[S_ENTRY_P])
        if over_venue_leverage(held, new_qty, mid, equity, P[a + A_MAX_VENUE_LEV]):
            _flag(N, F_REJECTED)
            return
    # accepted; the fill against the quote at arrival
    depth_slot = (S_DEPTH_BUY_S if sign > 0 else S_DEPTH_SELL_S) if acct == 0 else (
        S_DEPTH_BUY_P if sign > 0 else S_DEPTH_SELL_P)
    fill = min(qty, F[depth_slot])
    if reduce:
        fill = min(fill, abs(held))
    if fill <= 1e-12 or qty - fill > 1e-12:  # ends in part (or not at all): the simulator's
        _flag(N, F_PARTIAL)
        return
    lo, hi = P[a + A_HS_LO], P[a + A_HS_HI]
    hs = lo
    if hi != lo:
        hs = _draw(N, N_SLIP_S, slip_s) if acct == 0 else _draw(N, N_SLIP_P, slip_p)
    price = slipped_price(mid, sign, hs, P[a + A_IMPACT], fill)
    F[depth_slot] -= fill
    fee = fee_of(P[a + A_TAKER], fill, price)
    F[S_FILLED] += fill
    # the book: the leg valued at the quote's mid first, so the cost splits into slippage and the fee
    if acct == 0:
        F[S_PX_S] = mid
        F[S_SLIP] += slippage_cost(sign, fill, price, F[S_PX_S])
        F[S_CASH_S], F[S_QTY_S] = spot_trade(F[S_CASH_S], F[S_QTY_S], sign * fill, price, fee)
    else:
        F[S_PX_P] = mid
        F[S_SLIP] += slippage_cost(sign, fill, price, F[S_PX_P])
        cash, new_q, new_entry, _pnl = linear_perp_fill(F[S_CASH_P], F[S_QTY_P], F[S_ENTRY_P], sign * fill, price, fee)
        F[S_CASH_P], F[S_QTY_P], F[S_ENTRY_P] = cash, new_q, new_entry
    F[S_FEES] += fee
    t = N[N_TRACE]
    if t >= TRACE_CAP:
        _flag(N, F_TRACE)
    else:
        TI[t, 0], TI[t, 1], TI[t, 2] = N[N_NOW], acct, sign
        TF[t, 0], TF[t, 1], TF[t, 2] = fill, price, fee
        N[N_TRACE] = t + 1
    N[N_FILLS] += 1
    N[N_OPEN] -= 1
    if N[N_OPEN] == 0:
        d = _drift(F)
        if d > F[S_SETTLED_DRIFT]:
            F[S_SETTLED_DRIFT] = d


@njit_inline
def _perp_liquidation(F: Any, rule: Any) -> float:
    """The perp's liquidation price (``rule_liquidation``), kept while its
    cash, size and entry stay as they were: it depends on nothing else."""
    cash, qty, entry = F[S_CASH_P], F[S_QTY_P], F[S_ENTRY_P]
    if cash != F[S_LIQ_CASH] or qty != F[S_LIQ_QTY] or entry != F[S_LIQ_ENTRY]:
        F[S_LIQ] = rule_liquidation(rule, cash, qty, entry)
        F[S_LIQ_CASH], F[S_LIQ_QTY], F[S_LIQ_ENTRY] = cash, qty, entry
    return F[S_LIQ]


@njit_inline
def _due_after(due: int, ts: int, prio: int, qp: float, step: int) -> int:
    """SimExchange._check_funding: the next settlement the schedule expects
    after an event at (ts, prio); -1 when one was missed with a position
    open (the simulator raises); flat, the schedule moves on."""
    if ts > due or (ts == due and prio > q.P_FUNDING):
        if qp != 0:
            return -1
        while due <= ts:
            due += step
    return due


@njit
def run_path(hours: Any, spot: Any, perp: Any, mark: Any, fund_at: Any, fund_rate: Any, fund_interval: Any,
             fund_step: Any, fund_mark: Any, P: Any, rule: Any, lat_s: Any, slip_s: Any, lat_p: Any, slip_p: Any,
             F: Any, N: Any, curve: Any, TF: Any, TI: Any, FT: Any) -> None:
    """One path: the tape of ``hours`` (per hour spot quote, perp quote, mark,
    the settlement where ``fund_at``, the timer) merged with what the
    simulator schedules, in the simulator's order. Results in F, N, ``curve``
    (equity at each timer), TF/TI (fills) and FT (settlements booked)."""
    n = hours.size
    HI = np.zeros((HEAP_CAP, 7), dtype=np.int64)
    HF = np.zeros((HEAP_CAP, 2), dtype=np.float64)
    window = int(P[P_WINDOW])
    ring = np.zeros(max(window, 1), dtype=np.float64)
    F[:] = 0.0
    N[:] = 0
    F[S_CASH_S], F[S_CASH_P] = P[P_SPOT_CASH], P[P_PERP_CASH]
    F[S_INITIAL] = P[P_SPOT_CASH] + P[P_PERP_CASH] + 0.0
    F[S_PX_S] = math.nan
    F[S_PX_P] = math.nan
    F[S_MARK] = math.nan
    F[S_SPOT_MID] = math.nan
    F[S_INTERVAL] = 8.0
    F[S_MIN_BUF] = math.inf
    F[S_LIQ_CASH] = math.nan  # no liquidation price kept yet
    N[N_DUE] = NO_DUE
    first_step = 0
    for k in range(n):
        if fund_at[k]:
            N[N_DUE] = hours[k]
            first_step = fund_step[k]
            break
    due_step = first_step
    k = 0
    stage = 0
    tape_done = n == 0
    while N[N_FLAG] == 0:
        # the next tape event: (hour k, stage) -> (ts, priority); stage 5, after hour k's timer, announces the
        # settlement of hour k + 1 (``sim.tape.history_tape``)
        if not tape_done and stage == 3 and not fund_at[k]:
            stage = 4
        top = _top(N, HI)
        if not tape_done:
            if stage == 5:
                ts, prio = hours[k + 1] - ANNOUNCED_BEFORE_NS, q.P_RATE
            else:
                ts = hours[k]
                prio = q.P_QUOTE if stage <= 1 else (q.P_MARK if stage == 2 else (q.P_FUNDING if stage == 3 else q.P_TIMER))
            take_tape = top < 0 or (ts, prio) <= (HI[top, H_TS], HI[top, H_PRIO])
        else:
            if top < 0:
                break
            take_tape = False
        if take_tape:
            N[N_NOW] = ts
            due = _due_after(N[N_DUE], ts, prio, F[S_QTY_P], due_step)
            if due < 0:
                _flag(N, F_MISSED)
                break
            N[N_DUE] = due
            risk_again = False
            if stage == 0:  # spot quote: bid == ask == close
                s = spot[k]
                F[S_Q_MID_S], F[S_DEPTH_BUY_S], F[S_DEPTH_SELL_S] = s, P[P_ACC + A_DEPTH], P[P_ACC + A_DEPTH]
                N[N_HAVE_Q_S] = 1
                F[S_SPOT_MID] = s
                F[S_PX_S] = s
            elif stage == 1:  # perp quote
                p = perp[k]
                d = P[P_ACC + ACC_FIELDS + A_DEPTH]
                F[S_Q_MID_P], F[S_DEPTH_BUY_P], F[S_DEPTH_SELL_P] = p, d, d
                N[N_HAVE_Q_P] = 1
            elif stage == 2:  # mark: the venue checks liquidation, the book revalues
                m = mark[k]
                F[S_MARK] = m
                if F[S_QTY_P] != 0:
                    liq = _perp_liquidation(F, rule)
                    if liq != liq:
                        _flag(N, F_TIERS)
                        break
                    if (F[S_QTY_P] < 0 and m >= liq) or (F[S_QTY_P] > 0 and m <= liq):
                        _flag(N, F_LIQUIDATION)
                        break
                F[S_PX_P] = m
                risk_again = not _is_flat(F)
            elif stage == 5:  # the coming settlement's rate, announced: FundingSignal.on_rate
                if window > 0:
                    first = max(N[N_RATES] - (window - 1), 0)  # the window's newest settled rates, then this one
                    total = 0.0
                    for r in range(first, N[N_RATES]):
                        total += ring[r]
                    total += fund_rate[k + 1]
                    N[N_HAS_PRED] = 1
                    F[S_PRED_APR] = mean_apr(total, N[N_RATES] - first + 1, fund_interval[k + 1])
            elif stage == 3:  # funding settlement
                N[N_HAS_PRED] = 0  # FundingSignal.on_settlement: a prediction is for the settlement just made
                rate, fm = fund_rate[k], fund_mark[k]
                qp = F[S_QTY_P]
                if qp != 0:
                    amount = funding_payment(qp, fm, rate)
                    F[S_CASH_P] += amount
                    if amount >= 0:
                        F[S_FUND_RCV] += amount
                    else:
                        F[S_FUND_PAID] += amount
                    j = N[N_FUNDINGS]
                    if j < FT.shape[0]:  # traced
                        FT[j, 0], FT[j, 1], FT[j, 2], FT[j, 3], FT[j, 4] = ts, qp, rate, fm, amount
                    N[N_FUNDINGS] = j + 1
                    risk_again = True
                N[N_DUE] = ts + fund_step[k]
                due_step = fund_step[k]
                # the signal: the mean of the last ``window`` rates, annualised
                if window > 0:
                    if N[N_RATES] < window:
                        ring[N[N_RATES]] = rate
                        N[N_RATES] += 1
                    else:
                        for r in range(window - 1):
                            ring[r] = ring[r + 1]
                        ring[window - 1] = rate
                    total = 0.0
                    for r in range(N[N_RATES]):
                        total += ring[r]
                    F[S_INTERVAL] = fund_interval[k]
                    F[S_APR] = mean_apr(total, N[N_RATES], fund_interval[k])
            else:  # timer: the equity snapshot
                eq = _equity(F)
                curve[k] = eq
                N[N_SNAPS] += 1
                if not _is_flat(F):
                    N[N_IN_POS] += 1
                    d = _drift(F)
                    if d > F[S_DRIFT_MAX]:
                        F[S_DRIFT_MAX] = d
                    liq = _perp_liquidation(F, rule)
                    if F[S_QTY_P] != 0 and liq != liq:
                        _flag(N, F_TIERS)
                        break
                    buf = margin_buffer(liq, F[S_PX_P], F[S_QTY_P]) if math.isfinite(eq) else math.nan
                    if math.isfinite(buf) and buf < F[S_MIN_BUF]:
                        F[S_MIN_BUF] = buf
                risk_again = True
            # the next tape position
            stage += 1
            if stage == 5 and not (k + 1 < n and fund_at[k + 1]):
                stage = 6  # no settlement on the next hour to announce
            if stage > 5:
                stage = 0
                k += 1
                if k >= n:
                    tape_done = True
                    N[N_DUE] = NO_DUE
        else:
            i = top
            ts = HI[i, H_TS]
            N[N_NOW] = ts
            if not tape_done:
                due = _due_after(N[N_DUE], ts, HI[i, H_PRIO], F[S_QTY_P], due_step)
                if due < 0:
                    _flag(N, F_MISSED)
                    break
                N[N_DUE] = due
            kind = HI[i, H_KIND]
            if kind == K_ORDER:
                _arrive(P, F, N, HI, HF, rule, i, slip_s, slip_p, TF, TI)
                _remove(N, HI, HF, i)
            else:
                amount, fee, to_perp = HF[i, H_QTY], HF[i, H_FEE], HI[i, H_ACCT] == 1
                _remove(N, HI, HF, i)
                F[S_IN_TRANSIT] -= amount
                if abs(F[S_IN_TRANSIT]) < 1e-9:
                    F[S_IN_TRANSIT] = 0.0
                if to_perp:
                    F[S_CASH_P] += amount - fee
                else:
                    F[S_CASH_S] += amount - fee
                F[S_FEES] += fee
                N[N_XFER_PENDING] -= 1
            risk_again = True
            if N[N_FLAG]:
                break
        if risk_again:
            eq = book_equity(F[S_CASH_S], F[S_CASH_P], F[S_IN_TRANSIT], F[S_QTY_S], F[S_PX_S], 0.0, F[S_QTY_P],
                             F[S_PX_P], F[S_ENTRY_P], 0.0) - 0.0
            liq = _perp_liquidation(F, rule) if F[S_QTY_P] != 0 else math.nan
            action, F[S_PEAK], N[N_FLATTEN] = _monitor_action(
                P, liq, eq, F[S_PEAK], N[N_HALTED], N[N_FLATTEN], N[N_OPEN] > 0, N[N_XFER_PENDING] > 0, F[S_QTY_S],
                F[S_QTY_P], F[S_CASH_P], F[S_ENTRY_P], F[S_PX_P])
            if action != MON_NONE:
                _monitor(P, F, N, HI, HF, rule, lat_s, lat_p, action)
        if N[N_OPEN] == 0 and N[N_FLAG] == 0:
            carry = _carry(F)
            action = _decide_action(P, N[N_NOW], N[N_HALTED], F[S_QTY_S], F[S_QTY_P], N[N_DIRECTION], N[N_COOLDOWN],
                                    N[N_RATES], F[S_SPOT_MID], F[S_PX_P], F[S_APR], N[N_ENTRY_TS], carry,
                                    F[S_ENTRY_CARRY], N[N_HAS_PRED], F[S_PRED_APR])
            if action != DEC_NONE:
                _decide(P, F, N, HI, HF, rule, lat_s, lat_p, action)




# --- the driver: config and path -> arrays, and the kernel's results -> the study's row -----------
def out_of_scope(cfg: Config) -> str | None:
    """The feature of ``cfg`` the kernel does not model (None: the kernel runs it)."""
    if cfg.rotation is not None:
        return "a rotation across venues ([rotation])"
    if cfg.structure_kind != SPOT_LINEAR:
        return f"structure.kind = {cfg.structure_kind!r} (it runs {SPOT_LINEAR!r} only)"
    if cfg.structure_settings.capital_asset != "USDT":
        return f"structure.capital_asset = {cfg.structure_settings.capital_asset!r} (it runs USDT capital only)"
    if cfg.strategy.allow_reverse:
        return "strategy.allow_reverse = true (a reverse carry, short spot on margin)"
    quiet = cfg.runner_settings.settlement_quiet_minutes
    if quiet:
        return f"runner.settlement_quiet_minutes = {quiet:g} (a quiet window around settlements)"
    ref = cfg.market_data_settings.reference_seconds
    if ref >= 3600:
        return f"market_data.reference_seconds = {ref:g} (a price guard comparing bars across hours)"
    rule = venue_costs(cfg).margin
    if rule.inverse or rule.style not in LINEAR_AT_MARK_STYLES or not rule.tiers:
        return f"the perp venue's margin rule style {rule.style!r} (it runs {' and '.join(LINEAR_AT_MARK_STYLES)})"
    return None


def kernel_params(cfg: Config, spot_price: float) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The float parameters (P) and the perp rule's columns of a config in
    scope; ``spot_price`` sizes the round-trip cost, as the simulator's strategy."""
    costs, lim, st = venue_costs(cfg), cfg.risk, cfg.strategy
    P = np.zeros(N_PARAMS, dtype=np.float64)
    P[P_SPOT_TAKER], P[P_PERP_TAKER], P[P_SLIP_ALLOW] = costs.spot_taker_fee, costs.perp_taker_fee, costs.slippage_allowance
    P[P_XFER_FEE], P[P_ALLOC], P[P_REBAL_TOL] = costs.transfer_fee, costs.perp_allocation, costs.rebalance_tolerance
    P[P_MAX_POS], P[P_MAX_NOTIONAL], P[P_MAX_LEV] = lim.max_position_btc, lim.max_notional, lim.max_leverage
    P[P_MIN_BUF], P[P_TOPUP_BUF], P[P_HARD_BUF] = lim.min_margin_buffer, lim.topup_target_buffer, lim.hard_margin_buffer
    P[P_MAX_DD], P[P_MAX_DRIFT], P[P_FLATTEN_ON_KILL] = lim.max_drawdown, lim.max_drift, float(lim.flatten_on_kill)
    P[P_TARGET_LEV] = _risk.target_leverage(lim)
    P[P_NOTIONAL], P[P_ENTRY_APR], P[P_EXIT_APR] = st.notional, st.entry_apr, st.exit_apr
    P[P_WINDOW], P[P_MAX_HOLD_DAYS], P[P_TARGET] = st.signal_settlements, st.max_holding_days, st.target_profit
    P[P_COOLDOWN_H], P[P_LOT] = st.cooldown_hours, st.lot_size
    P[P_COST_APR] = _strategy.amortised_cost_apr(round_trip_cost(cfg, spot_price), st.expected_holding_days)
    P[P_XFER_DELAY_NS] = seconds(cfg.transfer.delay_minutes * 60)
    P[P_SPOT_CASH], P[P_PERP_CASH] = cfg.spot_cash, cfg.perp_cash
    for acct, v in enumerate((cfg.spot, cfg.perp)):
        a = P_ACC + ACC_FIELDS * acct
        P[a + A_LAT_MEDIAN_NS], P[a + A_LAT_SIGMA] = v.latency_ms_median * 1e6, v.latency_sigma
        P[a + A_HS_LO], P[a + A_HS_HI], P[a + A_IMPACT] = v.half_spread_bp_min, v.half_spread_bp_max, v.impact_bp_per_btc
        P[a + A_DEPTH], P[a + A_TAKER], P[a + A_MAX_VENUE_LEV] = v.depth_btc, v.taker_fee, v.max_venue_leverage
    rule = tuple(np.asarray(c, dtype=np.float64) for c in costs.margin.columns)
    return P, rule


@attrs.frozen
class PathTape:
    """A history as the kernel reads it: per hour the prices, and the settlement where one falls."""

    hours: np.ndarray
    spot: np.ndarray
    perp: np.ndarray
    mark: np.ndarray
    fund_at: np.ndarray
    fund_rate: np.ndarray
    fund_interval: np.ndarray
    fund_step: np.ndarray
    fund_mark: np.ndarray


def path_tape(h: MarketHistory, cfg: Config) -> PathTape | int:
    """The kernel's arrays of ``h``, or the flag (``PATH_FLAGS``) of why the
    simulator must run it: a settlement off the hourly grid, a number that is
    not finite, or a price the market guard would not accept as it comes."""
    hours, spot, perp = h.hours, h.spot, h.perp
    mark = perp if h.mark is None else h.mark
    n = hours.size
    if h.bar_hours != 1 or n == 0:
        return F_OFF_GRID
    inside = h.funding_ts <= hours[-1]  # later settlements are past the tape's end
    fts = h.funding_ts[inside]
    idx = np.searchsorted(hours, fts)
    if fts.size and (idx[-1] >= n or not np.array_equal(hours[np.minimum(idx, n - 1)], fts)
                     or np.any(np.diff(idx) <= 0)):
        return F_OFF_GRID
    tape = PathTape(hours, spot, perp, mark, np.zeros(n, dtype=np.bool_), np.zeros(n), np.zeros(n),
                    np.zeros(n, dtype=np.int64), np.zeros(n))
    flag = _settlements(idx, h.funding_rate[inside], h.funding_interval[inside], h.funding_mark[inside], perp,
                        tape.fund_at, tape.fund_rate, tape.fund_interval, tape.fund_step, tape.fund_mark)
    if flag:
        return int(flag)
    if not _guard_accepts(spot, perp, mark, tape.fund_mark[idx], mark[idx], cfg):
        return F_GUARD
    return tape


@njit
def _settlements(idx: Any, rate: Any, interval: Any, marks: Any, perp: Any, fund_at: Any, fund_rate: Any,
                 fund_interval: Any, fund_step: Any, fund_mark: Any) -> int:
    """A tape's settlements, the i-th at hour ``idx[i]``: its rate, interval,
    the schedule's step to the next (the interval in ns) and its mark (the
    perp's close where the venue's is missing, nan); F_NOT_FINITE, and
    nothing written, when a rate or an interval is not a finite number or an
    interval is not positive."""
    for i in range(idx.size):
        if not (math.isfinite(rate[i]) and math.isfinite(interval[i]) and interval[i] > 0):
            return F_NOT_FINITE
    for i in range(idx.size):
        k = idx[i]
        fund_at[k] = True
        fund_rate[k] = rate[i]
        fund_interval[k] = interval[i]
        fund_step[k] = np.int64(np.rint(interval[i] * NS_PER_HOUR))
        fund_mark[k] = perp[k] if math.isnan(marks[i]) else marks[i]
    return F_OK


def guard_ratios(cfg: Config) -> tuple[float, float, float, float]:
    """(jump_lo, jump_hi, gap_lo, gap_hi): the market guard's ratios that
    are surely within max_jump and max_gap (``sure_ratios``)."""
    lim = cfg.market_data_settings.limits()
    jump_lo, jump_hi = sure_ratios(math.log1p(lim.max_jump))
    gap_lo, gap_hi = sure_ratios(math.log1p(lim.max_gap))
    return jump_lo, jump_hi, gap_lo, gap_hi


def _guard_accepts(spot: np.ndarray, perp: np.ndarray, mark: np.ndarray, fmark: np.ndarray, mark_at: np.ndarray,
                   cfg: Config) -> bool:
    """Whether the market guard (``fundarb.core.market_guard``) accepts every
    price of the hourly tape as it comes: each series within max_jump of its
    last hour, the perp and the mark within max_gap of the prices at the same
    instant (references older than reference_seconds, an hour back, do not
    count), each settlement's mark within max_jump of the hour's mark; each
    judged by the guard's own ratios that are surely within a bound
    (``sure_ratios``), so its float rounding never decides a path."""
    return bool(_plausible(spot, perp, mark, fmark, mark_at, *guard_ratios(cfg), mark is perp))


# no early exit and no division check in the hourly loops: they run on vectors (a zero price fails its own check)
njit_vector = numba.njit(cache=True, error_model="numpy")
to_fixed_tuple: Any = _to_fixed_tuple  # an array's first n values as a tuple (n known when compiled)


@njit_vector
def _plausible(spot: Any, perp: Any, mark: Any, fmark: Any, mark_at: Any, jump_lo: float, jump_hi: float,
               gap_lo: float, gap_hi: float, mark_is_perp: bool) -> bool:
    """``_guard_accepts`` by the ratios; ``mark_is_perp``: the hourly mark
    is the perp's close (``mark`` is ``perp``), so its checks are the perp's."""
    for i in range(fmark.size):
        f, m = fmark[i], mark_at[i]
        if not (f > 0 and f < math.inf):
            return False
        if f != m and not (jump_lo < f / m < jump_hi):
            return False
    n = spot.size
    if mark_is_perp:  # the mark's checks are the perp's, and the perp to itself is 1
        ok = n == 0 or gap_lo < 1.0 < gap_hi
        for k in range(n):
            s, p = spot[k], perp[k]
            g = p / s
            ok &= (s > 0) & (s < math.inf) & (p > 0) & (p < math.inf) & (gap_lo < g) & (g < gap_hi)
        for k in range(1, n):
            a, b = spot[k] / spot[k - 1], perp[k] / perp[k - 1]
            ok &= (jump_lo < a) & (a < jump_hi) & (jump_lo < b) & (b < jump_hi)
        return ok
    ok = True
    for k in range(n):
        s, p, m = spot[k], perp[k], mark[k]
        g, h, i = p / s, m / s, m / p
        ok &= ((s > 0) & (s < math.inf) & (p > 0) & (p < math.inf) & (m > 0) & (m < math.inf)
               & (gap_lo < g) & (g < gap_hi) & (gap_lo < h) & (h < gap_hi) & (gap_lo < i) & (i < gap_hi))
    for k in range(1, n):
        a, b, c = spot[k] / spot[k - 1], perp[k] / perp[k - 1], mark[k] / mark[k - 1]
        ok &= ((jump_lo < a) & (a < jump_hi) & (jump_lo < b) & (b < jump_hi) & (jump_lo < c) & (c < jump_hi))
    return ok


@njit
def _run_tapes(hours: Any, spot: Any, perp: Any, settle_at: Any, settled: Any, rate: Any, interval: Any, marks: Any,
               guard: Any, P: Any, rule: Any, lat_s: Any, slip_s: Any, lat_p: Any, slip_p: Any, F: Any, N: Any,
               curve: Any, TF: Any, TI: Any, FT: Any, fund_at: Any, fund_rate: Any, fund_interval: Any, fund_step: Any,
               fund_mark: Any) -> None:
    """Paths in rows, each as ``run_kernel`` runs one: path j's tape the hours,
    ``spot[j]``, ``perp[j]`` (the perp's close stands in for the mark) and
    the first ``settled[j]`` settlements of row j, at the hour indices
    ``settle_at``; its results in ``F[j]``, ``N[j]`` (N_FLAG: why the
    simulator must run it) and ``curve[j]``. The tape's settlement columns
    are ``fund_*``, all zero, and left so."""
    jump_lo, jump_hi, gap_lo, gap_hi = guard
    for j in range(spot.shape[0]):
        s, p, k = spot[j], perp[j], settled[j]
        at = settle_at[j, :k]
        flag = _settlements(at, rate[j, :k], interval[j, :k], marks[j, :k], p, fund_at, fund_rate, fund_interval,
                            fund_step, fund_mark)
        if flag == F_OK and not _plausible(s, p, p, fund_mark[at], p[at], jump_lo, jump_hi, gap_lo, gap_hi, True):
            flag = F_GUARD
        if flag == F_OK:
            run_path(hours, s, p, p, fund_at, fund_rate, fund_interval, fund_step, fund_mark,
                     to_fixed_tuple(P[j], N_PARAMS), rule, lat_s[j], slip_s[j], lat_p[j], slip_p[j], F[j], N[j],
                     curve[j], TF, TI, FT)
        else:
            N[j, :] = 0
            N[j, N_FLAG] = flag
        for i in at:
            fund_at[i], fund_rate[i], fund_interval[i], fund_step[i], fund_mark[i] = False, 0.0, 0.0, 0, 0.0


_numba_config.CACHE_DIR = _previous_cache_dir  # the kernel's functions are decorated: others' caches are theirs

EMPTY = np.zeros(0, dtype=np.float64)


def path_draws(cfg: Config, sim_seed: np.random.SeedSequence, size: int) -> tuple[np.ndarray, ...]:
    """The first ``size`` draws of each of the simulator's four streams (spot
    latency, spot spread, perp latency, perp spread), seeded as
    ``SimExchange`` seeds them; a stream its model never draws from is empty."""
    return tuple(draws[0] for draws in paths_draws(cfg, [sim_seed], size))


def paths_draws(cfg: Config, sim_seeds: Sequence[np.random.SeedSequence], size: int) -> tuple[np.ndarray, ...]:
    """``path_draws`` of each of ``sim_seeds``, a row each."""
    streams = []
    for v in (cfg.spot, cfg.perp):
        streams.append(np.empty((len(sim_seeds), size if v.latency_sigma != 0 else 0)))
        streams.append(np.empty((len(sim_seeds), size if v.half_spread_bp_max != v.half_spread_bp_min else 0)))
    for j, sim in enumerate(sim_seeds):
        for acct, v in enumerate((cfg.spot, cfg.perp)):
            lat, slip = streams[2 * acct], streams[2 * acct + 1]
            if lat.shape[1]:
                np.random.default_rng(_stream_seed(sim, acct, 0)).standard_normal(out=lat[j])
            if slip.shape[1]:
                slip[j] = np.random.default_rng(_stream_seed(sim, acct, 1)).uniform(
                    v.half_spread_bp_min, v.half_spread_bp_max, size)
    return tuple(streams)


def _stream_seed(sim: np.random.SeedSequence, account: int, stream: int) -> np.random.SeedSequence:
    """What ``sim.spawn(2)[account].spawn(2)[stream]`` gives (the simulator
    seeds each account's latency and spread streams so), built directly:
    spawning nothing, ``sim`` is left as it was."""
    key = (*sim.spawn_key, sim.n_children_spawned + account, stream)
    return np.random.SeedSequence(sim.entropy, spawn_key=key, pool_size=sim.pool_size)


@attrs.frozen
class KernelRun:
    """One path's results: flag 0, or why the simulator must run it."""

    flag: int
    F: np.ndarray
    N: np.ndarray
    hours: np.ndarray
    curve: np.ndarray
    fills: list[tuple[int, int, int, float, float, float]]  # (ts, account 0 spot / 1 perp, sign, qty, price, fee)
    fundings: list[tuple[int, float, float, float, float]]  # (ts, qty, rate, mark, amount)

    @property
    def reason(self) -> str:
        return PATH_FLAGS[self.flag]


class Workspace:
    """Arrays one process reuses path after path, and batch after batch of
    paths (``run_tapes``: fresh memory for each would cost more than the work
    on it, the more so in a Dask worker, which gives freed memory back at once)."""

    def __init__(self) -> None:
        self.F = np.zeros(N_FLOAT_STATE, dtype=np.float64)
        self.N = np.zeros(N_INT_STATE, dtype=np.int64)
        self.TF = np.zeros((TRACE_CAP, 3), dtype=np.float64)
        self.TI = np.zeros((TRACE_CAP, 3), dtype=np.int64)
        self.no_trace = np.zeros((0, 5), dtype=np.float64)
        self._columns: tuple[np.ndarray, ...] = ()
        self._rows: tuple[np.ndarray, ...] = ()
        self._scratch = EMPTY

    def columns(self, n: int) -> tuple[np.ndarray, ...]:
        """A tape's settlement columns of ``n`` hours (fund_at, fund_rate,
        fund_interval, fund_step, fund_mark), all zero: ``_run_tapes`` leaves them so."""
        if not self._columns or self._columns[0].size != n:
            self._columns = (np.zeros(n, dtype=np.bool_), np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64),
                             np.zeros(n))
        return self._columns

    def rows(self, paths: int, n: int) -> tuple[np.ndarray, ...]:
        """F, N and the equity curve of ``paths`` paths of ``n`` hours, a row each."""
        if not self._rows or self._rows[2].shape != (paths, n):
            self._rows = (np.zeros((paths, N_FLOAT_STATE)), np.zeros((paths, N_INT_STATE), dtype=np.int64),
                          np.empty((paths, n)))
        return self._rows

    def scratch(self) -> np.ndarray:
        """An array of the last ``rows``' curve's shape to work in."""
        if self._scratch.shape != self._rows[2].shape:
            self._scratch = np.empty(self._rows[2].shape)
        return self._scratch


def run_kernel(cfg: Config, h: MarketHistory, sim_seed: np.random.SeedSequence, trace: bool = False,
               ws: Workspace | None = None, seed_of: Callable[[], np.random.SeedSequence] | None = None) -> KernelRun:
    """``h`` through the kernel with the simulator draws of ``sim_seed``
    (``seed_of``: a fresh copy of it, for a second try with more draws)."""
    ws = ws or Workspace()
    tape = path_tape(h, cfg)
    if isinstance(tape, int):
        return KernelRun(tape, ws.F, ws.N, h.hours, EMPTY, [], [])
    params, columns = kernel_params(cfg, float(h.spot[0]))
    # passed as tuples (values): the compiled code reads them without reference counting
    P = tuple(params.tolist())
    rule = tuple(tuple(c.tolist()) for c in columns)
    size = DRAWS
    seed = sim_seed
    while True:
        lat_s, slip_s, lat_p, slip_p = path_draws(cfg, seed, size)
        curve = np.full(tape.hours.size, np.nan)
        FT = np.zeros((tape.hours.size, 5)) if trace else ws.no_trace
        run_path(tape.hours, tape.spot, tape.perp, tape.mark, tape.fund_at, tape.fund_rate, tape.fund_interval,
                 tape.fund_step, tape.fund_mark, P, rule, lat_s, slip_s, lat_p, slip_p, ws.F, ws.N, curve, ws.TF,
                 ws.TI, FT)
        flag = int(ws.N[N_FLAG])
        if flag != F_DRAWS or seed_of is None or size >= 1 << 20:
            break
        size *= 16
        seed = seed_of()
    fills = []
    fundings = []
    if trace:
        fills = [(int(ws.TI[i, 0]), int(ws.TI[i, 1]), int(ws.TI[i, 2]), float(ws.TF[i, 0]), float(ws.TF[i, 1]),
                  float(ws.TF[i, 2])) for i in range(int(ws.N[N_TRACE]))]
        fundings = [(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in FT[: int(ws.N[N_FUNDINGS])]]
    return KernelRun(flag, ws.F.copy(), ws.N.copy(), tape.hours, curve, fills, fundings)


@attrs.frozen
class TapeRuns:
    """Paths' results, a row each (``run_tapes``): flag 0, or why the simulator must run it."""

    flags: np.ndarray
    F: np.ndarray
    N: np.ndarray
    curve: np.ndarray


def run_tapes(cfg: Config, hours: np.ndarray, spot: np.ndarray, perp: np.ndarray, settle_at: np.ndarray,
              settled: np.ndarray, rate: np.ndarray, interval: np.ndarray, sim_seeds: Sequence[np.random.SeedSequence],
              ws: Workspace | None = None, draws: tuple[np.ndarray, ...] | None = None) -> TapeRuns:
    """Paths in rows through the kernel, path j as ``run_kernel`` runs the
    history of ``hours``, ``spot[j]`` and ``perp[j]`` (no hourly mark: the
    perp's close stands in), the first ``settled[j]`` settlements of row j
    (at the hour indices ``settle_at``, of ``rate`` and ``interval``, no venue
    mark), with the simulator draws of ``sim_seeds[j]``. A path flagged
    F_DRAWS has had the first DRAWS of each stream only: ``run_kernel`` with
    ``seed_of`` gives it more. The results are ``ws``'s arrays (valid until
    its next use). ``draws``: ``paths_draws`` of these seeds for a config of
    the same venues, made already."""
    paths, n = spot.shape
    P = np.empty((paths, N_PARAMS))
    params: dict[float, np.ndarray] = {}  # by the first spot price (a bootstrap's paths share it)
    columns: tuple[np.ndarray, ...] = ()
    for j, first in enumerate(spot[:, 0].tolist()):
        if first not in params:
            params[first], columns = kernel_params(cfg, first)
        P[j] = params[first]
    rule = tuple(tuple(c.tolist()) for c in columns)  # the perp venue's: the config's alone
    lat_s, slip_s, lat_p, slip_p = draws if draws is not None else paths_draws(cfg, sim_seeds, DRAWS)
    ws = ws or Workspace()
    F, N, curve = ws.rows(paths, n)
    curve.fill(np.nan)
    fund_at, fund_rate, fund_interval, fund_step, fund_mark = ws.columns(n)
    _run_tapes(hours, spot, perp, settle_at, settled, rate, interval, np.full(rate.shape, np.nan), guard_ratios(cfg),
               P, rule, lat_s, slip_s, lat_p, slip_p, F, N, curve, ws.TF, ws.TI, ws.no_trace, fund_at, fund_rate,
               fund_interval, fund_step, fund_mark)
    return TapeRuns(N[:, N_FLAG].copy(), F, N, curve)


def kernel_metrics(cfg: Config, h: MarketHistory, run: KernelRun) -> dict[str, Any]:
    """The study's path metrics (``PATH_METRICS``) of a kernel run, each by
    the formula ``fundarb.sim.backtest.compute_metrics`` gives it."""
    return paths_metrics(cfg, h.days, run.hours, run.F[None, :], run.N[None, :], run.curve[None, :])[0][0]


def paths_metrics(cfg: Config, days: float, hours: np.ndarray, F: np.ndarray, N: np.ndarray, curve: np.ndarray,
                  scratch: np.ndarray | None = None) -> tuple[list[dict[str, Any]], np.ndarray]:
    """``kernel_metrics`` of paths of ``days`` days over the same ``hours``,
    a row each of F, N and ``curve``; and each one's daily closes (the
    study's equity), a row each. ``scratch``: an array of the curve's shape
    to work in."""
    from fundarb.core import metrics

    carry = curve  # less the held BTC's price PnL: none in scope
    closes = metrics.daily_closes(hours, carry)
    sharpe = metrics.sharpe_rows(closes, cfg.collateral_rate).tolist()
    drawdown = metrics.max_drawdown_rows(carry, scratch).tolist()
    out = []
    for f, n, sr, dd in zip(F.tolist(), N.tolist(), sharpe, drawdown):
        equity = _book.book_equity(f[S_CASH_S], f[S_CASH_P], f[S_IN_TRANSIT], f[S_QTY_S], f[S_PX_S], 0.0, f[S_QTY_P],
                                   f[S_PX_P], f[S_ENTRY_P], 0.0)
        pnl = equity - f[S_INITIAL]
        funding = f[S_FUND_RCV] + f[S_FUND_PAID]
        fees, slippage, min_buf = f[S_FEES], f[S_SLIP], f[S_MIN_BUF]
        out.append({
            "net_apr": metrics.apr(pnl - 0.0, cfg.capital, days),
            "sharpe": sr,
            "max_drawdown": dd,
            "fill_rate": metrics.fill_rate(f[S_FILLED], f[S_REQUESTED]),
            "liquidations": 0,
            "net_pnl": pnl,
            "funding_net": funding,
            "fees": fees,
            "slippage": slippage,
            "net_funding_after_fees": _strategy.carry_of(funding, fees, slippage),
            "entries": n[N_ENTRIES],
            "orders": n[N_ORDERS],
            "delta_drift_max": max(f[S_DRIFT_MAX], f[S_SETTLED_DRIFT]),
            "missed_settlements": 0,
            "min_margin_buffer": min_buf if math.isfinite(min_buf) else None,
            "time_in_position": n[N_IN_POS] / max(n[N_SNAPS], 1),
            "alerts": n[N_ALERTS],
        })
    return out, closes
