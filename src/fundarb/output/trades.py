"""The trade log of a backtest or a replay (``trades.sqlite``), in the one
trade-log schema fundarb writes for every run (``fundarb.live.journal``,
version 3; ``docs/trade_log.md``): the engine's decision log through the same
mapping a paper run uses (``fundarb.live.ledger``), under the simulated
venues' identities (network ``backtest``), with the transfers, charges,
vetoes, alerts and the hourly equity curve beside the orders, fills and
funding. ``meta.source`` says which run wrote it. A live week and its replay
can be read with one query.

The file is written whole: made under a temporary name in one transaction
and renamed into place, so a failed run never leaves half a log.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fundarb.config import Config
from fundarb.live.identity import VenueIdentity
from fundarb.live.journal import EQUITY_COLUMNS, Journal
from fundarb.live.ledger import EngineLedger, LedgerLeg
from fundarb.wiring import contract_size_of


def _quote(symbol: str) -> str:
    """``BTC/USDT`` and ``BTC/USDT:USDT`` -> ``USDT``."""
    return symbol.split("/", 1)[-1].split(":", 1)[0]


def ledger_legs(cfg: Config, run: str) -> dict[str, LedgerLeg]:
    """Both accounts of ``cfg`` on the simulated venues of a ``run`` (backtest or replay)."""
    legs = {}
    for leg, venue, account in (("spot", cfg.spot, cfg.spot_account), ("perp", cfg.perp, cfg.perp_account)):
        ident = VenueIdentity.simulated(venue.exchange, run)
        coin = "BTC" if leg == "perp" and contract_size_of(cfg) else ""  # an inverse perp settles in BTC
        legs[account] = LedgerLeg(account, leg, venue.exchange, venue.symbol, ident.key, _quote(venue.symbol), coin)
    return legs


def write_trade_log(path: Path, cfg: Config, config_hash: str, source: str, meta: dict[str, str],
                    log: Iterable[tuple[str, dict[str, Any]]], curve: dict[str, list[Any]]) -> None:
    """Write the trade log of a finished run to ``path``, whole or not at all."""
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        journal = Journal(tmp)
        try:
            legs = ledger_legs(cfg, source)
            journal.bind_venues({a: VenueIdentity.parse(leg.venue_id) for a, leg in legs.items()})
            with journal.tx():
                journal.set_meta({"source": source, "config_hash": config_hash, **meta})
                ledger = EngineLedger(journal, legs, config_hash, source)
                for ts, step in itertools.groupby(log, key=lambda row: int(row[1]["ts"])):
                    for kind, row in step:
                        ledger.record(kind, row)
                    ledger.commit(ts)
                journal.add_equity([curve[c][i] for c in EQUITY_COLUMNS] for i in range(len(curve["ts"])))
        finally:
            journal.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
