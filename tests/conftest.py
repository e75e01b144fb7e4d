"""The suite's shared fixtures: each test's own lock folder and promotion
key, an empty position book and the shipped real history. The test kit's
plugin adds the network guard and the emulator's fixtures; the plain
builders are in ``fundarb.testkit.builders``."""

from __future__ import annotations

from pathlib import Path

import pytest

from fundarb.core.book import PositionBook
from fundarb.data.history import MarketHistory
from fundarb.testkit.builders import PERP, SPOT

pytest_plugins = ["fundarb.testkit.pytest_plugin"]

ROOT = Path(__file__).resolve().parents[1]  # the repository


@pytest.fixture(autouse=True)
def _own_lock_dir(tmp_path_factory, monkeypatch):
    """Each test's venue-account locks in a folder of its own (subprocesses
    inherit it): never the user's, and no test sees another's lock."""
    monkeypatch.setenv("FUNDARB_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))


@pytest.fixture(scope="session", autouse=True)
def _own_promotion_key(tmp_path_factory):
    """One promotion key for the whole run, in a folder of its own
    (subprocesses inherit it): never the user's. Session scope, so records a
    module-scoped fixture promotes verify in every test of the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUNDARB_PROMOTION_KEY_FILE", str(tmp_path_factory.mktemp("promotion-key") / "promotion.key"))
        yield


@pytest.fixture
def book() -> PositionBook:
    """65k spot cash, 35k perp collateral, nothing held."""
    return PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)


@pytest.fixture(scope="session")
def real_history() -> MarketHistory:
    """The shipped real Binance history over the default config's window."""
    from fundarb.config import load
    from fundarb.data.history import load_history

    cfg = load(ROOT / "sims" / "spot_perp.toml")
    return load_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                        cfg.data.start, cfg.data.end, cfg.data.max_price_gap_hours)
