"""What the carry holds by the trade log, in BTC, under the config's structure.

Spot/linear: the spot leg's BTC (buys less BTC fees, less sells) and the
perp's signed BTC, as their fills add up.

Coin-margined: the inverse perp's fills count contracts of a USD face, and
its BTC worth depends on prices. Its fills and funding payments are replayed
through the core's own inverse account (``fundarb.core.book.VenueAccount``),
which gives the short's BTC-equivalent (face / entry, the harmonic entry as
the venue keeps it) and the BTC it has settled in: realized PnL, fees and
funding. That BTC is in the same balance as the spot leg's (``Collateral.sweep``):
the carry holds one BTC amount, the short's margin, hedged by the short, and
an exit sells it all (``Collateral.exit_btc``).
"""

from __future__ import annotations

from typing import Any

import attrs

from fundarb.core.book import COIN, Collateral, VenueAccount, drift_of
from fundarb.core.model import MarketKind
from fundarb.live.journal import Journal

QTY_TOL = 1e-8


@attrs.frozen
class Holdings:
    spot_btc: float  # the carry's BTC (coin-margined: with what the perp settled in)
    perp_btc: float  # the perp's signed BTC (an inverse perp's: face / entry)
    perp_units: float  # the perp's signed size in its own unit (BTC, or contracts)
    perp_entry: float  # the perp's average entry (harmonic for an inverse perp); 0 when flat
    settled_btc: float = 0.0  # coin-margined: BTC the perp has settled in (PnL, fees, funding)
    perp_account: VenueAccount | None = None  # coin-margined: the replayed inverse account

    @property
    def delta(self) -> float:
        """Spot BTC plus the perp's: 0 when the carry is hedged."""
        return round(self.spot_btc + self.perp_btc, 12) + 0.0

    @property
    def drift(self) -> float:
        return drift_of(self.spot_btc, self.perp_btc, QTY_TOL)

    def exit_btc(self, mark: float) -> float:
        """The BTC a close sells: all the carry holds; coin-margined, with what
        the short's close settles at ``mark`` less the core's exit margin."""
        if self.perp_account is None:
            return self.spot_btc
        perp = attrs.evolve(self.perp_account, price=mark)
        spot = VenueAccount("", MarketKind.SPOT, 0.0, qty=self.spot_btc, price=mark)
        return Collateral(COIN).exit_btc(spot, perp)


def outside_key(spot_account: str) -> str:
    """The journal state of the BTC on the venue that is not the carry's, as
    reconciliation recorded it (a carry on BTC held: the holding)."""
    return f"spot_outside_carry:{spot_account}"


def outside_btc(journal: Journal, spot_account: str) -> float:
    """The BTC reconciliation recorded as not the carry's (0 before its first run)."""
    return float(journal.get_state(outside_key(spot_account)) or 0.0)


def holdings(journal: Journal, spot: Any, perp: Any) -> Holdings:
    """The carry by ``journal`` on the ``spot`` and ``perp`` legs (``LiveLeg``:
    account, base and, for an inverse perp, ``face``)."""
    return holdings_of(journal, spot.account, perp.account, perp.face, spot.base)


def holdings_of(journal: Journal, spot_account: str, perp_account: str, face: float, base: str = "BTC") -> Holdings:
    """The carry by ``journal`` on two accounts, the perp an inverse one of
    ``face`` USD a contract when ``face`` > 0 (a trade log read without a venue)."""
    spot_btc = journal.position(spot_account, base)
    if not face:
        units = journal.position(perp_account)
        return Holdings(spot_btc, units, units, 0.0)
    acct = inverse_account(journal, perp_account, face, base)
    units = journal.units(perp_account)
    settled = acct.coin  # realized PnL less fees, plus funding
    return Holdings(round(spot_btc + settled, 12), acct.qty, units, acct.entry, settled, acct)


def inverse_account(journal: Journal, account: str, face: float, coin: str = "BTC") -> VenueAccount:
    """The inverse perp ``account`` as its journaled fills (in venue time
    order) and funding payments (BTC) leave it."""
    acct = VenueAccount(account, MarketKind.PERP, 0.0, contract_size=face)
    rows = [f for f in journal.fills() if f["account"] == account]
    for f in sorted(rows, key=lambda r: (r["venue_ts"], r["seq"])):
        sign = 1.0 if f["side"] == "buy" else -1.0
        fee = float(f["fee"]) if f["fee_currency"] == coin else 0.0
        acct.trade(sign * float(f["qty"]), float(f["price"]), fee)
    paid = sum(float(r["amount"]) for r in journal.rows("funding") if r["account"] == account)
    acct.coin += paid
    acct.funding_coin += paid
    return acct
