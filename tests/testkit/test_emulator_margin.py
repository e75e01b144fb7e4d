"""The emulator's perp margin model through the REAL ccxt clients: funding at
the venues' real settlements and liquidation at a real price rise.

Expected numbers come from the shipped parquet files, not from the emulator:
each venue's own BTCUSDT settlements (binance for Binance USD-M, bybit for
Bybit), the Binance perp closes as the mark (the simulator's ``perp_close``
stand-in), each venue's isolated liquidation formula written out here with
its BTCUSDT tier (Binance bracket 1: 0.4%; Bybit risk limit tier 1: 0.5% of
the entry value) and the baseline ``VenueConfig`` (liquidation penalty
1.25%). Everything goes to 127.0.0.1.

The window, 2022-02-24: settlements at 08:00, 16:00 and 00:00 with rates of
both signs on both venues, and BTC rising from 35,892 (16:00 close) to over
38,000 by 21:00, about +7%: enough to liquidate a 20x short (liquidation
about +4.6% above entry on Binance, +4.5% on Bybit) before the next settlement.
"""

from __future__ import annotations

import asyncio
import faulthandler
import math

import ccxt.pro
import polars as pl
import pytest

from fundarb.config import VenueConfig
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR
from fundarb.data.margin_tiers import rule_from_ccxt_tiers, shipped_rule
from fundarb.testkit.emulator.accounts import MARKETS
from fundarb.testkit.emulator.harness import ms, trading_client
from fundarb.testkit.emulator.server import ccxt_config
from fundarb.testkit.emulator.ws import point_ccxt_pro, websockets

PERP_SYM = "BTC/USDT:USDT"
MS_H = 3_600_000
START_USDT = 10_000.0
QTY = 0.01
VENUES = ["binanceusdm", "bybit"]
SERIES = {"binanceusdm": "binance", "bybit": "bybit"}  # whose real settlements each venue pays
BASELINE = VenueConfig("baseline", PERP_SYM)  # liquidation_fee_rate 0.0125
STEP = 5.0  # bound of every single await in the stream tests


@pytest.fixture(autouse=True)
def hang_guard(loopback_only):
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    assert not loopback_only, f"a test tried to leave loopback: {loopback_only}"


@pytest.fixture(scope="module")
def history() -> dict[str, pl.DataFrame]:
    prices = pl.read_parquet(SHIPPED_DIR / PRICES_FILE).filter(
        (pl.col("venue") == "binance") & (pl.col("market") == "perp_linear") & (pl.col("symbol") == "BTCUSDT"))
    funding = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE).filter(pl.col("symbol") == "BTCUSDT")
    return {"closes": prices.select((pl.col("open_time_ms") + MS_H).alias("close_ms"), "close").sort("close_ms"),
            "funding": funding.select("venue", "funding_time_ms", "funding_rate").sort("funding_time_ms")}


def mark_at(history, t_ms: int) -> float:
    return history["closes"].filter(pl.col("close_ms") <= t_ms)["close"][-1]


def expected_funding(history, venue: str, qty: float, after_ms: int, upto_ms: int) -> list[tuple[int, float, float]]:
    """(time, rate, amount) of every real settlement in (after, upto] for a position of ``qty``:
    the amount is -qty * mark * rate in the venues' 8-decimal units."""
    rows = history["funding"].filter((pl.col("venue") == SERIES[venue]) & (pl.col("funding_time_ms") > after_ms)
                                     & (pl.col("funding_time_ms") <= upto_ms))
    out = []
    for t, rate in rows.select("funding_time_ms", "funding_rate").iter_rows():
        out.append((t, rate, round(-qty * mark_at(history, t) * rate, 8)))
    return out


def funding_seen(ex) -> list[tuple[int, float]]:
    """(time, amount received) as ccxt's fetch_funding_history reports it. ccxt 4.5.90 hands
    Bybit's execFee through as the amount, and Bybit's execFee is the funding as a FEE (positive
    when paid), so the amount received is minus ccxt's amount there; Binance's income is already
    signed as received."""
    sign = -1.0 if ex.id == "bybit" else 1.0
    rows = ex.fetch_funding_history(PERP_SYM, params={"startTime": ms("2021-07-01T00:00")} if ex.id != "bybit" else {})
    return [(r["timestamp"], sign * r["amount"] + 0.0) for r in rows]


def open_short(emulator, venue: str, when: str, leverage: int, qty: float = QTY):
    emulator.set_time(when)
    emulator.accounts.fund(venue, "USDT", START_USDT)
    ex = trading_client(emulator, venue)
    ex.set_leverage(leverage, PERP_SYM)
    ex.create_order(PERP_SYM, "market", "sell", qty, params={"clientOrderId": f"short-{ms(when)}"})
    return ex


def wallet_total(ex) -> float:
    """The wallet balance (collateral included, unrealised PnL not): Binance's walletBalance, Bybit's total."""
    bal = ex.fetch_balance()
    if ex.id == "bybit":
        return bal["USDT"]["total"]
    (usdt,) = [a for a in bal["info"]["assets"] if a["asset"] == "USDT"]
    return float(usdt["walletBalance"])


def assert_money_conserves(emulator, history, venue: str) -> None:
    """free + collateral + fees paid == deposits + realised + funding, to 1e-9; and the equity
    ccxt reads (free + collateral + unrealised) + fees == deposits + realised + funding + the
    unrealised PnL recomputed from the real close and the position."""
    acc = emulator.accounts
    pos = acc.position(venue)
    free, collateral = acc.available(venue, "USDT"), pos.margin
    fees = acc.fees_paid(venue).get("USDT", 0.0)
    booked = acc.deposits[venue]["USDT"] + pos.realized + acc.funding(venue)
    assert free + collateral + fees == pytest.approx(booked, abs=1e-9)
    assert collateral >= 0 and free >= -1e-9
    ex = trading_client(emulator, venue)
    bal = ex.fetch_balance()
    if venue == "bybit":
        (coin,) = [c for c in bal["info"]["result"]["list"][0]["coin"] if c["coin"] == "USDT"]
        equity = float(coin["equity"])
    else:
        equity = bal["USDT"]["total"]  # Binance: marginBalance = wallet + unrealised
    now = emulator.now_ns // 1_000_000
    unrealised = round(pos.qty * (mark_at(history, now) - pos.entry), 8) if pos.qty else 0.0
    assert equity + fees == pytest.approx(booked + unrealised, abs=1e-9)


# ----------------------------------------------------------------- funding

@pytest.mark.parametrize("venue", VENUES)
def test_a_short_held_across_three_settlements_receives_the_real_rates_times_the_real_marks(emulator, history, venue):
    ex = open_short(emulator, venue, "2022-02-24T07:30", leverage=2)
    (trade,) = ex.fetch_my_trades(PERP_SYM)
    fee, entry = trade["fee"]["cost"], trade["price"]
    before = wallet_total(ex)
    assert before == pytest.approx(START_USDT - fee, abs=1e-9)
    for hour in range(17):  # 07:30 -> 00:30 the next day, an hour at a time
        emulator.advance(MS_H * 1_000_000)
        if hour % 4 == 0:
            assert_money_conserves(emulator, history, venue)

    expected = expected_funding(history, venue, -QTY, ms("2022-02-24T07:30"), ms("2022-02-25T00:30"))
    assert [t for t, _, _ in expected] == [ms("2022-02-24T08:00"), ms("2022-02-24T16:00"), ms("2022-02-25T00:00")]
    assert len({rate for _, rate, _ in expected}) == 3 and min(r for _, r, _ in expected) < 0 < max(
        r for _, r, _ in expected)  # three different real rates, of both signs
    seen = funding_seen(ex)
    assert [t for t, _ in seen] == [t for t, _, _ in expected]
    for (_, got), (_, _, want) in zip(seen, expected):
        assert got == pytest.approx(want, abs=1e-12)
    if venue == "bybit":  # the rate rides along in Bybit's row
        assert [r["rate"] for r in ex.fetch_funding_history(PERP_SYM)] == [rate for _, rate, _ in expected]
    total = sum(amount for _, _, amount in expected)
    assert wallet_total(ex) == pytest.approx(before + total, abs=1e-9)
    (pos,) = ex.fetch_positions([PERP_SYM])
    assert pos["contracts"] == QTY and pos["entryPrice"] == entry  # funding moves money, not the position
    assert_money_conserves(emulator, history, venue)


@pytest.mark.parametrize("venue", VENUES)
def test_a_position_opened_after_a_settlement_does_not_get_it(emulator, history, venue):
    ex = open_short(emulator, venue, "2022-02-24T08:00", leverage=2)  # AT the 08:00 instant: already settled
    emulator.set_time("2022-02-24T15:59")
    assert funding_seen(ex) == []
    emulator.set_time("2022-02-24T16:00")
    expected = expected_funding(history, venue, -QTY, ms("2022-02-24T08:00"), ms("2022-02-24T16:00"))
    assert [(t, amount) for t, _, amount in expected] == [(ms("2022-02-24T16:00"), pytest.approx(a, abs=1e-12))
                                                          for _, _, a in expected]
    assert [(t, pytest.approx(a, abs=1e-12)) for t, a in funding_seen(ex)] == [(t, a) for t, _, a in expected]
    assert_money_conserves(emulator, history, venue)

    # flat at a settlement: nothing is owed either way
    ex.create_order(PERP_SYM, "market", "buy", QTY, params={"reduceOnly": True})
    emulator.set_time("2022-02-25T08:30")
    assert len(funding_seen(ex)) == 1
    assert_money_conserves(emulator, history, venue)


@pytest.mark.parametrize("venue", VENUES)
def test_a_clock_jump_over_several_settlements_applies_each_once_in_order(emulator, history, venue):
    ex = open_short(emulator, venue, "2022-02-24T07:30", leverage=2)
    before = wallet_total(ex)
    emulator.set_time("2022-02-27T07:30")  # one jump over nine settlements
    expected = expected_funding(history, venue, -QTY, ms("2022-02-24T07:30"), ms("2022-02-27T07:30"))
    assert len(expected) == 9
    seen = funding_seen(ex)
    assert [t for t, _ in seen] == [t for t, _, _ in expected]  # each once, in time order
    assert [a for _, a in seen] == [pytest.approx(a, abs=1e-12) for _, _, a in expected]
    total = sum(a for _, _, a in expected)
    assert wallet_total(ex) == pytest.approx(before + total, abs=1e-9)
    # the clock moved back and over the same settlements again: none is paid twice
    emulator.set_time("2022-02-25T12:00")
    emulator.set_time("2022-02-27T07:30")
    assert len(funding_seen(ex)) == 9 and wallet_total(ex) == pytest.approx(before + total, abs=1e-9)
    emulator.advance(MS_H * 1_000_000)  # 08:00: the next one comes
    assert len(funding_seen(ex)) == 10
    assert_money_conserves(emulator, history, venue)


# ----------------------------------------------------------------- liquidation

def isolated_short_liquidation(venue: str, margin: float, entry: float) -> float:
    """The venue's published isolated formula for a short of QTY, written out (both sizes here
    sit in each venue's first tier): Binance LP = (WB + cum + Q EP) / (Q MMR + Q) with bracket 1's
    0.4% and cum 0; Bybit LP = EP + (PM - MM) / Q with MM = Q EP 0.5% (valued at entry)."""
    if venue == "binanceusdm":
        return (margin + QTY * entry) / (QTY * (1 + 0.004))
    return entry + (margin - QTY * entry * 0.005) / QTY


def liquidation_case(history, venue: str, entry: float, leverage: int, after_ms: int,
                     collateral: float | None = None):
    """What the venue's rule says for a short of QTY at ``entry``: the hour the real close first
    reaches the liquidation price, the (tick-rounded) price, realised PnL, penalty fee, and what
    is left of the collateral."""
    margin = round(QTY * entry / leverage, 8) if collateral is None else collateral
    liq = isolated_short_liquidation(venue, margin, entry)
    assert liq == pytest.approx(MARKETS[(venue, "perp")].margin.liquidation_price(margin, -QTY, entry, "isolated"),
                                rel=1e-12)
    tick = MARKETS[("bybit", "perp")].tick
    price = round(math.ceil(liq / tick - 1e-9) * tick, 10)
    closes = history["closes"].filter((pl.col("close_ms") > after_ms) & (pl.col("close") >= liq))
    hit_ms = closes["close_ms"][0]
    pnl = round(QTY * (entry - price), 8)
    fee = round(max(min(BASELINE.liquidation_fee_rate * QTY * price, margin + pnl), 0.0), 8)
    return {"margin": margin, "liq": liq, "price": price, "hit_ms": hit_ms, "pnl": pnl, "fee": fee,
            "left": margin + pnl - fee}


@pytest.mark.parametrize("venue", VENUES)
def test_a_leveraged_short_is_liquidated_when_the_clock_reaches_a_real_rise(emulator, history, venue):
    ex = open_short(emulator, venue, "2022-02-24T16:30", leverage=20)  # after the 16:00 settlement
    (opened,) = ex.fetch_my_trades(PERP_SYM)
    entry, open_fee = opened["price"], opened["fee"]["cost"]
    case = liquidation_case(history, venue, entry, 20, ms("2022-02-24T16:30"))
    # 20x: Binance about +4.6% ((1 + 1/20) / 1.004 - 1), Bybit +4.5% (1/20 - 0.5%) liquidates
    assert case["liq"] / entry - 1 == pytest.approx(0.0458 if venue == "binanceusdm" else 0.045, abs=0.0001)
    assert ms("2022-02-24T17:00") < case["hit_ms"] < ms("2022-02-25T00:00")  # before the next settlement
    (pos,) = ex.fetch_positions([PERP_SYM])
    assert pos["liquidationPrice"] == pytest.approx(case["liq"], abs=0.1)

    emulator.set_time((case["hit_ms"] - 1) * 1_000_000)  # just before that hour closes: still open
    (pos,) = ex.fetch_positions([PERP_SYM])
    assert pos["contracts"] == QTY
    emulator.set_time("2022-02-25T07:30")  # one jump through the rise and a settlement
    assert ex.fetch_positions([PERP_SYM]) == [] or ex.fetch_positions([PERP_SYM])[0]["contracts"] in (0, None)
    assert funding_seen(ex) == []  # gone before 00:00: nothing paid or received

    # the money: the collateral is lost down to what the penalty leaves (0 here: 1.25% > the 0.4% / 0.5% maintenance)
    total = wallet_total(ex)
    assert total == pytest.approx(START_USDT - open_fee + case["pnl"] - case["fee"], abs=1e-9)
    loss = START_USDT - open_fee - total
    assert loss == pytest.approx(case["margin"] - case["left"], abs=1e-9)
    assert case["left"] == pytest.approx(0.0, abs=1e-8) and loss == pytest.approx(case["margin"], abs=1e-8)
    assert ex.fetch_balance()["USDT"]["free"] == pytest.approx(total, abs=1e-9)  # no collateral left in use
    assert_money_conserves(emulator, history, venue)

    # what ccxt sees: the liquidation order and its fill, with the venue's markers
    (liquidation,) = ex.fetch_my_liquidations(PERP_SYM)
    assert (liquidation["price"], liquidation["contracts"] or liquidation["baseValue"]) == (case["price"], QTY)
    assert liquidation["timestamp"] == case["hit_ms"]
    if venue == "binanceusdm":
        trades = ex.fetch_my_trades(PERP_SYM)
        (fill,) = [t for t in trades if t["id"] != opened["id"]]
        assert (fill["side"], fill["amount"], fill["price"], fill["timestamp"]) == ("buy", QTY, case["price"],
                                                                                     case["hit_ms"])
        assert fill["fee"]["cost"] == pytest.approx(case["fee"], abs=1e-9)
        assert float(fill["info"]["realizedPnl"]) == pytest.approx(case["pnl"], abs=1e-9)
        order = ex.fetch_order(fill["order"], PERP_SYM)
        assert order["clientOrderId"].startswith("autoclose-") and liquidation["info"]["clientOrderId"] == \
            order["clientOrderId"]
        assert (order["status"], order["filled"], order["type"], order["timeInForce"]) == ("closed", QTY, "limit",
                                                                                          "IOC")
    else:
        assert [t["id"] for t in ex.fetch_my_trades(PERP_SYM)] == [opened["id"]]  # execType Trade: not the bust
        info = liquidation["info"]
        assert (info["execType"], info["orderType"], info["createType"], info["side"]) == (
            "BustTrade", "Market", "CreateByLiq", "Buy")
        assert float(info["execFee"]) == pytest.approx(case["fee"], abs=1e-9)
        rows = ex.privateGetV5OrderHistory({"category": "linear", "symbol": "BTCUSDT",
                                            "orderId": info["orderId"]})["result"]["list"]
        order = ex.parse_order(rows[0], ex.market(PERP_SYM))
        assert (order["status"], order["filled"], order["type"]) == ("closed", QTY, "market")
        assert rows[0]["createType"] == "CreateByLiq"


@pytest.mark.parametrize("venue", VENUES)
def test_funding_moves_the_collateral_and_so_the_liquidation_price(emulator, history, venue):
    """A settlement before the rise: paid into the isolated collateral (as the simulator counts
    funding in the cash its liquidation price uses), so the liquidation lands where the new
    collateral says."""
    ex = open_short(emulator, venue, "2022-02-24T15:30", leverage=20)
    (opened,) = ex.fetch_my_trades(PERP_SYM)
    entry = opened["price"]
    emulator.set_time("2022-02-24T16:30")
    ((_, _, paid),) = expected_funding(history, venue, -QTY, ms("2022-02-24T15:30"), ms("2022-02-24T16:30"))
    margin = round(round(QTY * entry / 20, 8) + paid, 8)
    assert emulator.accounts.position(venue).margin == pytest.approx(margin, abs=1e-9)
    case = liquidation_case(history, venue, entry, 20, ms("2022-02-24T16:30"), collateral=margin)
    (pos,) = ex.fetch_positions([PERP_SYM])
    assert pos["liquidationPrice"] == pytest.approx(case["liq"], abs=0.1)
    emulator.set_time("2022-02-24T23:30")
    (liquidation,) = ex.fetch_my_liquidations(PERP_SYM)
    assert (liquidation["price"], liquidation["timestamp"]) == (case["price"], case["hit_ms"])
    assert wallet_total(ex) == pytest.approx(START_USDT - opened["fee"]["cost"] + paid + case["pnl"] - case["fee"],
                                             abs=1e-9)
    assert_money_conserves(emulator, history, venue)


# ----------------------------------------------------------------- margin tiers

SHIPPED_TIERS = {  # data/shipped/margin_tiers.json: (floor, cap, mmr, amount, max leverage)
    "binanceusdm": [(0, 50_000, 0.004, 0, 125), (50_000, 600_000, 0.005, 50, 100),
                    (600_000, 3_000_000, 0.0065, 950, 75), (3_000_000, 12_000_000, 0.01, 11_450, 50)],
    "bybit": [(0, 2_000_000, 0.005, 0, 100)],
}


@pytest.mark.parametrize("venue", VENUES)
@pytest.mark.parametrize("call", ["fetch_market_leverage_tiers", "fetch_leverage_tiers"])
def test_ccxt_reads_the_shipped_margin_tiers_from_the_emulator(emulator, venue, call):
    ex = trading_client(emulator, venue)
    ex.load_markets()
    tiers = ex.fetch_market_leverage_tiers(PERP_SYM) if call == "fetch_market_leverage_tiers" else \
        ex.fetch_leverage_tiers([PERP_SYM])[PERP_SYM]
    assert [(t["minNotional"], t["maxNotional"], t["maintenanceMarginRate"], t["maxLeverage"]) for t in tiers] == [
        (f, c, m, lev) for f, c, m, _, lev in SHIPPED_TIERS[venue]]
    if venue == "binanceusdm":
        assert [t["info"]["cum"] for t in tiers] == [float(a) for _, _, _, a, _ in SHIPPED_TIERS[venue]]
        assert any(e.path == "/fapi/v1/leverageBracket" for e in emulator.log.entries)
    else:
        assert [t["info"]["mmDeduction"] for t in tiers] == [""]
        assert any(e.path == "/v5/market/risk-limit" for e in emulator.log.entries)
    rule = rule_from_ccxt_tiers(venue, PERP_SYM, tiers)
    assert rule.tiers == MARKETS[(venue, "perp")].margin.tiers == shipped_rule(venue, PERP_SYM).tiers


@pytest.mark.parametrize("venue", VENUES)
def test_the_position_answers_carry_the_venues_maintenance_margin(emulator, history, venue):
    ex = open_short(emulator, venue, "2022-02-24T16:30", leverage=4)
    (opened,) = ex.fetch_my_trades(PERP_SYM)
    entry = opened["price"]
    mark = mark_at(history, ms("2022-02-24T16:30"))
    (pos,) = ex.fetch_positions([PERP_SYM])
    if venue == "binanceusdm":  # valued at the mark, bracket 1
        assert float(pos["info"]["maintMargin"]) == pytest.approx(QTY * mark * 0.004, abs=1e-8)
        usdt = [a for a in ex.fetch_balance()["info"]["assets"] if a["asset"] == "USDT"][0]
        assert float(usdt["maintMargin"]) == pytest.approx(QTY * mark * 0.004, abs=1e-8)
    else:  # isolated: valued at the entry, risk limit tier 1
        assert float(pos["info"]["positionMM"]) == pytest.approx(QTY * entry * 0.005, abs=1e-8)
        assert (pos["info"]["riskId"], pos["info"]["riskLimitValue"]) == (1, "2000000")


# ----------------------------------------------------------------- private streams

def pro_trader(server, exchange_id: str):
    config = ccxt_config(exchange_id, enableRateLimit=False, timeout=5000, apiKey="k", secret="s")
    if exchange_id == "bybit":  # skip ccxt's account-type detection
        config["options"].update({"enableUnifiedAccount": True, "enableUnifiedMargin": False})
    return point_ccxt_pro(getattr(ccxt.pro, exchange_id)(config), server.base_url)


async def step(aw):
    async with asyncio.timeout(STEP):
        return await aw


async def until(check, what: str):
    for _ in range(int(STEP / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def private_ready(server, venue: str, topics: tuple[str, ...]) -> bool:
    events = websockets(server).events
    if venue == "binanceusdm":
        return any(e.what == "connect" and e.path == "/private/ws" for e in events)
    return all(any(e.what == "subscribe" and e.detail == topic and e.path == "/v5/private" for e in events)
               for topic in topics)


@pytest.mark.parametrize("venue", VENUES)
def test_the_private_stream_tells_the_funding_and_the_liquidation(emulator, history, venue):
    emulator.set_time("2022-02-24T15:30")
    emulator.accounts.fund(venue, "USDT", START_USDT)
    frames: list[dict] = []  # every private message the client parses

    async def main():
        ex = pro_trader(emulator, venue)
        try:
            await step(ex.load_markets())
            original = ex.handle_message

            def spy(client, message):
                if isinstance(message, dict):
                    frames.append(message)
                return original(client, message)

            ex.handle_message = spy
            await step(ex.set_leverage(20, PERP_SYM))
            orders = asyncio.ensure_future(ex.watch_orders(PERP_SYM))
            balance = asyncio.ensure_future(ex.watch_balance({"type": "swap"} if venue == "binanceusdm" else {}))
            trades = asyncio.ensure_future(ex.watch_my_trades(PERP_SYM)) if venue == "bybit" else None
            await until(lambda: private_ready(emulator, venue, ("order", "wallet", "execution")), "subscribed")
            await step(ex.create_order(PERP_SYM, "market", "sell", QTY, params={"clientOrderId": "short"}))
            await step(orders)
            await step(balance)
            if trades is not None:
                await step(trades)

            emulator.set_time("2022-02-24T16:30")  # the 16:00 settlement
            ((t_fund, _, paid),) = expected_funding(history, venue, -QTY, ms("2022-02-24T15:30"),
                                                    ms("2022-02-24T16:30"))
            if venue == "binanceusdm":
                def funded():
                    return [f for f in frames if f.get("e") == "ACCOUNT_UPDATE" and f["a"]["m"] == "FUNDING_FEE"]
            else:
                def funded():
                    return [r for f in frames if f.get("topic") == "execution" for r in f["data"]
                            if r["execType"] == "Funding"]
            await until(lambda: funded(), "the funding frame")
            (told,) = funded()
            if venue == "binanceusdm":
                assert told["E"] == t_fund and [b["a"] for b in told["a"]["B"]] == ["USDT"]
                assert float(told["a"]["B"][0]["wb"]) == pytest.approx(emulator.accounts.wallets[venue].get("USDT"),
                                                                      abs=1e-9)
                (p,) = told["a"]["P"]
                assert (p["pa"], p["mt"]) == ("-0.010", "isolated")
            else:
                assert (int(told["execTime"]), told["side"], told["category"]) == (t_fund, "Sell", "linear")
                assert -float(told["execFee"]) == pytest.approx(paid, abs=1e-12)
                assert float(told["feeRate"]) == expected_funding(history, venue, -QTY, ms("2022-02-24T15:30"),
                                                                  ms("2022-02-24T16:30"))[0][1]

            emulator.set_time("2022-02-24T23:30")  # the rise: liquidated
            liq = emulator.accounts.trade_list(venue, "perp")[-1]
            assert liq.liquidation

            def liquidated():
                return [o for o in ex.orders.hashmap.get(PERP_SYM, {}).values()
                        if o["status"] == "closed" and o["side"] == "buy"] if ex.orders is not None else []
            for _ in range(10):
                if liquidated():
                    break
                await step(ex.watch_orders(PERP_SYM))
            (order,) = liquidated()
            assert (order["filled"], order["average"], order["timestamp"] or liq.time_ms) == (QTY, liq.price,
                                                                                               liq.time_ms)
            if venue == "binanceusdm":
                assert order["clientOrderId"].startswith("autoclose-")
                (update,) = [f for f in frames if f.get("e") == "ORDER_TRADE_UPDATE" and f["o"]["c"] == order[
                    "clientOrderId"]]
                assert (update["o"]["x"], update["o"]["X"], update["o"]["o"]) == ("CALCULATED", "FILLED", "LIMIT")
                await until(lambda: any(f.get("e") == "ACCOUNT_UPDATE" and f["E"] == liq.time_ms
                                        and f["a"]["P"] and f["a"]["P"][0]["pa"] == "0.000" for f in frames),
                            "the flat position")
            else:
                assert order["info"]["createType"] == "CreateByLiq" and order["type"] == "market"
                await until(lambda: any(f.get("topic") == "execution" and f["data"][0]["execType"] == "BustTrade"
                                        for f in frames), "the BustTrade execution")
                wallet_after = emulator.accounts.wallets[venue].get("USDT")

                def flat_wallet():  # the wallet frame after the bust: no collateral in use, the loss booked
                    return [c for f in frames if f.get("topic") == "wallet" for c in f["data"][0]["coin"]
                            if c["coin"] == "USDT" and float(c["totalPositionIM"]) == 0
                            and float(c["walletBalance"]) == pytest.approx(wallet_after, abs=1e-9)]
                await until(flat_wallet, "the wallet after the liquidation")
        finally:
            await ex.close()

    asyncio.run(asyncio.wait_for(main(), 20))
    assert_money_conserves(emulator, history, venue)

