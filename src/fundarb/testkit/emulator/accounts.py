"""Account state behind the loopback exchange's trading endpoints.

Pure bookkeeping: no I/O, no HTTP shapes (``emulator.py`` renders these in
each venue's own JSON). One ``Accounts`` holds every wallet of the emulator:

- ``binance``      Binance spot wallet (assets, free/locked).
- ``binanceusdm``  Binance USD-M futures wallet (USDT) and the BTCUSDT position.
- ``bybit``        Bybit unified (UNIFIED) wallet: spot assets AND the linear
                   BTCUSDT position share it, as on the real unified account.
- ``bybit:FUND``   Bybit funding wallet (transfers only).
- ``hyperliquid``  Hyperliquid perp account: USDC (the venue's collateral) and
                   the BTC perp position (``emulator.hyperliquid``); it pays
                   funding HOURLY at the stand-in settlements that module names.
- ``coinbase``     Coinbase Advanced Trade spot wallet (``emulator.coinbase``).
- ``kraken``       Kraken spot wallet (``emulator.kraken``).

Money rules (what the tests hold to 1e-9):

- **Fills.** A market order fills at the real close "at now" (spot close for
  spot, perp close for perps) moved by fundarb's own simulator slippage model
  (``fundarb.sim.models.SlippageModel``, mid-only quote: half spread
  drawn uniformly in [half_spread_bp_min, half_spread_bp_max] plus
  ``impact_bp_per_btc`` per BTC, from the ``VenueConfig`` defaults below),
  drawn from a Generator seeded by the emulator seed, then rounded to the tick
  against the taker (buys up, sells down). A limit order that would fill at or
  better than its price on arrival takes that price as a taker; otherwise it
  rests and fills at its own price, as a maker, when the clock moves the real
  close to or through it (``on_clock``).
- **Fees.** ``fee = rate * qty * price`` with the venue's maker/taker rates
  (``MARKETS``; Binance's match sims/spot_perp.toml). Spot fees are charged in
  the asset received (BTC on a buy, USDT on a sell), as both venues do without
  a fee-discount token; perp fees are charged in USDT. Coinbase and Kraken
  spot charge theirs in the quote on both sides (``MarketSpec.fee_in_quote``):
  buy q at p: USDT -= q p + fee, BTC += q; a resting buy locks its fee too.
- **Spot.** buy q at p: USDT -= q p, BTC += q - fee. sell: BTC -= q,
  USDT += q p - fee. A resting buy locks q * limit USDT, a resting sell q BTC.
  So USDT + BTC * p + fee_value == start for one fill at p.
- **Perps (isolated-style).** Opening |q| at p moves |q| p / leverage of the
  wallet into the position's collateral (``margin``) and needs that plus the
  fee available; reducing realises ``closed * (p - entry) * sign`` into the
  wallet and releases collateral pro rata. Wallet balance + fees paid ==
  deposits + realised PnL (+ funding, below); equity = wallet balance +
  unrealised PnL. Liquidation price: the venue's own rule
  (``fundarb.core.liquidation.MarginRule``, isolated mode, the collateral
  as the isolated wallet) with its tiers from the shipped snapshot
  (``fundarb.data.margin_tiers``): Binance USD-M bracket at the
  liquidation price, Bybit maintenance margin valued at entry.
- **Funding.** When the clock crosses a real settlement of the venue's own
  series (binance BTCUSDT for USD-M, bybit BTCUSDT for Bybit; ``settlements``),
  an open perp position of signed size q receives ``-q * mark * rate``
  (``core.book``'s rule; mark = the perp close at the settlement instant, the
  simulator's ``perp_close`` stand-in), booked once, in time order, however
  far the clock jumps: into the wallet and the position's isolated collateral
  (isolated venues credit the isolated wallet; the simulator's liquidation
  price likewise counts funding in the collateral). Only positions open at the
  instant accrue: a settlement at or before the time a position opened is not
  paid to it, and each settlement is paid at most once (a clock moved back and
  forward again does not pay it twice; moving back pays nothing). Recorded in
  ``fundings``.
- **Liquidation.** The clock walks the hourly perp closes it crosses
  (``marks_between``); at the first close at or past the position's
  liquidation price (``MarketSpec.margin``, isolated) the whole
  position is closed at that price, rounded one tick against the account, as
  the simulator's ``_check_liquidation``: realised ``q (price - entry)`` and a
  penalty fee ``min(liquidation_fee_rate * |q| * price, what is left of the
  collateral)`` (never below 0). What is left after both stays in the wallet.
  Open perp orders of the venue are cancelled first. The order is marked
  ``liquidation`` (Binance: a LIMIT IOC with clientOrderId ``autoclose-...``;
  Bybit: a Market order, createType CreateByLiq, execType BustTrade).
  Marks and settlements at one instant go mark first, then funding (the
  simulator's event priorities), so a position liquidated at the settlement
  hour is not paid.
- **The ledger.** Per perp wallet, to 1e-9, across fills, settlements and
  liquidations: free balance + collateral (together the wallet balance) +
  fees paid (liquidation penalties included) == deposits + realised PnL +
  funding; so equity (wallet + unrealised ``q (mark - entry)``) + fees paid ==
  deposits + realised + unrealised + funding.
- **Events.** Every change is told to ``Accounts.listeners`` (callables taking
  an :class:`AccountEvent`), called inside the account lock right after the
  change, so a listener reads the state as of that step: an order's ``NEW``
  (booked), each ``TRADE`` (one fill), ``CANCELED``, ``EXPIRED`` (the unfilled
  rest of a market/IOC order), and after each operation one ``BALANCE`` per
  wallet it touched (``reason`` ORDER, DEPOSIT or TRANSFER; ``traded`` when a
  fill moved money). The private websocket streams are built from these.
- **Refusals.** More than the available balance -> ``AccountError('insufficient')``;
  a client order id already used (Binance: among OPEN orders, as its docs say
  "a unique id among open orders"; Bybit and Hyperliquid: among all orders) -> 'duplicate';
  under the venue's minimum notional -> 'min_notional'.

**Inverse (coin-margined) perps** (kind ``INVERSE``): Binance COIN-M
BTCUSD_PERP (wallet ``binancecoinm``, 100 USD a contract) and Bybit inverse
BTCUSD (the UNIFIED wallet ``bybit``, 1 USD a contract), traded in whole
contracts and settled in BTC, by ``fundarb.core.book``'s inverse rules
(``VenueAccount._trade_inverse``, ``fee_for``, ``funding_due``):

- A position is signed contracts ``n`` (face ``F = n * size`` USD) at the
  entry ``EP``, the harmonic mean of its fills (total face / total BTC),
  as the venues keep it. Marks and fills use the real COIN-M BTCUSD_PERP
  closes (both venues: the shipped data has no Bybit inverse prices).
- Fees: ``rate * contracts * size / price`` BTC; reducing realises
  ``F_closed * (1/EP - 1/price)`` BTC (a short gains when the price falls);
  unrealised ``F * (1/EP - 1/mark)`` BTC. All into / out of the wallet's BTC.
- Margin: CROSS, as a coin-margined carry uses it: the wallet's whole BTC
  (with its unrealised PnL) backs the one position; opening needs
  ``opening * size / price / leverage`` BTC plus the fee available, where
  available BTC = wallet BTC - BTC locked by spot orders - position initial
  margin (at the mark) - open orders' margin + the unrealised PnL if negative.
  Liquidation price: the venue's inverse rule (``binance_coinm``,
  ``bybit_inverse``) in cross mode with the shipped BTC tiers and the wallet's
  BTC balance; a short its BTC covers has none (``inf``). The clock walks the
  COIN-M hourly closes and liquidates as for linear perps (penalty
  ``liquidation_fee_rate * contracts * size / price`` BTC, capped at what the
  wallet has left).
- Funding: at each real settlement of the venue's own inverse series
  (binance BTCUSD_PERP for COIN-M, bybit BTCUSD for Bybit, whose rows cover
  2023-01 .. 2024-07 only) the open position receives ``-F / mark * rate``
  BTC, mark = the COIN-M close at the instant (``inverse_fundings``).
- Bybit's UNIFIED wallet also tells the spot BTC's collateral value
  (``collateral_tiers``, default ``fundarb.config.BYBIT_BTC_COLLATERAL_EXAMPLE``;
  ``fundarb.core.liquidation.collateral_value``): reported by the wallet
  endpoint only, the linear perp's funds check still counts USDT alone.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fundarb.config import BYBIT_BTC_COLLATERAL_EXAMPLE, VenueConfig
from fundarb.core.book import margin_buffer
from fundarb.core.liquidation import CROSS, ISOLATED, MarginRule, NotionalBeyondTiers, collateral_value
from fundarb.core.model import Quote
from fundarb.data.margin_tiers import shipped_rule
from fundarb.sim.models import SlippageModel

SPOT, PERP, INVERSE = "spot", "perp", "inverse"
BUY, SELL = "buy", "sell"
MARKET, LIMIT = "market", "limit"
# order states, in the emulator's neutral words; the venues print their own
NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED = "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"
OPEN_STATES = (NEW, PARTIALLY_FILLED)
EPS = 1e-12


@dataclass(frozen=True)
class MarketSpec:
    """One tradable market of one venue: its wallet, steps and cost models."""

    venue: str  # the ccxt id whose routes trade it
    kind: str  # SPOT or PERP
    wallet: str
    tick: float
    step: float
    min_notional: float
    costs: VenueConfig  # maker/taker fees, slippage, liquidation penalty
    base: str = "BTC"
    quote: str = "USDT"
    margin: MarginRule | None = None  # a perp's liquidation rule and tiers
    contract_size: float = 0.0  # an inverse perp: USD face of one contract (qty and step in contracts)
    settle: str = ""  # the asset its PnL, fees and funding settle in ('': the quote)
    fee_in_quote: bool = False  # spot: the fee is charged in the quote on buys too (Coinbase, Kraken)

    @property
    def settle_asset(self) -> str:
        """The asset its PnL, fees, funding and margin are in: the quote, or an inverse perp's coin."""
        return self.settle or self.quote

    def worth(self, qty: float, price: float, rate: float = 1.0) -> float:
        """``rate`` x what ``qty`` at ``price`` is worth in the settle asset: qty * price,
        or for an inverse perp contracts * size / price (evaluated left to right)."""
        if self.contract_size:
            return rate * qty * self.contract_size / price
        return rate * qty * price


# Fees: Binance spot 0.1%/0.1% and USD-M 0.02%/0.05% as sims/spot_perp.toml;
# Bybit's published non-VIP rates (spot 0.1%/0.1%, linear 0.02%/0.055%).
# Slippage: VenueConfig defaults (half spread 0.1..0.5 bp, 0.5 bp per BTC).
# Maintenance margin: each venue's BTCUSDT tiers from the shipped snapshot
# (Binance brackets from 0.4%; Bybit risk limit tier 1, 0.5%).
MARKETS: dict[tuple[str, str], MarketSpec] = {
    ("binance", SPOT): MarketSpec("binance", SPOT, "binance", 0.01, 0.00001, 5.0,
                                  VenueConfig("binance", "BTC/USDT", taker_fee=0.001, maker_fee=0.001)),
    ("binanceusdm", PERP): MarketSpec("binanceusdm", PERP, "binanceusdm", 0.1, 0.001, 100.0,
                                      VenueConfig("binanceusdm", "BTC/USDT:USDT", taker_fee=0.0005, maker_fee=0.0002),
                                      margin=shipped_rule("binanceusdm", "BTC/USDT:USDT")),
    ("bybit", SPOT): MarketSpec("bybit", SPOT, "bybit", 0.01, 0.000001, 1.0,
                                VenueConfig("bybit", "BTC/USDT", taker_fee=0.001, maker_fee=0.001)),
    ("bybit", PERP): MarketSpec("bybit", PERP, "bybit", 0.1, 0.001, 5.0,
                                VenueConfig("bybit", "BTC/USDT:USDT", taker_fee=0.00055, maker_fee=0.0002),
                                margin=shipped_rule("bybit", "BTC/USDT:USDT")),
    # Inverse perps, after the others (each market's slippage seed is its place in this table).
    # Fees: Binance COIN-M's and Bybit inverse's published non-VIP rates (0.02% maker,
    # 0.05% / 0.055% taker). Tiers: the shipped BTC tables (COIN-M bracket 1: 0.4% up to
    # 50 BTC; Bybit inverse base risk limit: 0.5% up to 150 BTC).
    ("binancecoinm", INVERSE): MarketSpec("binancecoinm", INVERSE, "binancecoinm", 0.1, 1.0, 0.0,
                                          VenueConfig("binancecoinm", "BTC/USD:BTC", taker_fee=0.0005, maker_fee=0.0002),
                                          "BTC", "USD", margin=shipped_rule("binancecoinm", "BTC/USD:BTC"),
                                          contract_size=100.0, settle="BTC"),
    ("bybit", INVERSE): MarketSpec("bybit", INVERSE, "bybit", 0.5, 1.0, 0.0,
                                   VenueConfig("bybit", "BTC/USD:BTC", taker_fee=0.00055, maker_fee=0.0002),
                                   "BTC", "USD", margin=shipped_rule("bybit", "BTC/USD:BTC"),
                                   contract_size=1.0, settle="BTC"),
    # Hyperliquid's BTC perpetual (ccxt BTC/USDC:USDC): margined, settled and quoted in USDC, so its
    # wallet holds USDC. Fees: Hyperliquid's published base (non-VIP) perp rates, 0.045% taker and
    # 0.015% maker. Lot 0.00001 BTC (szDecimals 5); prices of at most 5 significant figures, which for
    # BTC above 10,000 is a whole dollar (tick 1); minimum order value 10 USDC. Liquidation goes to
    # the book as a market order: its penalty here is the taker fee (what is left stays with the
    # trader, as the venue's docs say). Its price: the stand-in Binance USD-M closes (server.py).
    ("hyperliquid", PERP): MarketSpec("hyperliquid", PERP, "hyperliquid", 1.0, 0.00001, 10.0,
                                      VenueConfig("hyperliquid", "BTC/USDC:USDC", taker_fee=0.00045,
                                                  maker_fee=0.00015, liquidation_fee_rate=0.00045),
                                      quote="USDC", margin=shipped_rule("hyperliquid", "BTC/USDC:USDC")),
    # Spot venues served from modules of their own, their BTC/USDT markets (prices: Binance's spot
    # closes as the stand-in series; see each module). Venue metadata, not market data. Coinbase
    # Advanced BTC-USDT: tick 0.01, lot 0.00000001, minimum order 1 USDT, the lowest fee tier
    # 0.60% taker / 0.40% maker. Kraken Pro XBTUSDT: tick 0.1, lot 0.00000001 (minimum volume
    # 0.00005 BTC, checked by its module), minimum cost 0.5 USDT, 0.40% taker / 0.25% maker. Both
    # charge the fee in the quote.
    ("coinbase", SPOT): MarketSpec("coinbase", SPOT, "coinbase", 0.01, 0.00000001, 1.0,
                                   VenueConfig("coinbase", "BTC/USDT", taker_fee=0.006, maker_fee=0.004),
                                   fee_in_quote=True),
    ("kraken", SPOT): MarketSpec("kraken", SPOT, "kraken", 0.1, 0.00000001, 0.5,
                                 VenueConfig("kraken", "BTC/USDT", taker_fee=0.004, maker_fee=0.0025),
                                 fee_in_quote=True),
}
WALLETS = ("binance", "binanceusdm", "bybit", "bybit:FUND", "binancecoinm", "hyperliquid", "coinbase", "kraken")
# each venue's default for a new BTC perp account (Hyperliquid: the emulator's choice, 20x; set_leverage sets it)
DEFAULT_LEVERAGE = {"binanceusdm": 20, "bybit": 10, "hyperliquid": 20}
MAX_LEVERAGE = {"binanceusdm": 125, "bybit": 100, "hyperliquid": 40}
# inverse perps by the venue whose routes trade them: default and highest leverage, and
# the key of the venue's own real settlements (``settlements(key, after, upto)``)
INVERSE_VENUES = ("binancecoinm", "bybit")
INVERSE_DEFAULT_LEVERAGE = {"binancecoinm": 20, "bybit": 10}
INVERSE_MAX_LEVERAGE = {"binancecoinm": 125, "bybit": 100}
INVERSE_FUNDING_KEY = {"binancecoinm": "binancecoinm", "bybit": "bybit:inverse"}


class AccountError(Exception):
    """A refusal; ``reason`` is one of: insufficient, duplicate, unknown_order,
    min_notional, bad_param, limit (an inverse position beyond the shipped
    margin tiers). The routes turn it into the venue's code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class Order:
    id: str
    client_id: str
    venue: str
    kind: str
    side: str
    type: str
    qty: float
    price: float | None  # limit price; None for market
    time_in_force: str
    reduce_only: bool
    created_ms: int
    updated_ms: int
    status: str = NEW
    filled: float = 0.0
    cost: float = 0.0  # sum of qty * price over fills
    fee: float = 0.0
    fee_asset: str = ""
    reserved: float = 0.0  # spot: asset locked; perp: order initial margin (USDT)
    quote_qty: float | None = None  # a spot market buy sized in quote (Bybit marketUnit=quoteCoin)
    liquidation: bool = False  # the venue's forced close of a position
    base_value: float = 0.0  # inverse: the BTC its fills were worth, sum of contracts * size / price (cumBase, unrounded)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATES

    @property
    def limit(self) -> float:
        """The price of a limit order (the ones that rest and reserve)."""
        return _limit(self.price)

    @property
    def remaining(self) -> float:
        return max(self.qty - self.filled, 0.0)

    @property
    def avg_price(self) -> float:
        # rounded past any price's precision: one fill at 37211.8 averages to 37211.8, not
        # the 37211.799999999996 that cost / filled leaves in binary floating point
        return round(self.cost / self.filled, 10) if self.filled > 0 else 0.0

    @property
    def sign(self) -> int:
        return 1 if self.side == BUY else -1

    def inverse_avg(self, contract_size: float) -> float:
        """An inverse order's average price: the harmonic mean of its fills (face / BTC)."""
        return round(self.filled * contract_size / self.base_value, 10) if self.base_value > 0 else 0.0


@dataclass
class Trade:
    id: str
    order_id: str
    client_id: str
    venue: str
    kind: str
    side: str
    qty: float
    price: float
    fee: float
    fee_asset: str
    fee_rate: float
    maker: bool
    time_ms: int
    realized_pnl: float = 0.0
    liquidation: bool = False  # the fill of a liquidation order


@dataclass(frozen=True)
class FundingPayment:
    """One settlement paid to (amount > 0) or by (amount < 0) an open position."""

    id: str
    venue: str
    time_ms: int  # the settlement instant
    qty: float  # signed position size at the instant
    rate: float
    mark: float  # perp close at the instant
    amount: float  # -qty * mark * rate, in 8-decimal units


@dataclass
class Position:
    qty: float = 0.0  # signed BTC (inverse perp: signed contracts); short < 0
    entry: float = 0.0
    margin: float = 0.0  # isolated collateral (USDT), part of the wallet balance
    leverage: int = 10
    realized: float = 0.0
    updated_ms: int = 0


@dataclass
class PerpBook:
    """The perps of one kind across the venues that trade them: PERP (linear,
    isolated, in the quote) or INVERSE (coin-margined, cross, in the coin).
    Each venue's position, the settlements paid to it and the instants
    already paid (a clock moved back and forward again must not repay)."""

    kind: str
    positions: dict[str, Position]
    max_leverage: dict[str, int]
    funding_key: dict[str, str]  # venue -> the key its own real settlements are asked by
    marks_between: Callable[[int, int], list[tuple[int, float]]] | None  # the closes its liquidation walks
    fundings: dict[str, list[FundingPayment]] = field(default_factory=dict)
    paid: dict[str, set[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, kind: str, default_leverage: dict[str, int], max_leverage: dict[str, int],
           funding_key: dict[str, str], marks_between: Callable[[int, int], list[tuple[int, float]]] | None
           ) -> PerpBook:
        return cls(kind, {venue: Position(leverage=lev) for venue, lev in default_leverage.items()}, max_leverage,
                   funding_key, marks_between, {venue: [] for venue in default_leverage},
                   {venue: set() for venue in default_leverage})


@dataclass
class Wallet:
    total: dict[str, float] = field(default_factory=dict)
    locked: dict[str, float] = field(default_factory=dict)  # spot orders

    def get(self, asset: str) -> float:
        return self.total.get(asset, 0.0)

    def add(self, asset: str, amount: float) -> None:
        self.total[asset] = money(self.total.get(asset, 0.0) + amount)

    def lock(self, asset: str, amount: float) -> None:
        self.locked[asset] = money(self.locked.get(asset, 0.0) + amount)


def money(x: float) -> float:
    """Balances move in 8-decimal units, as both venues book them: every cash,
    fee and PnL amount is rounded once, where it is booked, so what the
    endpoints print (8 decimals) is exactly what the account holds."""
    return round(x, 8)


def floor_step(x: float, step: float) -> float:
    return round(math.floor(x / step + 1e-9) * step, 12)


def round_tick(price: float, tick: float, up: bool) -> float:
    n = price / tick
    return round((math.ceil(n - 1e-9) if up else math.floor(n + 1e-9)) * tick, 10)


# what an AccountEvent says happened (the order ones are Binance's execution types)
TRADE, BALANCE, FUNDING = "TRADE", "BALANCE", "FUNDING"


@dataclass(frozen=True)
class AccountEvent:
    """One change, told to ``Accounts.listeners`` while the account lock is
    held. ``order`` and ``trade`` are the live objects: read them in the
    listener (a later step of the same operation changes the order)."""

    what: str  # NEW, TRADE, CANCELED, EXPIRED (an order), BALANCE (a wallet) or FUNDING (a settlement paid)
    venue: str  # the ccxt id whose routes trade the wallet
    kind: str  # SPOT or PERP ('' for a deposit or transfer)
    wallet: str
    time_ms: int
    order: Order | None = None
    trade: Trade | None = None
    reason: str = "ORDER"  # BALANCE: ORDER, DEPOSIT, TRANSFER or FUNDING_FEE
    traded: bool = False  # BALANCE: a fill or a settlement moved money (or a position)
    funding: FundingPayment | None = None  # FUNDING: the payment


# wallet -> the venue whose private streams tell its changes
WALLET_VENUE = {"binance": "binance", "binanceusdm": "binanceusdm", "bybit": "bybit", "bybit:FUND": "bybit",
                "binancecoinm": "binancecoinm", "hyperliquid": "hyperliquid", "coinbase": "coinbase", "kraken": "kraken"}


ID_EPOCH_S = 1_704_067_200  # 2024-01-01T00:00:00Z


class Accounts:
    """Every wallet, order and trade of the emulator. Thread-safe: the test
    thread funds accounts and moves the clock while the server thread trades.

    ``price_at(kind, now_ms)`` is the real close of the spot or perp market at
    ``now_ms``; ``now_ms()`` the emulator's now. ``settlements(venue, after,
    upto)``: the venue's real (time_ms, rate) settlements in (after, upto],
    ascending; ``marks_between(after, upto)``: the real (close_ms, perp close)
    hours in (after, upto], ascending. Without them no funding is paid and
    liquidation looks at the mark at the new now only. Inverse perps:
    ``price_at(INVERSE, ms)`` (the COIN-M close), ``settlements`` asked with
    ``INVERSE_FUNDING_KEY[venue]``, ``inverse_marks_between(after, upto)``
    the COIN-M closes crossed."""

    def __init__(self, price_at: Callable[[str, int], float], now_ms: Callable[[], int], seed: int = 0, *,
                 settlements: Callable[[str, int, int], list[tuple[int, float]]] | None = None,
                 marks_between: Callable[[int, int], list[tuple[int, float]]] | None = None,
                 inverse_marks_between: Callable[[int, int], list[tuple[int, float]]] | None = None) -> None:
        self._price_at, self._now_ms = price_at, now_ms
        self._settlements = settlements
        # the perps by kind, in the order the walk takes their steps at one instant (linear first)
        self.perps = {
            PERP: PerpBook.of(PERP, DEFAULT_LEVERAGE, MAX_LEVERAGE, {v: v for v in DEFAULT_LEVERAGE}, marks_between),
            # inverse perps, by the venue whose routes trade them: positions in signed contracts, settlements in BTC
            INVERSE: PerpBook.of(INVERSE, INVERSE_DEFAULT_LEVERAGE, INVERSE_MAX_LEVERAGE, INVERSE_FUNDING_KEY,
                                 inverse_marks_between),
        }
        self.positions, self.fundings = self.perps[PERP].positions, self.perps[PERP].fundings
        self.inverse_positions, self.inverse_fundings = self.perps[INVERSE].positions, self.perps[INVERSE].fundings
        # Bybit UNIFIED: (up to BTC, collateral value ratio) of spot BTC (reported by the wallet endpoint)
        self.collateral_tiers: tuple[tuple[float, float], ...] = BYBIT_BTC_COLLATERAL_EXAMPLE
        self._clock_ms = now_ms()  # the clock time the walk has reached
        self._lock = threading.RLock()
        self.wallets = {name: Wallet() for name in WALLETS}
        self.orders: dict[tuple[str, str], list[Order]] = {key: [] for key in MARKETS}
        self.trades: dict[tuple[str, str], list[Trade]] = {key: [] for key in MARKETS}
        self.deposits: dict[str, dict[str, float]] = {name: {} for name in WALLETS}
        # ids go on from one emulator start to the next, as a venue's never repeat:
        # numbered from the wall clock's seconds since 2024 (10,000 ids a second)
        self._seq = max(0, int(time.time()) - ID_EPOCH_S) * 10_000
        # told every change (AccountEvent), under the lock; a failing listener never stops trading
        self.listeners: list[Callable[[AccountEvent], None]] = []
        self.listener_errors: list[BaseException] = []
        # user-data stream keys (Binance listenKey): key -> venue; one live key per venue
        self.listen_keys: dict[str, str] = {}
        # API keys the signed endpoints accept; None: any key (the HMAC is never checked)
        self.api_keys: set[str] | None = None
        seeds = np.random.SeedSequence(seed).spawn(len(MARKETS))
        self._slippage = {
            key: SlippageModel(spec.costs.half_spread_bp_min, spec.costs.half_spread_bp_max,
                               spec.costs.impact_bp_per_btc, np.random.default_rng(s))
            for (key, spec), s in zip(MARKETS.items(), seeds)
        }

    # ------------------------------------------------------------ set-up by tests
    def fund(self, wallet: str, asset: str, amount: float) -> None:
        """Deposit ``amount`` of ``asset`` (negative withdraws)."""
        if wallet not in self.wallets:
            raise ValueError(f"unknown wallet {wallet!r} (known: {', '.join(WALLETS)})")
        if not math.isfinite(amount):
            raise ValueError(f"deposit must be finite, got {amount}")
        with self._lock:
            self.wallets[wallet].add(asset, float(amount))
            dep = self.deposits[wallet]
            dep[asset] = dep.get(asset, 0.0) + float(amount)
            self._balance_event(wallet, "", "DEPOSIT", False)

    # ------------------------------------------------------------ events
    def _emit(self, event: AccountEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - a stream's bug must not undo a booked trade
                self.listener_errors.append(exc)

    def _order_event(self, what: str, order: Order, trade: Trade | None = None) -> None:
        if self.listeners:
            self._emit(AccountEvent(what, order.venue, order.kind, MARKETS[(order.venue, order.kind)].wallet,
                                    order.updated_ms, order, trade))

    def _balance_event(self, wallet: str, kind: str, reason: str, traded: bool, time_ms: int | None = None) -> None:
        if self.listeners:
            self._emit(AccountEvent(BALANCE, WALLET_VENUE[wallet], kind, wallet,
                                    self._now_ms() if time_ms is None else time_ms, reason=reason, traded=traded))

    # ------------------------------------------------------------ user-data stream keys
    def open_listen_key(self, venue: str) -> str:
        """The venue's live listenKey, made on first use (Binance answers the
        active key again while it lives)."""
        import uuid

        with self._lock:
            for key, owner in self.listen_keys.items():
                if owner == venue:
                    return key
            key = uuid.uuid4().hex + uuid.uuid4().hex
            self.listen_keys[key] = venue
            return key

    def listen_key_venue(self, key: str | None) -> str | None:
        with self._lock:
            return self.listen_keys.get(key or "")

    def close_listen_key(self, venue: str, key: str | None = None) -> bool:
        with self._lock:
            hit = [k for k, v in self.listen_keys.items() if v == venue and (key is None or k == key)]
            for k in hit:
                del self.listen_keys[k]
            return bool(hit)

    # ------------------------------------------------------------ views
    def spec(self, venue: str, kind: str) -> MarketSpec:
        try:
            return MARKETS[(venue, kind)]
        except KeyError:
            raise AccountError("bad_param", f"{venue} has no {kind} market") from None

    def mark(self, venue: str, kind: str = PERP) -> float:
        """The perp's mark now: the real close of the perp of ``kind`` (INVERSE: the COIN-M close)."""
        return self._price_at(kind, self._now_ms())

    def mark_at(self, time_ms: int, kind: str = PERP) -> float:
        """The perp mark (the real close of the perp of ``kind``) at ``time_ms``."""
        return self._price_at(kind, time_ms)

    def position(self, venue: str, kind: str = PERP) -> Position:
        """The venue's perp position of ``kind``; INVERSE: ``qty`` signed contracts,
        ``entry`` the harmonic mean of the fills, ``realized`` BTC."""
        return self.perps[kind].positions[venue]

    def unrealized(self, venue: str) -> float:
        pos = self.positions[venue]
        return pos.qty * (self.mark(venue) - pos.entry) if pos.qty else 0.0

    def order_margin(self, venue: str) -> float:
        key = (venue, PERP)
        return sum(o.reserved for o in self.orders.get(key, []) if o.is_open)

    def available(self, wallet: str, asset: str) -> float:
        """What a new order or transfer may use: total - locked by spot orders
        - (the margin asset of a perp wallet: USDT, Hyperliquid's USDC) position collateral and order margin."""
        with self._lock:
            w = self.wallets[wallet]
            free = w.get(asset) - w.locked.get(asset, 0.0)
            if wallet in self.positions and asset == MARKETS[(wallet, PERP)].settle_asset:
                free -= self.positions[wallet].margin + self.order_margin(wallet)
            for venue in INVERSE_VENUES:  # the BTC an inverse perp's margin holds (cross: its whole wallet)
                spec = MARKETS[(venue, INVERSE)]
                if spec.wallet == wallet and asset == spec.settle and self._inverse_busy(venue):
                    free -= self.inverse_initial_margin(venue) + self.inverse_order_margin(venue)
                    free += min(self.inverse_unrealized(venue), 0.0)
            return free

    def margin_rule(self, venue: str, kind: str = PERP) -> MarginRule:
        """The liquidation rule and tiers of the venue's perp of ``kind`` (PERP or INVERSE)."""
        rule = MARKETS[(venue, kind)].margin
        assert rule is not None  # every perp market of MARKETS has one
        return rule

    def liquidation(self, venue: str) -> float:
        """The position's liquidation price by the venue's rule, isolated: the collateral is the wallet."""
        pos = self.positions[venue]
        return self.margin_rule(venue).liquidation_price(pos.margin, pos.qty, pos.entry, ISOLATED)

    def maintenance(self, venue: str) -> float:
        """The maintenance margin the liquidation price holds the position to
        (Binance: at the mark; Bybit isolated: at the entry)."""
        pos = self.positions[venue]
        return self.margin_rule(venue).maintenance_for(pos.qty, pos.entry, self.mark(venue), ISOLATED)

    def buffer(self, venue: str) -> float:
        pos = self.positions[venue]
        return margin_buffer(self.liquidation(venue), self.mark(venue), pos.qty)

    def funding(self, venue: str) -> float:
        """Funding received (positive) less paid, over the account's life."""
        with self._lock:
            return sum(f.amount for f in self.fundings[venue])

    def funding_list(self, venue: str, kind: str = PERP) -> list[FundingPayment]:
        """The settlements paid to the venue's perp of ``kind`` (INVERSE: in BTC), oldest first."""
        with self._lock:
            return list(self.perps[kind].fundings[venue])

    def fees_paid(self, wallet: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (venue, kind), trades in self.trades.items():
            if MARKETS[(venue, kind)].wallet == wallet:
                for t in trades:
                    out[t.fee_asset] = out.get(t.fee_asset, 0.0) + t.fee
        return out

    # ------------------------------------------------------------ inverse perps: views (BTC unless said)
    def inverse_face(self, venue: str) -> float:
        """Signed USD face of the position: contracts x contract size."""
        return self.inverse_positions[venue].qty * MARKETS[(venue, INVERSE)].contract_size

    def inverse_unrealized(self, venue: str, mark: float | None = None) -> float:
        """F * (1/EP - 1/mark) BTC (0 while flat)."""
        pos = self.inverse_positions[venue]
        if not pos.qty:
            return 0.0
        m = self.mark(venue, INVERSE) if mark is None else mark
        return self.inverse_face(venue) * (1.0 / pos.entry - 1.0 / m)

    def inverse_notional(self, venue: str, mark: float | None = None) -> float:
        """|F| / mark BTC: the position's value in BTC at the mark."""
        m = self.mark(venue, INVERSE) if mark is None else mark
        return abs(self.inverse_face(venue)) / m if self.inverse_positions[venue].qty else 0.0

    def inverse_initial_margin(self, venue: str) -> float:
        """|F| / mark / leverage BTC."""
        pos = self.inverse_positions[venue]
        return self.inverse_notional(venue) / pos.leverage if pos.qty else 0.0

    def inverse_order_margin(self, venue: str) -> float:
        return sum(o.reserved for o in self.orders[(venue, INVERSE)] if o.is_open)

    def _inverse_busy(self, venue: str) -> bool:
        return bool(self.inverse_positions[venue].qty) or any(o.is_open for o in self.orders[(venue, INVERSE)])

    def inverse_wallet(self, venue: str) -> float:
        """The BTC balance that margins the position (cross): the wallet's BTC."""
        spec = MARKETS[(venue, INVERSE)]
        return self.wallets[spec.wallet].get(spec.settle)

    def inverse_liquidation(self, venue: str) -> float:
        """The venue's inverse rule, cross, with the wallet's BTC: nan while flat, inf for a covered short."""
        return self.margin_rule(venue, INVERSE).liquidation_price(
            self.inverse_wallet(venue), self.inverse_face(venue), self.inverse_positions[venue].entry, CROSS)

    def inverse_maintenance(self, venue: str) -> float:
        """Maintenance margin (BTC) at the mark, the tier of the BTC notional."""
        return self.margin_rule(venue, INVERSE).maintenance_for(
            self.inverse_face(venue), self.inverse_positions[venue].entry, self.mark(venue, INVERSE), CROSS)

    def collateral_btc(self, wallet: str = "bybit") -> float:
        """The BTC a unified account counts of its BTC balance after the tiered collateral ratio."""
        return collateral_value(self.wallets[wallet].get("BTC"), self.collateral_tiers)

    # ------------------------------------------------------------ ids
    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _order_id(self, venue: str, n: int) -> str:
        # Binance: integers; Bybit: UUID-shaped strings (deterministic here)
        if venue == "bybit":
            return f"{n:08x}-e0e0-4000-8000-{n:012x}"
        return str(4_000_000_000 + n)

    def _trade_id(self, venue: str, n: int) -> str:
        if venue == "bybit":
            return f"{n:08x}-7ade-5000-9000-{n:012x}"
        return str(300_000_000 + n)

    # ------------------------------------------------------------ orders
    def find(self, venue: str, kind: str, order_id: str | None = None, client_id: str | None = None) -> Order:
        with self._lock:
            for o in reversed(self.orders[(venue, kind)]):
                if (order_id is not None and o.id == str(order_id)) or (
                        order_id is None and client_id is not None and o.client_id == client_id):
                    return o
        raise AccountError("unknown_order", f"no order id={order_id} clientOrderId={client_id}")

    def open_orders(self, venue: str, kind: str) -> list[Order]:
        with self._lock:
            return [o for o in self.orders[(venue, kind)] if o.is_open]

    def all_orders(self, venue: str, kind: str) -> list[Order]:
        with self._lock:
            return list(self.orders[(venue, kind)])

    def trade_list(self, venue: str, kind: str) -> list[Trade]:
        with self._lock:
            return list(self.trades[(venue, kind)])

    def place(self, venue: str, kind: str, side: str, type_: str, qty: float, price: float | None = None, *,
              client_id: str | None = None, time_in_force: str = "GTC", reduce_only: bool = False,
              quote_qty: float | None = None, fill_ratio: float = 1.0) -> Order:
        """Validate, book and (market or marketable limit) fill an order.
        ``fill_ratio`` < 1: only that share of the quantity fills now (the
        partial_fill fault); a market order's rest expires, a limit's rests."""
        spec = self.spec(venue, kind)
        if side not in (BUY, SELL) or type_ not in (MARKET, LIMIT):
            raise AccountError("bad_param", f"side {side!r} type {type_!r}")
        if type_ == LIMIT and (price is None or not price > 0):
            raise AccountError("bad_param", "a limit order needs a positive price")
        with self._lock:
            now = self._now_ms()
            if now > self._clock_ms:  # the clock moved and its listener has not run yet: what it crossed comes first
                self._walk(self._clock_ms, now)
                self._clock_ms = now
            if client_id is not None:
                clash = [o for o in self.orders[(venue, kind)] if o.client_id == client_id
                         and (venue in ("bybit", "hyperliquid") or o.is_open)]
                if clash:
                    raise AccountError("duplicate", client_id)
            touch = self._fill_price(spec, side, qty if quote_qty is None else 0.0, now)
            if quote_qty is not None:  # a quote-sized market buy: the base it buys at the touch
                qty = floor_step(quote_qty / touch, spec.step)
            if not qty > 0:
                raise AccountError("bad_param", f"quantity must be positive, got {qty}")
            if spec.contract_size and abs(qty - floor_step(qty, spec.step)) > 1e-9:
                raise AccountError("bad_param", f"Precision is over the maximum defined: {qty} is not whole contracts")
            ref = _limit(price) if type_ == LIMIT else touch
            if qty * ref < spec.min_notional and not reduce_only:
                raise AccountError("min_notional", f"{qty * ref:.2f} < {spec.min_notional}")
            crosses = type_ == MARKET or (touch <= _limit(price) if side == BUY else touch >= _limit(price))
            n = self._next()
            oid = self._order_id(venue, n)
            order = Order(oid, client_id or f"emu-{venue}-{n}", venue, kind, side, type_, qty, price,
                          time_in_force if type_ == LIMIT else "GTC", reduce_only, now, now,
                          quote_qty=quote_qty)
            now_qty = floor_step(qty * fill_ratio, spec.step) if fill_ratio < 1 else qty
            if not crosses:
                now_qty = 0.0
            self._check_funds(spec, order, touch, now_qty)
            self.orders[(venue, kind)].append(order)
            self._order_event(NEW, order)
            if now_qty > 0:
                self._fill(spec, order, now_qty, touch, maker=False, now=now)
            if order.remaining > EPS:
                if type_ == MARKET or time_in_force in ("IOC", "FOK"):
                    order.status = EXPIRED
                    self._order_event(EXPIRED, order)
                else:
                    self._reserve(spec, order)
            self._balance_event(spec.wallet, kind, "ORDER", now_qty > 0)
            return order

    def cancel(self, venue: str, kind: str, order_id: str | None = None, client_id: str | None = None) -> Order:
        with self._lock:
            order = self.find(venue, kind, order_id, client_id)
            if not order.is_open:
                raise AccountError("unknown_order", f"order {order.id} is {order.status}")
            spec = self.spec(venue, kind)
            self._release(spec, order)
            order.status = CANCELED
            order.updated_ms = self._now_ms()
            self._order_event(CANCELED, order)
            self._balance_event(spec.wallet, kind, "ORDER", False)
            return order

    def set_leverage(self, venue: str, leverage: int, kind: str = PERP) -> Position:
        """The leverage of the venue's perp of ``kind`` (PERP or INVERSE), 1 .. the venue's highest."""
        book = self.perps[kind]
        if venue not in book.positions:
            raise AccountError("bad_param", f"{venue} has no {'inverse ' if kind == INVERSE else ''}perp")
        if not 1 <= leverage <= book.max_leverage[venue]:
            raise AccountError("bad_param", f"leverage {leverage} outside 1..{book.max_leverage[venue]}")
        with self._lock:
            book.positions[venue].leverage = int(leverage)
            return book.positions[venue]

    def transfer(self, src: str, dst: str, asset: str, amount: float) -> int:
        """Move ``amount`` between two wallets at once; returns a transfer id."""
        if src not in self.wallets or dst not in self.wallets or src == dst:
            raise AccountError("bad_param", f"transfer {src} -> {dst}")
        if not amount > 0:
            raise AccountError("bad_param", f"amount must be positive, got {amount}")
        with self._lock:
            if amount > self.available(src, asset) + 1e-9:
                raise AccountError("insufficient", f"{amount} {asset} > available in {src}")
            self.wallets[src].add(asset, -amount)
            self.wallets[dst].add(asset, amount)
            self._balance_event(src, "", "TRANSFER", False)
            self._balance_event(dst, "", "TRANSFER", False)
            return 100_000_000_000 + self._next()

    # ------------------------------------------------------------ the clock moved
    def on_clock(self, now_ms: int) -> list[Order]:
        """Walk the time the clock crossed (hourly marks: liquidations;
        settlements: funding; in time order), then fill resting limit orders
        the real close has reached (at their own price, as makers). Returns
        the orders that filled."""
        done = []
        with self._lock:
            if now_ms > self._clock_ms:
                self._walk(self._clock_ms, now_ms)
            self._clock_ms = now_ms
            for (venue, kind), orders in self.orders.items():
                resting = [o for o in orders if o.is_open and o.type == LIMIT]
                if not resting:
                    continue
                spec = MARKETS[(venue, kind)]
                price = self._price_at(kind, now_ms)
                filled = False
                for o in resting:
                    if (o.side == BUY and price <= o.limit) or (o.side == SELL and price >= o.limit):
                        self._release(spec, o)
                        self._fill(spec, o, o.remaining, o.limit, maker=True, now=now_ms)
                        done.append(o)
                        filled = True
                if filled:
                    self._balance_event(spec.wallet, kind, "ORDER", True)
        return done

    # ------------------------------------------------------------ funding and liquidation
    def _walk(self, after: int, upto: int) -> None:
        """Apply, in time order, what happened in (after, upto]: at each hourly
        close the liquidation check, at each real settlement the funding. At
        one instant the mark goes first (the simulator's P_MARK < P_FUNDING),
        and the linear perps' steps before the inverse ones (the perps' order)."""
        steps: list[tuple[int, int, str, str, float]] = []  # (time, 0 mark / 1 settlement, kind, venue, price / rate)
        for kind, book in self.perps.items():
            if self._settlements is not None:
                for venue, pos in book.positions.items():
                    if pos.qty:
                        steps += [(int(t), 1, kind, venue, float(rate))
                                  for t, rate in self._settlements(book.funding_key[venue], after, upto)
                                  if int(t) not in book.paid[venue]]
            if any(p.qty for p in book.positions.values()):
                marks = (book.marks_between(after, upto) if book.marks_between is not None
                         else [(upto, self._price_at(kind, upto))])
                steps += [(int(t), 0, kind, "", float(price)) for t, price in marks]
        steps.sort(key=lambda s: (s[0], s[1]))
        for t, what, kind, venue, x in steps:
            book = self.perps[kind]
            if what == 0:
                for v, pos in book.positions.items():
                    if pos.qty:
                        self._check_liquidation(kind, v, x, t)
            elif book.positions[venue].qty:
                book.paid[venue].add(t)
                self._settle(kind, venue, t, x)

    def _settle(self, kind: str, venue: str, t: int, rate: float) -> None:
        """Pay one settlement to the open position, at the perp's close at the
        instant as the mark: linear ``-q * mark * rate`` (the isolated collateral,
        part of the wallet, takes it), inverse ``-F / mark * rate`` BTC into the wallet."""
        book, spec = self.perps[kind], MARKETS[(venue, kind)]
        pos = book.positions[venue]
        mark = self._price_at(kind, t)
        if kind == INVERSE:
            amount = money(-self.inverse_face(venue) / mark * rate)
        else:
            amount = money(-pos.qty * mark * rate)
            pos.margin = money(pos.margin + amount)
        self.wallets[spec.wallet].add(spec.settle_asset, amount)
        n = self._next()
        pay = FundingPayment(self._trade_id(venue, n) if venue == "bybit" else str(8_000_000_000 + n),
                             venue, t, pos.qty, rate, mark, amount)
        book.fundings[venue].append(pay)
        if self.listeners:
            self._emit(AccountEvent(FUNDING, venue, kind, spec.wallet, t, funding=pay))
        self._balance_event(spec.wallet, kind, "FUNDING_FEE", True, t)

    def _check_liquidation(self, kind: str, venue: str, mark: float, t: int) -> None:
        """The simulator's rule: at a mark (the perp's hourly close) at or past
        the liquidation price, close everything at that price with the penalty
        fee, capped at what is left of what backs the position (linear: its
        isolated collateral; inverse, cross: the wallet's BTC). A covered
        inverse short has no liquidation price (inf)."""
        pos, spec = self.perps[kind].positions[venue], MARKETS[(venue, kind)]
        liq = self.inverse_liquidation(venue) if kind == INVERSE else self.liquidation(venue)
        if not math.isfinite(liq) or not ((pos.qty < 0 and mark >= liq) or (pos.qty > 0 and mark <= liq)):
            return
        for o in [o for o in self.orders[(venue, kind)] if o.is_open]:  # the venue cancels them first
            self._release(spec, o)
            o.status, o.updated_ms = CANCELED, t
            self._order_event(CANCELED, o)
        price = round_tick(liq, spec.tick, up=pos.qty < 0)
        qty, side = abs(pos.qty), (BUY if pos.qty < 0 else SELL)
        w, asset = self.wallets[spec.wallet], spec.settle_asset
        backing = w.get(asset) if kind == INVERSE else pos.margin  # read before the trade releases the collateral
        n = self._next()
        binance = venue != "bybit"
        order = Order(self._order_id(venue, n), f"autoclose-{t}{n:07d}" if binance else "", venue, kind, side,
                      LIMIT if binance else MARKET, qty, price, "IOC", False, t, t, liquidation=True)
        self.orders[(venue, kind)].append(order)
        pnl = self._trade(kind, venue, order.sign * qty, price, t)
        rate = spec.costs.liquidation_fee_rate
        fee = money(max(min(spec.worth(qty, price, rate), backing + pnl), 0.0))  # capped at what is left
        w.add(asset, pnl - fee)
        order.filled, order.cost, order.fee, order.fee_asset = qty, money(qty * price), fee, asset
        if spec.contract_size:
            order.base_value = spec.worth(qty, price)
        order.status = FILLED
        trade = Trade(self._trade_id(venue, self._next()), order.id, order.client_id, venue, kind, side, qty, price,
                      fee, asset, rate, False, t, pnl, liquidation=True)
        self.trades[(venue, kind)].append(trade)
        self._order_event(TRADE, order, trade)
        self._balance_event(spec.wallet, kind, "ORDER", True, t)

    # ------------------------------------------------------------ internals
    def _fill_price(self, spec: MarketSpec, side: str, qty: float, now: int) -> float:
        close = self._price_at(spec.kind, now)
        quote = Quote(now, spec.venue, close, close, 0.0, 0.0)  # mid only: the model draws the half spread
        sign = 1 if side == BUY else -1
        if spec.contract_size:  # the impact is per BTC: contracts x size / price
            qty = qty * spec.contract_size / close
        raw = self._slippage[(spec.venue, spec.kind)].price(quote, sign, qty)
        return round_tick(raw, spec.tick, up=side == BUY)

    def _opening(self, kind: str, venue: str, signed: float) -> float:
        """The part of a signed perp quantity (inverse: contracts) that opens or adds exposure."""
        q = self.perps[kind].positions[venue].qty
        if q == 0 or (q > 0) == (signed > 0):
            return abs(signed)
        return max(abs(signed) - abs(q), 0.0)

    def _check_funds(self, spec: MarketSpec, order: Order, touch: float, now_qty: float) -> None:
        """Refuse what the wallet cannot pay: the immediate fill at the touch
        plus what a resting remainder would lock. A perp: the opening part's
        initial margin at its price plus the taker fee of what fills now, in
        the settle asset (an inverse perp, cross: BTC, and the position must
        stay inside the shipped tiers)."""
        rest = order.qty - now_qty if order.type == LIMIT else 0.0
        if spec.kind == SPOT:
            if order.side == BUY:  # a fee charged in the quote is paid from it too
                taker, maker = (1 + spec.costs.taker_fee, 1 + spec.costs.maker_fee) if spec.fee_in_quote else (1, 1)
                need, asset = now_qty * touch * taker + rest * (order.price or 0.0) * maker, spec.quote
            else:
                need, asset = order.qty if order.type == LIMIT else now_qty, spec.base
        else:
            if order.reduce_only and self._opening(spec.kind, spec.venue, order.sign * order.qty) > EPS:
                raise AccountError("bad_param", "ReduceOnly Order is rejected")
            pos = self.perps[spec.kind].positions[spec.venue]
            opening = self._opening(spec.kind, spec.venue, order.sign * (now_qty + rest))
            px = touch if now_qty > 0 else (order.price or touch)
            need = spec.worth(opening, px) / pos.leverage + spec.worth(now_qty, touch, spec.costs.taker_fee)
            asset = spec.settle_asset
            if spec.kind == INVERSE and opening > 0:
                self._check_tiers(spec, abs(pos.qty + order.sign * (now_qty + rest)), px)
        avail = self.available(spec.wallet, asset)
        if need > avail + (1e-12 if spec.kind == INVERSE else 1e-9):
            raise AccountError("insufficient", f"needs {need:.8f} {asset}, available {avail:.8f}")

    def _check_tiers(self, spec: MarketSpec, contracts: float, px: float) -> None:
        """An inverse position of ``contracts`` at ``px`` must stay inside the shipped tiers (BTC notional)."""
        rule = self.margin_rule(spec.venue, spec.kind)
        after = spec.worth(contracts, px)
        try:
            rule.tier(after)
        except NotionalBeyondTiers:
            raise AccountError("limit", f"position of {after:.8f} BTC is beyond the margin tiers "
                                        f"(cap {rule.tiers[-1].cap:g} BTC)") from None

    def _reserve(self, spec: MarketSpec, order: Order) -> None:
        w = self.wallets[spec.wallet]
        if spec.kind == SPOT:
            if order.side == BUY:  # with its maker fee when the fee is charged in the quote
                order.reserved = money(order.remaining * order.limit * (1 + spec.costs.maker_fee if spec.fee_in_quote else 1))
                w.lock(spec.quote, order.reserved)
            else:
                order.reserved = order.remaining
                w.lock(spec.base, order.reserved)
        else:  # a perp: the opening part's initial margin at the limit, in the settle asset
            lev = self.perps[spec.kind].positions[spec.venue].leverage
            opening = self._opening(spec.kind, spec.venue, order.sign * order.remaining)
            order.reserved = money(spec.worth(opening, order.limit) / lev)

    def _release(self, spec: MarketSpec, order: Order) -> None:
        if spec.kind == SPOT and order.reserved:
            self.wallets[spec.wallet].lock(spec.quote if order.side == BUY else spec.base, -order.reserved)
        order.reserved = 0.0

    def _fill(self, spec: MarketSpec, order: Order, qty: float, price: float, maker: bool, now: int) -> Trade:
        rate = spec.costs.maker_fee if maker else spec.costs.taker_fee
        w = self.wallets[spec.wallet]
        pnl = 0.0
        if spec.kind == SPOT:
            value = money(qty * price)
            if order.side == BUY and spec.fee_in_quote:
                fee, fee_asset = money(rate * value), spec.quote
                w.add(spec.quote, -value - fee)
                w.add(spec.base, qty)
            elif order.side == BUY:
                fee, fee_asset = money(rate * qty), spec.base
                w.add(spec.quote, -value)
                w.add(spec.base, qty - fee)
            else:
                fee, fee_asset = money(rate * value), spec.quote
                w.add(spec.base, -qty)
                w.add(spec.quote, value - fee)
        else:  # a perp: the fee in the settle asset (inverse: rate x contracts x size / price), the realised PnL
            fee, fee_asset = money(spec.worth(qty, price, rate)), spec.settle_asset
            pnl = self._trade(spec.kind, spec.venue, order.sign * qty, price, now)
            w.add(fee_asset, pnl - fee)
            if spec.contract_size:
                order.base_value += spec.worth(qty, price)  # unrounded: the average is face / this
        order.filled = round(order.filled + qty, 12)
        order.cost = money(order.cost + qty * price)
        order.fee += fee
        order.fee_asset = fee_asset
        order.updated_ms = now
        order.status = FILLED if order.remaining <= EPS else PARTIALLY_FILLED
        trade = Trade(self._trade_id(spec.venue, self._next()), order.id, order.client_id, spec.venue, spec.kind,
                      order.side, qty, price, fee, fee_asset, rate, maker, now, pnl)
        self.trades[(spec.venue, spec.kind)].append(trade)
        self._order_event(TRADE, order, trade)
        return trade

    def _trade(self, kind: str, venue: str, signed: float, price: float, now: int) -> float:
        """Move the perp position of ``kind``; return the realised PnL in its settle asset."""
        return (self._trade_inverse if kind == INVERSE else self._trade_perp)(venue, signed, price, now)

    def _trade_perp(self, venue: str, signed: float, price: float, now: int) -> float:
        """Move the position; return the realised PnL (collateral moves inside the wallet)."""
        pos = self.positions[venue]
        pos.updated_ms = now
        q = pos.qty
        if q == 0 or (q > 0) == (signed > 0):
            new_q = q + signed
            pos.entry = (abs(q) * pos.entry + abs(signed) * price) / abs(new_q)
            pos.margin = money(pos.margin + abs(signed) * price / pos.leverage)
            pos.qty = new_q
            return 0.0
        closed = min(abs(signed), abs(q))
        pnl = money(closed * (price - pos.entry) * (1.0 if q > 0 else -1.0))
        pos.realized += pnl
        pos.margin = money(pos.margin - pos.margin * closed / abs(q))
        rest = abs(signed) - closed
        if rest > EPS:  # through zero: the rest opens at this price
            pos.qty = math.copysign(rest, signed)
            pos.entry = price
            pos.margin = money(rest * price / pos.leverage)
        else:
            pos.qty = round(q + signed, 12)
            if abs(pos.qty) < EPS:
                pos.qty, pos.entry, pos.margin = 0.0, 0.0, 0.0
        return pnl

    def _trade_inverse(self, venue: str, signed: float, price: float, now: int) -> float:
        """Move the inverse position by ``signed`` contracts at ``price``; return the
        realised PnL in BTC (``core.book``'s ``_trade_inverse``, in contracts):
        an opening part moves the entry to the harmonic mean of the faces, a
        reducing part realises face_closed * (1/entry - 1/price) for a long
        (the opposite for a short)."""
        pos, size = self.inverse_positions[venue], MARKETS[(venue, INVERSE)].contract_size
        pos.updated_ms = now
        q = pos.qty
        if q == 0 or (q > 0) == (signed > 0):
            new_q = q + signed
            btc = abs(q) * size / pos.entry + abs(signed) * size / price if q else abs(signed) * size / price
            pos.entry = abs(new_q) * size / btc
            pos.qty = new_q
            return 0.0
        closed = min(abs(signed), abs(q))
        pnl = money(closed * size * (1.0 / pos.entry - 1.0 / price) * (1.0 if q > 0 else -1.0))
        pos.realized = money(pos.realized + pnl)
        rest = abs(signed) - closed
        if rest > EPS:  # through zero: the rest opens at this price
            pos.qty = math.copysign(rest, signed)
            pos.entry = price
        else:
            pos.qty = round(q + signed, 12)
            if abs(pos.qty) < EPS:
                pos.qty, pos.entry = 0.0, 0.0
        return pnl


def _limit(price: float | None) -> float:
    assert price is not None, "a limit order has a price"
    return price
