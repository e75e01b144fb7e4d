"""Which of a venue's API hosts requests go to: the primary, until it fails
``fail_after`` times in a row (network errors, timeouts, 5xx), then the next
host in the list; each switch is reported once, and while a backup is in use
the primary is probed every ``probe_seconds`` and taken back as soon as a
probe answers.

Pure and clock-injected: the caller says what happened and when, and acts on
what it is told (log and alert a ``HostSwitch``, send the request to
``active``, send a probe when ``probe_due``). What counts as a failure is the
caller's: a refusal the venue answered (an insufficient balance, a 4xx) is
the host working, and is reported as a success. Order placement never
follows a switch blindly: whether an order sent through a failing host
reached the venue is the journal's question, asked by client id before any
resend, on whichever host is active then.
"""

from __future__ import annotations

import attrs

from fundarb.core.model import NS_PER_SECOND

FAIL_AFTER = 3  # failures in a row on one host before the next is tried
PROBE_SECONDS = 60.0  # how often the primary is probed while a backup is in use
BACK_TO_PRIMARY = "primary answers again"  # the reason of a switch back to the primary


@attrs.frozen
class HostSwitch:
    """Requests moved from ``old`` to ``new`` at ``ts`` (ns), and why."""

    ts: int
    old: str
    new: str
    reason: str

    @property
    def back_to_primary(self) -> bool:
        return self.reason == BACK_TO_PRIMARY


def _hosts(value: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    hosts = tuple(value)
    if not hosts:
        raise ValueError("a venue needs at least one API host")
    if len(set(hosts)) != len(hosts):
        raise ValueError(f"API hosts are listed twice: {', '.join(h for h in hosts if hosts.count(h) > 1)}")
    return hosts


@attrs.define
class HostFailover:
    """The hosts of one venue's API, primary first."""

    hosts: tuple[str, ...] = attrs.field(converter=_hosts)
    fail_after: int = attrs.field(default=FAIL_AFTER, validator=attrs.validators.ge(1))
    probe_seconds: float = attrs.field(default=PROBE_SECONDS, validator=attrs.validators.gt(0))
    index: int = 0  # the host in use
    failures: int = 0  # in a row, on the host in use
    last_probe: int | None = None  # ns of the last probe of the primary

    @property
    def active(self) -> str:
        return self.hosts[self.index]

    @property
    def primary(self) -> str:
        return self.hosts[0]

    @property
    def on_backup(self) -> bool:
        return self.index != 0

    def success(self, now: int) -> None:
        """A request on the active host got the venue's answer (a refusal included)."""
        self.failures = 0

    def failure(self, now: int, why: str) -> HostSwitch | None:
        """A request on the active host failed (``why``: the error, one line).
        The switch to the next host when this is the ``fail_after``-th failure
        in a row; None otherwise, and always with a single host (nowhere to
        go: the caller's back-off and alerts carry on)."""
        self.failures += 1
        if self.failures < self.fail_after or len(self.hosts) == 1:
            return None
        old = self.active
        self.index = (self.index + 1) % len(self.hosts)
        self.failures = 0
        if self.on_backup and self.last_probe is None:
            self.last_probe = now  # the primary was just tried: the first probe waits a whole interval
        return HostSwitch(now, old, self.active, f"{self.fail_after} failures in a row ({why})")

    def probe_due(self, now: int) -> bool:
        """Whether to probe the primary now (only while a backup is in use)."""
        if not self.on_backup:
            return False
        return self.last_probe is None or now - self.last_probe >= self.probe_seconds * NS_PER_SECOND

    def probed(self, now: int, answered: bool) -> HostSwitch | None:
        """The primary was probed at ``now``: back to it when it ``answered``."""
        self.last_probe = now
        if not answered or not self.on_backup:
            return None
        old = self.active
        self.index, self.failures, self.last_probe = 0, 0, None
        return HostSwitch(now, old, self.primary, BACK_TO_PRIMARY)
