"""The test kit's pytest fixtures, requested by name once the plugin is
loaded (``pytest_plugins = ["fundarb.testkit.pytest_plugin"]``):

- ``loopback_only``: any connection or DNS lookup to a host other than
  loopback is refused and recorded, so a client that was not pointed at the
  emulator fails loudly instead of reaching the exchange;
- ``emulator``: a fresh emulator server per test (own clock, faults and
  request log);
- ``hang_guard``: a test that hangs a minute (or its ``hang_guard_seconds``
  marker's bound) is stopped with every thread's traceback, and one that
  tried to leave loopback fails;
- ``closes``: the shipped Binance hourly closes the emulator fills at, once
  per test module.

The plain helpers are modules of the kit: ``fundarb.testkit.guards``,
``fundarb.testkit.emulator.harness``, ``fundarb.testkit.live``,
``fundarb.testkit.runner`` and ``fundarb.testkit.builders``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

# before they are imported: their assertions report like a test's own
pytest.register_assert_rewrite("fundarb.testkit.guards", "fundarb.testkit.emulator.harness", "fundarb.testkit.live",
                               "fundarb.testkit.runner")

from fundarb.testkit.guards import HANG_GUARD_S, Blocked, block_non_loopback, guarded  # noqa: E402

if TYPE_CHECKING:
    import polars as pl

    from fundarb.testkit.emulator.server import EmulatorServer


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Blocked:
    """Only loopback is reachable; the refused (host, port) pairs."""
    return block_non_loopback(monkeypatch)


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is reachable, not even loopback: code that reads files only
    (parsing, replay) fails the test on any connection attempt."""
    import socket

    def refuse(self: socket.socket, address: object, *a: object, **k: object) -> None:
        raise AssertionError(f"tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh emulator server on 127.0.0.1, stopped after the test."""
    from fundarb.testkit.emulator.harness import running_emulator

    with running_emulator() as server:
        yield server


@pytest.fixture
def hang_guard(loopback_only: Blocked, request: pytest.FixtureRequest) -> Iterator[None]:
    """The suite's hang guard: a minute, or the seconds a test's
    ``hang_guard_seconds`` marker gives (a flow of many processes in turn)."""
    marker = request.node.get_closest_marker("hang_guard_seconds")
    with guarded(loopback_only, float(marker.args[0]) if marker else HANG_GUARD_S):
        yield


@pytest.fixture(scope="module")
def closes() -> dict[str, pl.DataFrame]:
    """Shipped Binance hourly closes of spot and USD-M by ccxt symbol: open
    time, the instant the close is known (open + 1 h), and the close."""
    from fundarb.testkit.emulator.harness import shipped_closes

    return shipped_closes()
