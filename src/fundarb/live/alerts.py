"""Alerts: the conditions a desk must hear about, de-duplicated,
rate-limited, stored, and sent through apprise (Telegram, email over SMTP,
webhooks, Slack ... each configured by an apprise URL).

Three small parts, each testable on a simulated clock:

- ``AlertConditions.check(state)`` (pure, no I/O) turns a ``DeskState``
  snapshot into ``Notice``s. Funding is edge-triggered (a notice when the
  annualised rate crosses ``strategy.entry_apr`` upwards while flat, or
  ``strategy.exit_apr`` downwards while in position); the rest hold while
  their condition holds: drift over ``risk.max_drift``, margin buffer under
  ``risk.min_margin_buffer``, drawdown at ``alerts.drawdown_warning`` of
  ``risk.max_drawdown`` or more, a reconciliation mismatch, a venue not
  answering for ``alerts.unreachable_seconds``, a missed funding settlement
  (each new one), the kill switch (when it fires).
- ``Alerter.raise_notice`` decides what is sent. De-duplication: a notice
  with the key of one sent less than ``alerts.dedup_minutes`` ago is held
  back (a flapping condition is heard once per window), unless its severity
  is higher than what was sent. Rate limit: at most ``alerts.max_per_hour``
  sent in any rolling hour; critical notices (kill switch, naked leg) are
  never rate-limited. ``pause`` holds back all but critical notices. Every
  alert is stored with its outcome (``sent``, ``failed``, ``rate_limited``,
  ``paused``, ``no_channel``), sent or not; repeats of a condition that holds
  are counted into the next stored row ("N repeats held back") rather than
  stored one by one.
- ``AppriseChannel`` delivers, with apprise's notify type of the severity
  (critical -> failure, warning -> warning, info -> info). The URLs carry
  secrets (bot tokens, SMTP passwords), so they come only from
  ``FUNDARB_ALERT_URLS`` (whitespace or comma separated) in the environment
  or ``.env``, and are never stored or printed: a failure names a URL by its
  place in the list (1st, 2nd ...) and by its scheme only when that is a
  scheme apprise knows, never by anything else of it.

Every title, body and stored message goes through ``fundarb.support.scrub`` first:
a notice made from a venue's error text cannot carry a key out.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from fundarb.config import AlertSettings
from fundarb.core.model import NS_PER_SECOND
from fundarb.support.scrub import alert_url_parts, scrub, scrub_logger

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_HOUR_ = 60 * NS_PER_MINUTE
ENV_URLS = "FUNDARB_ALERT_URLS"
NOTIFY_TYPES = {"critical": "failure", "warning": "warning", "info": "info"}  # severity -> apprise's notify type


@attrs.frozen
class Notice:
    ts: int
    kind: str
    key: str  # de-duplication key: the kind, and the venue where one is named
    severity: str
    title: str
    body: str


@attrs.frozen
class DeskState:
    """What the monitor knows at ``ts`` (filled from the engine, a live
    session, a replay or a running simulation)."""

    ts: int
    in_position: bool
    funding_apr: float | None = None  # the signal, annualised
    predicted_apr: float | None = None
    drift: float = 0.0
    margin_buffer: float = math.inf  # inf when flat
    drawdown: float = 0.0
    reconciliation_mismatch: str | None = None
    unreachable: tuple[tuple[str, float], ...] = ()  # (venue, seconds without an answer)
    missed_settlements: int = 0
    halted: str | None = None  # the kill switch's reason
    margin_leg: str = ""  # the account whose buffer ``margin_buffer`` is (a perp/perp carry's lower one); "": the short's


@attrs.frozen
class AlertThresholds:
    entry_apr: float
    exit_apr: float
    max_drift: float
    min_margin_buffer: float
    max_drawdown: float
    drawdown_warning: float = 0.8
    unreachable_seconds: float = 60.0

    @classmethod
    def of(cls, cfg: Any) -> AlertThresholds:
        a = cfg.alert_settings
        return cls(cfg.strategy.entry_apr, cfg.strategy.exit_apr, cfg.risk.max_drift, cfg.risk.min_margin_buffer,
                   cfg.risk.max_drawdown, a.drawdown_warning, a.unreachable_seconds)


def _apr(x: float) -> str:
    return f"{x:.2%} APR"


@attrs.define
class AlertConditions:
    limits: AlertThresholds
    label: str = "fundarb"  # config name and hash, in every title
    _funding_side: str | None = None  # "above_entry" | "below_exit" | "between"
    _missed_seen: int = 0
    _halted_seen: str | None = None

    def check(self, s: DeskState) -> list[Notice]:
        out: list[Notice] = []
        L = self.limits

        def add(kind: str, severity: str, title: str, body: str, key: str | None = None) -> None:
            out.append(Notice(s.ts, kind, key or kind, severity, f"[{self.label}] {title}", body))

        if s.funding_apr is not None:
            self._funding(s, add)
        if s.drift > L.max_drift:
            add("drift", "warning", f"delta drift {s.drift:.2%}",
                f"drift {s.drift:.2%} is over the {L.max_drift:.0%} limit: rebalance the legs")
        if s.in_position and s.margin_buffer < L.min_margin_buffer:
            whose, collateral = (f"{s.margin_leg}'s", "its") if s.margin_leg else ("the short's", "the perp")
            add("margin_buffer", "critical" if s.margin_buffer < L.min_margin_buffer / 2 else "warning",
                f"margin buffer {s.margin_buffer:.1%}",
                f"{whose} margin buffer {s.margin_buffer:.1%} is under {L.min_margin_buffer:.0%}: "
                f"top up {collateral} collateral or reduce both legs")
        if s.drawdown >= L.drawdown_warning * L.max_drawdown:
            add("drawdown", "critical" if s.drawdown >= L.max_drawdown else "warning", f"drawdown {s.drawdown:.2%}",
                f"drawdown {s.drawdown:.2%} of the {L.max_drawdown:.0%} stop")
        if s.reconciliation_mismatch:
            add("reconciliation_mismatch", "critical", "reconciliation mismatch",
                f"{s.reconciliation_mismatch}; new entries are blocked until the venues agree")
        for venue, seconds in s.unreachable:
            if seconds >= L.unreachable_seconds:
                add("venue_unreachable", "critical", f"{venue} unreachable",
                    f"{venue} has not answered for {seconds:.0f} s", key=f"venue_unreachable:{venue}")
        if s.missed_settlements > self._missed_seen:
            add("missed_settlement", "critical", "missed funding settlement",
                f"{s.missed_settlements - self._missed_seen} settlement(s) not in the funding ledger "
                f"({s.missed_settlements} in all)", key=f"missed_settlement:{s.missed_settlements}")
        self._missed_seen = max(self._missed_seen, s.missed_settlements)
        if s.halted and s.halted != self._halted_seen:
            add("kill_switch", "critical", "kill switch fired", f"new orders halted: {s.halted}")
        self._halted_seen = s.halted
        return out

    def _funding(self, s: DeskState, add: Callable[..., None]) -> None:
        L, apr = self.limits, s.funding_apr
        assert apr is not None
        side = "above_entry" if apr > L.entry_apr else "below_exit" if apr < L.exit_apr else "between"
        before, self._funding_side = self._funding_side, side
        if before is None or before == side:
            return  # edges only: the first look sets the side
        pred = f", predicted {_apr(s.predicted_apr)}" if s.predicted_apr is not None else ""
        if side == "above_entry" and not s.in_position:
            add("funding_above_entry", "info", f"funding {_apr(apr)} above entry",
                f"funding {_apr(apr)}{pred} crossed the entry threshold {_apr(L.entry_apr)}")
        elif side == "below_exit" and s.in_position:
            add("funding_below_exit", "warning", f"funding {_apr(apr)} below exit",
                f"funding {_apr(apr)}{pred} crossed under the exit threshold {_apr(L.exit_apr)}")


class Channel(Protocol):
    def send(self, title: str, body: str, severity: str = "info") -> tuple[bool, str]: ...


class AlertLog(Protocol):
    def add_alert(self, ts: int, kind: str, severity: str, config_hash: str, message: str,
                  key: str = "", outcome: str = "recorded") -> None: ...


@attrs.define
class Alerter:
    channel: Channel | None
    log: AlertLog
    config_hash: str
    policy: AlertSettings = AlertSettings()
    paused: bool = False
    _last_sent: dict[str, tuple[int, int]] = attrs.field(factory=dict)  # key -> (ts, severity rank)
    _last_stored: dict[str, tuple[int, int, str]] = attrs.field(factory=dict)  # key -> (ts, rank, outcome)
    _held: dict[str, int] = attrs.field(factory=dict)  # key -> repeats not stored since its last row
    _sent_times: deque = attrs.field(factory=deque)

    def raise_notice(self, n: Notice) -> str:
        """Decide, send and store one notice; returns its outcome. A repeat of
        what was just stored for the key (same outcome, no worse, within the
        window) is counted, not stored again: a condition that holds is checked
        every few seconds, and the table must not fill with copies."""
        outcome, detail = self._decide(n)
        rank = SEVERITY_RANK[n.severity]
        window = int(self.policy.dedup_minutes * NS_PER_MINUTE)
        last = self._last_stored.get(n.key)
        repeat = outcome == "deduplicated" or (
            outcome != "send" and last is not None and last[2] == outcome and rank <= last[1] and n.ts - last[0] < window)
        if repeat:
            self._held[n.key] = self._held.get(n.key, 0) + 1
            return outcome
        secrets = getattr(self.channel, "secrets", ())  # the channel's own URLs, wherever they came from
        if outcome == "send":
            ok, detail = (self.channel.send(scrub(n.title, secrets), scrub(n.body, secrets), n.severity)
                          if self.channel is not None else (False, ""))
            outcome = "sent" if ok else "failed"
            if ok:
                self._last_sent[n.key] = (n.ts, rank)
                if n.severity != "critical":  # critical notices neither wait for nor use the budget
                    self._sent_times.append(n.ts)
        held = self._held.pop(n.key, 0)
        notes = [detail] if detail else []
        if held:
            notes.append(f"{held} repeat{'s' if held != 1 else ''} held back since the last")
        message = scrub(n.body + (f" ({'; '.join(notes)})" if notes else ""), secrets)
        self.log.add_alert(n.ts, n.kind, n.severity, self.config_hash, message, n.key, outcome)
        if outcome != "failed":  # a failed delivery is tried again next time
            self._last_stored[n.key] = (n.ts, rank, outcome)
        return outcome

    def _decide(self, n: Notice) -> tuple[str, str]:
        critical = n.severity == "critical"
        if self.channel is None:
            return "no_channel", ""
        if self.paused and not critical:
            return "paused", ""
        last = self._last_sent.get(n.key)
        window = int(self.policy.dedup_minutes * NS_PER_MINUTE)
        if last is not None and n.ts - last[0] < window and SEVERITY_RANK[n.severity] <= last[1]:
            return "deduplicated", ""
        while self._sent_times and n.ts - self._sent_times[0] >= NS_PER_HOUR_:
            self._sent_times.popleft()
        if not critical and len(self._sent_times) >= self.policy.max_per_hour:
            return "rate_limited", ""
        return "send", ""


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th ... 11th, 12th, 13th ... 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def known_scheme(url: str) -> str | None:
    """The URL's scheme when it is one apprise knows (a name safe to print), else None."""
    from apprise.manager_plugins import NotificationManager

    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    return scheme if sep and re.fullmatch(r"[a-z0-9+.-]{1,32}", scheme) and scheme in NotificationManager() else None


class AppriseChannel:
    """Every configured apprise URL; a notice is sent when at least one
    channel took it. Errors name a URL by its place in the list and a scheme
    apprise knows, never by anything else of the URL."""

    def __init__(self, urls: list[str]) -> None:
        import apprise

        self.secrets = frozenset(p for url in urls for p in alert_url_parts(url))  # masked in all it sends
        _scrub_apprise_log(self.secrets)
        self._apprise = apprise.Apprise()
        self.schemes: list[str] = []
        for i, url in enumerate(urls, 1):
            which = f"the {ordinal(i)} alert URL" + (f" of {len(urls)}" if len(urls) > 1 else "")
            scheme = known_scheme(url)
            if "://" not in url:
                raise ValueError(f"{ENV_URLS}: {which} is malformed: no '://' after its scheme")
            if scheme is None:
                raise ValueError(f"{ENV_URLS}: {which} has a scheme apprise does not know")
            if not self._apprise.add(url):
                raise ValueError(f"{ENV_URLS}: {which} (scheme {scheme!r}) is not a valid apprise URL")
            self.schemes.append(scheme)

    def send(self, title: str, body: str, severity: str = "info") -> tuple[bool, str]:
        title, body = scrub(title, self.secrets), scrub(body, self.secrets)
        try:
            ok = bool(self._apprise.notify(title=title, body=body, notify_type=NOTIFY_TYPES.get(severity, "info")))
        except Exception as exc:  # a channel must never take the process down
            return False, f"delivery raised {type(exc).__name__}"
        return ok, "" if ok else f"delivery failed on {', '.join(self.schemes)}"


def _scrub_apprise_log(secrets: frozenset[str]) -> None:
    """Apprise logs what its plugins say (a request's error can name the URL
    it went to): scrubbed before any handler sees it, also of the URLs of
    channels given in a mapping rather than the environment."""
    scrub_logger(logging.getLogger("apprise"), secrets)


def alert_urls(env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")) -> list[str]:
    """Apprise URLs from ``FUNDARB_ALERT_URLS`` (environment first, then .env)."""
    text = (os.environ if env is None else env).get(ENV_URLS)
    if text is None and dotenv is not None and dotenv.is_file():
        from dotenv import dotenv_values

        text = dotenv_values(dotenv).get(ENV_URLS)
    return [u for u in re.split(r"[\s,]+", text or "") if u]


def channel_from_env(env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")) -> AppriseChannel | None:
    urls = alert_urls(env, dotenv)
    return AppriseChannel(urls) if urls else None
