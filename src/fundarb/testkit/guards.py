"""The test suite's guards: only loopback is reachable, and a test that hangs
is stopped with the tracebacks of every thread."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HANG_GUARD_S = 60.0  # the suite's bound on one test


class Blocked(list):
    """(host, port) of every refused lookup or connect."""

    def hosts(self) -> set[str]:
        return {a[0] for a in self}


def block_non_loopback(monkeypatch: pytest.MonkeyPatch) -> Blocked:
    """Only loopback is reachable until ``monkeypatch`` is undone: other DNS
    lookups and connects (socket, and aiohttp's own resolver, which bypasses
    getaddrinfo) raise and are recorded; proxy variables are cleared so
    loopback calls stay direct."""
    import aiohttp.resolver

    blocked = Blocked()
    real_gai, real_connect, real_connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def name(host: Any) -> str:
        return host.decode() if isinstance(host, bytes) else str(host)

    def getaddrinfo(host: Any, port: Any, *a: Any, **k: Any) -> Any:
        if host is not None and name(host) not in LOOPBACK:
            blocked.append((name(host), port))
            raise socket.gaierror(socket.EAI_NONAME, f"network blocked in tests: {name(host)}")
        return real_gai(host, port, *a, **k)

    def check(address: Any) -> None:
        if isinstance(address, tuple) and name(address[0]) not in LOOPBACK:
            blocked.append((name(address[0]), address[1]))
            raise ConnectionRefusedError(f"network blocked in tests: {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    async def resolve(self: Any, host: str, port: int = 0, family: int = socket.AF_INET) -> Any:
        blocked.append((host, port))
        raise OSError(f"network blocked in tests: {host}")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(aiohttp.resolver.AsyncResolver, "resolve", resolve)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "WS_PROXY", "WSS_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    return blocked


@contextmanager
def guarded(loopback_attempts: list, seconds: float) -> Iterator[None]:
    """Kill the run with tracebacks if the test hangs ``seconds``; fail a test
    that tried to leave loopback even if it swallowed the error."""
    import faulthandler

    faulthandler.dump_traceback_later(seconds, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    assert not loopback_attempts, f"a test tried to leave loopback: {loopback_attempts}"
