"""Waiting before a retry: one back-off policy and one ``Retry-After`` reader,
shared by the history fetcher, the live request queue and the live feeds.

``BackoffPolicy.delay(attempt, retry_after=None)`` is, in seconds:

- the back-off ``min(cap, base * factor**attempt)``; ``attempt`` counts the
  waits before this one (0 for the first), so the delays run ``base``,
  ``base * factor``, ... up to ``cap``;
- or the venue's Retry-After when that is longer;
- times a jitter factor drawn from ``rng`` (``rng.uniform``): a positive
  ``jitter`` lengthens the delay by up to that fraction of itself
  (``0.25``: up to 25 % more), a negative one shortens it by up to that
  fraction (``-1.0``: anywhere between 0 and the delay, "full jitter"), 0
  draws nothing;
- never shorter than the Retry-After (jitter does not undercut what the
  venue asked for), and, when ``retry_after_cap`` is set and a Retry-After is
  given, never longer than ``retry_after_cap``.

``budget`` (optional) bounds the seconds one request may spend waiting in
all; ``over_budget(waited, delay)`` tells the caller the next wait would go
beyond it. How many attempts to make, and what to do with a Retry-After the
caller will not wait out (give up, ban the venue), stay with the caller.

``parse_retry_after(headers)`` reads the header (key in any case) as
delta-seconds or an HTTP-date; absent, garbage, negative or non-finite
values are None.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import attrs


def _non_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value >= 0:  # NaN fails too
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _optional_non_negative(instance: Any, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None:
        _non_negative(instance, attribute, value)


def _at_least_one(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value >= 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _jitter(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not (math.isfinite(value) and value >= -1.0):
        raise ValueError(f"jitter must be a finite fraction >= -1, got {value!r}")


@attrs.frozen
class BackoffPolicy:
    """How long to wait before retry number ``attempt + 1``; see the module's doc."""

    base: float = attrs.field(converter=float, validator=_non_negative)
    cap: float = attrs.field(converter=float, validator=_non_negative)
    factor: float = attrs.field(default=2.0, converter=float, validator=_at_least_one)
    jitter: float = attrs.field(default=0.0, converter=float, validator=_jitter)
    retry_after_cap: float | None = attrs.field(default=None, validator=_optional_non_negative)
    budget: float | None = attrs.field(default=None, validator=_optional_non_negative)
    rng: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)

    def backoff(self, attempt: int) -> float:
        """The back-off alone, before jitter: ``min(cap, base * factor**attempt)``."""
        attempt = max(int(attempt), 0)
        if self.base == 0:
            return 0.0
        try:
            step = self.base * self.factor ** attempt
        except OverflowError:  # a retry loop that runs for hours reaches the cap, not an error
            step = math.inf
        return min(self.cap, step)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt, ``attempt`` waits having gone
        before; ``retry_after`` is the venue's Retry-After in seconds (ignored
        when None, negative or not finite)."""
        asked = retry_after if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0 else None
        d = self.backoff(attempt)
        if asked is not None:
            d = max(d, asked)
        if self.jitter > 0:
            d = d * self.rng.uniform(1.0, 1.0 + self.jitter)
        elif self.jitter < 0:
            d = d * self.rng.uniform(1.0 + self.jitter, 1.0)
        if asked is None:
            return d
        d = max(asked, d)
        return d if self.retry_after_cap is None else min(self.retry_after_cap, d)

    def over_budget(self, waited: float, delay: float) -> bool:
        """True when waiting ``delay`` more, after ``waited``, would go beyond the budget."""
        return self.budget is not None and waited + delay > self.budget


def parse_retry_after(headers: Mapping[str, Any] | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a ``Retry-After`` header (any case): delta-seconds (int or
    float), or an HTTP-date (seconds from ``now()``, 0 when past). None when
    the header is absent, garbage, negative or not finite."""
    items = getattr(headers, "items", None) if headers else None
    if items is None:
        return None
    for key, value in items():
        if isinstance(key, str) and key.lower() == "retry-after":
            return _seconds(value, now)
    return None


def _seconds(value: Any, now: Callable[[], float]) -> float | None:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1")
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        return _date_seconds(text, now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _date_seconds(text: str, now: Callable[[], float]) -> float | None:
    if not any(c.isalpha() for c in text):
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's UTC without a zone
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


__all__ = ["BackoffPolicy", "parse_retry_after"]
