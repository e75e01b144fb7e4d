"""One scrubber for every text that leaves the process: error messages,
log fields, alerts.

Venue errors carry what a request carried: ccxt puts the signed URL (query
string with ``signature=``, ``timestamp=``, sometimes ``apiKey=``) into its
messages, and a 5xx body may echo the request's headers, the API key among
them. ``scrub(text)`` removes, replacing each with ``***``:

- every literal secret value configured now: the environment's and
  ``.env``'s ``FUNDARB_*_API_KEY``, ``FUNDARB_*_SECRET``,
  ``FUNDARB_*_PASSWORD`` (also ``_PASSPHRASE`` and ``_TOKEN``), and
  ``FUNDARB_ALERT_URLS``: each URL whole and its parts (bot tokens, user
  names, passwords, path segments, query values), plus ``extra_secrets``
  (keys a caller was given in a mapping rather than the environment);
- the query string of any URL (scheme, host and path are kept) and the user
  and password of any URL's authority;
- ``name=value`` and ``name: value`` pairs whose name is a credential
  (``signature``, ``sign``, ``apiKey``, ``api_key``, ``X-MBX-APIKEY``,
  ``Authorization``, ``*-passphrase``, ``token`` ...), in query strings,
  headers, Python reprs and JSON bodies alike;
- Telegram bot tokens (``123456789:AA...``) wherever they appear.

A literal value shorter than ``MIN_SECRET_LEN``, a bare number, an IP
address or a host name is not treated as a secret: masking it would mangle
every line without hiding anything a key is made of.

``describe(exc)`` is the one way to put an exception into a message:
``"Type: scrubbed text"`` on one line, at most ``limit`` characters (the
text is scrubbed whole before it is cut, so a cut never leaves half a
secret behind the mask).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, unquote

MASK = "***"
MIN_SECRET_LEN = 6
DESCRIBE_LIMIT = 300

SECRET_ENV = re.compile(r"^FUNDARB_\w+_(API_KEY|SECRET|PASSWORD|PASSPHRASE|TOKEN)$")
ALERT_ENV = "FUNDARB_ALERT_URLS"
DOTENV = Path(".env")

_URL = re.compile(r"""(?i)\b(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^\s/?#"'<>@]*@)?"""
                  r"""(?P<rest>[^\s?#"'<>]*)(?P<query>\?[^\s#"'<>]*)?""")
_NAMES = (r"api[-_]?key|apikey|access[-_]?key|secret(?:[-_]?key)?|signature|sign|passphrase|password|passwd"
          r"|authorization|auth[-_]?token|access[-_]?token|token|listen[-_]?key|cookie")
_PAIR = re.compile(
    r"""(?ix)
    (?P<q>["']?)
    (?P<name>(?<![\w-])(?:[\w-]*[-_])?(?:""" + _NAMES + r"""))(?![\w-])
    (?P=q)
    (?P<sep>\s*[:=]\s*)
    (?P<value>"[^"]*"|'[^']*'|(?:(?:bearer|basic|token|digest|hmac-sha256)\s+)?[^\s"',;&})\]]+)
    """)
_TELEGRAM_TOKEN = re.compile(r"\b\d{6,}:[A-Za-z0-9_-]{20,}")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\.?$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def _not_secret(part: str) -> bool:
    """Parts that never make a key: numbers, IP addresses, host names (with an optional port)."""
    if _NUMBER.match(part) or part.lower() in ("localhost", "127.0.0.1", "::1"):
        return True
    host, colon, port = part.rpartition(":")
    if colon and port.isdigit() and host:
        part = host.strip("[]")
    try:
        ipaddress.ip_address(part.strip("[]"))
        return True
    except ValueError:
        pass
    return bool(_HOST.match(part)) or part.lower() == "localhost"


def _variants(value: str) -> set[str]:
    out = {value, quote(value, safe=""), unquote(value)}
    return {v for v in out if len(v) >= MIN_SECRET_LEN}


def alert_url_parts(text: str) -> set[str]:
    """The secret-bearing pieces of ``FUNDARB_ALERT_URLS``'s value: each URL
    whole, everything after its scheme, and each part of that (userinfo,
    host, path segments, query values) that can hold a token or a password."""
    out: set[str] = set()
    for url in (u for u in re.split(r"[\s,]+", text or "") if u):
        out |= _variants(url)
        _, sep, rest = url.partition("://")
        rest = rest if sep else url
        out |= _variants(rest)
        body, _, query = rest.partition("?")
        pieces = re.split(r"[/@#]", body)
        for value in re.split(r"[&;]", query):
            pieces.append(value.partition("=")[2])
        for piece in pieces:
            for part in {piece, *piece.split(":")}:
                if part and not _not_secret(part):
                    out |= _variants(part)
    return out


def _secret_values(env: Mapping[str, str]) -> set[str]:
    out: set[str] = set()
    for name, value in env.items():
        if not value:
            continue
        if name == ALERT_ENV:
            out |= alert_url_parts(value)
        elif SECRET_ENV.match(name):
            out |= _variants(value.strip())
    return out


_cache: dict[str, tuple[object, frozenset[str]]] = {}


def configured_secrets(env: Mapping[str, str] | None = None, dotenv: Path | None = DOTENV) -> frozenset[str]:
    """The secret values of the environment (``os.environ`` when ``env`` is
    None) and of ``dotenv`` (read again only when it changes)."""
    env = os.environ if env is None else env
    relevant = tuple(sorted((k, v) for k, v in env.items() if k == ALERT_ENV or SECRET_ENV.match(k)))
    stamp: object = None
    if dotenv is not None:
        try:
            st = os.stat(dotenv)
            stamp = (os.path.abspath(dotenv), st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
    key = (relevant, stamp)
    cached = _cache.get("secrets")
    if cached is not None and cached[0] == key:
        return cached[1]
    values = _secret_values(dict(relevant))
    if stamp is not None and dotenv is not None:
        try:
            from dotenv import dotenv_values

            values |= _secret_values({k: v for k, v in dotenv_values(dotenv).items() if v})
        except (OSError, UnicodeDecodeError, ValueError):
            pass  # an unreadable .env holds nothing credentials.py could read either
    found = frozenset(values)
    _cache["secrets"] = (key, found)
    return found


_patterns: dict[frozenset[str], re.Pattern[str] | None] = {}


def _literal_pattern(values: frozenset[str]) -> re.Pattern[str] | None:
    if values not in _patterns:
        if len(_patterns) > 64:
            _patterns.clear()
        ordered = sorted(values, key=len, reverse=True)  # the longest first: a URL before its parts
        _patterns[values] = re.compile("|".join(map(re.escape, ordered))) if ordered else None
    return _patterns[values]


def _url(m: re.Match[str]) -> str:
    return (m["scheme"] + (MASK + "@" if m["userinfo"] else "") + m["rest"]
            + ("?" + MASK if m["query"] and len(m["query"]) > 1 else m["query"] or ""))


def _pair(m: re.Match[str]) -> str:
    value = m["value"]
    masked = value[0] + MASK + value[0] if value[:1] in ("'", '"') else MASK
    return f"{m['q']}{m['name']}{m['q']}{m['sep']}{masked}"


def scrub(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """``text`` without credentials (see the module's doc); ``extra_secrets``
    are literal values to mask besides the configured ones."""
    if not text:
        return text
    text = str(text)
    values = configured_secrets()
    extra = {v for s in extra_secrets if s for v in _variants(str(s).strip())}
    if extra:
        values = values | extra
    literal = _literal_pattern(frozenset(values))
    if literal is not None:
        text = literal.sub(MASK, text)
    text = _TELEGRAM_TOKEN.sub(MASK, text)
    text = _URL.sub(_url, text)
    return _PAIR.sub(_pair, text)


def describe(exc: BaseException, limit: int = DESCRIBE_LIMIT, extra_secrets: Iterable[str] = ()) -> str:
    """``"Type: text"`` of an exception, scrubbed, on one line, at most ``limit`` characters."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:  # an exception whose str() fails still has a type
        text = ""
    text = " ".join(scrub(text, extra_secrets).split())  # whole: a cut first could split a secret
    out = f"{name}: {text}" if text else name
    return out if len(out) <= limit else out[:max(limit - 1, 0)] + "…"


class ScrubbedCause(Exception):
    """Stands in an exception chain for a cause whose text held a credential."""


def scrub_exception(exc: BaseException, extra_secrets: Iterable[str] = ()) -> BaseException:
    """Scrub ``exc`` in place, keeping its type (callers catch by type): its
    string arguments, and any cause or context in its chain whose text held a
    credential is replaced by a ``ScrubbedCause`` naming it. Returns ``exc``."""
    extra = tuple(extra_secrets)
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        try:
            node.args = tuple(scrub(a, extra) if isinstance(a, str) else a for a in node.args)
        except (AttributeError, TypeError):
            pass
        for link in ("__cause__", "__context__"):
            inner = getattr(node, link)
            if inner is None:
                continue
            try:
                text = str(inner)
            except Exception:
                text = ""
            if scrub(text, extra) != text:
                setattr(node, link, ScrubbedCause(describe(inner, extra_secrets=extra)))
        node = node.__cause__ or node.__context__
    return exc


class ScrubRecords(logging.Filter):
    """A log filter that scrubs every record before any handler sees it (the
    libraries that log requests and answers: ccxt, apprise); ``secrets`` are
    values to mask besides the configured ones. A record that cannot be
    formatted is dropped, not printed raw."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - dropped rather than printed unscrubbed
            return False
        record.msg, record.args = scrub(message, self.secrets), ()
        return True


def scrub_logger(log: logging.Logger, secrets: Iterable[str] = ()) -> None:
    """Put the one ``ScrubRecords`` filter on ``log`` (once), knowing ``secrets`` too."""
    found = [f for f in log.filters if isinstance(f, ScrubRecords)]
    if not found:
        found = [ScrubRecords()]
        log.addFilter(found[0])
    found[0].secrets.update(secrets)
