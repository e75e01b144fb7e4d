"""Fixtures of the live tests."""

from __future__ import annotations

import pytest

from fundarb.testkit.emulator.harness import running_emulator

# the emulator's clock for a coin-margined carry: Binance COIN-M funding paid about 60% APR then
COINM_START = "2024-03-01T06:00"


@pytest.fixture
def coinm_venue():
    """The loopback emulator from ``COINM_START``, on the shipped real data."""
    with running_emulator(start=COINM_START) as server:
        yield server
