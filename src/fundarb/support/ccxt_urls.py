"""Point an unmodified ccxt (or ccxt.pro) client at another base URL, such
as the loopback emulator or a venue's test host: every REST entry of
``urls['api']`` (and every websocket entry for ccxt.pro) gets the new scheme
and host, each path kept. What each venue's client is built with (its
``ccxt_config``) is the venue's own: ``fundarb.venues``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def point_ccxt(exchange: Any, base_url: str) -> Any:
    """Rewrite scheme and host of every REST entry of ``exchange.urls['api']``
    to ``base_url``, keeping each path. Do not call
    ``set_sandbox_mode`` afterwards: it swaps ``urls['api']`` back."""
    target = urlsplit(base_url)
    api = exchange.urls["api"]
    for key, url in list(api.items()):
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            parts = urlsplit(url.replace("{hostname}", "x"))
            api[key] = f"{target.scheme}://{target.netloc}{parts.path}"
    # requests would otherwise honour *_PROXY variables and send loopback calls to a proxy
    session = getattr(exchange, "session", None)
    if session is not None and hasattr(session, "trust_env"):
        session.trust_env = False
    return exchange


def point_ccxt_pro(exchange: Any, base_url: str) -> Any:
    """``point_ccxt`` for a ccxt.pro client: REST as ``point_ccxt`` does, and
    scheme and host of every (nested) ``urls['api']['ws']`` entry rewritten to
    ``base_url`` as ``ws://`` (``wss://`` for an https base), each path kept (ccxt.pro derives the
    USD-M category paths from a url that must end in ``/ws``)."""
    point_ccxt(exchange, base_url)
    target = urlsplit(base_url)
    ws_root = f"{'wss' if target.scheme == 'https' else 'ws'}://{target.netloc}"  # https: never a plain socket

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, str) and node.startswith(("ws://", "wss://")):
            return ws_root + urlsplit(node.replace("{hostname}", "x")).path
        return node

    api = exchange.urls["api"]
    if isinstance(api.get("ws"), (dict, str)):  # a table of sockets, or one (Coinbase's advanced-trade-ws)
        api["ws"] = rewrite(api["ws"])
    return exchange
