"""One rate-limit-aware request queue per venue; every live ccxt call goes through it.

ccxt's own limiter (``enableRateLimit``) is switched off on live clients: this
queue replaces it, so that retries, venue-wide pauses and throttling share one
clock and one order.

Rules (``RequestQueue.call(fn, *args, weight=w, retry=r, **kwargs)``):

- Token bucket: capacity ``burst``, refilled at ``rate_per_second``:
  ``tokens = min(burst, tokens + rate_per_second * (now - stamp))``. A call of
  weight ``w`` waits (injected ``sleep``, measured with injected ``monotonic``)
  until ``tokens >= w``, then takes ``w``. ``w > burst`` (or ``w <= 0``) is a
  ``ValueError`` at call time: it could never run. Callers are served in
  arrival order (FIFO, an ``asyncio.Lock`` around the acquire), so a heavy call
  is not starved by light ones.
- Retryable: exactly ``ccxt.NetworkError`` and subclasses (DDoSProtection,
  RateLimitExceeded, ExchangeNotAvailable, RequestTimeout, InvalidNonce ...).
  Anything else is raised at once. ``retry=False`` (order placement: the
  caller looks the order up before resending) raises retryable errors at once
  too, but a rate-limit error still pauses the venue for later calls.
- Back-off (full jitter, ``fundarb.support.backoff.BackoffPolicy`` with
  ``jitter=-1``): retry ``n`` (n=1 for the first retry) waits
  ``delay_n = min(max_delay_s, base_delay_s * 2**(n-1)) * rng.uniform(0, 1)``.
  At most ``max_attempts`` attempts; then the last error is re-raised as is
  (same object, same type: a timeout stays a timeout).
- Rate-limit errors (``ccxt.DDoSProtection``, ``ccxt.RateLimitExceeded``; HTTP
  429, Binance 418): ccxt ignores ``Retry-After`` on REST, so it is read from
  ``headers()`` (``fundarb.support.backoff.parse_retry_after``: key
  case-insensitive, seconds, int or float, or an HTTP-date; garbage, missing,
  negative or non-finite values are ignored). The whole venue pauses:
  ``pause = min(MAX_PAUSE_S, max(retry_after, delay_n))`` and every call of the
  queue waits until ``now + pause``; the bucket restarts empty at the end of
  the pause. ``retry_after > MAX_PAUSE_S`` (120 s) is a ban: the error is
  raised (same type, message naming venue, method and Retry-After) instead of
  hanging, and until the ban ends every call of the queue raises at once
  without touching the venue.
- Messages and ``stats.last_error`` name the venue, the method
  (``fn.__name__``) and the error type only, never the arguments or the
  exchange's text (signed URLs and params may carry keys).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs
import ccxt

from fundarb.support.backoff import BackoffPolicy, parse_retry_after

T = TypeVar("T")

MAX_PAUSE_S = 120.0
RATE_LIMIT_ERRORS: tuple[type[Exception], ...] = (ccxt.DDoSProtection, ccxt.RateLimitExceeded)
# Float refills can land a hair below the weight after sleeping exactly the
# deficit; without slack a fake clock (or a huge monotonic value) could loop on
# sleeps too small to move time.
_SLACK = 1e-9


@attrs.define
class QueueStats:
    calls: int = 0  # calls entered through call()
    attempts: int = 0  # times fn was actually invoked
    retries: int = 0  # attempts after a retryable failure
    throttled: int = 0  # acquires that had to wait for tokens
    paused_s: float = 0.0  # seconds slept for back-off or a venue pause
    last_error: str = ""


class RequestQueue:
    # told before each retry's pause: (what, failed attempt, seconds to the next, error); see fundarb.support.waits
    on_retry: Callable[[str, int, float, BaseException], None] | None = None

    def __init__(self, venue: str, *, rate_per_second: float, burst: float,
                 max_attempts: int = 5, base_delay_s: float = 0.25, max_delay_s: float = 8.0,
                 headers: Callable[[], Mapping[str, str] | None] = lambda: None,
                 rng: random.Random | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if not (rate_per_second > 0 and burst > 0 and max_attempts >= 1):
            raise ValueError(f"{venue}: need rate_per_second > 0, burst > 0, max_attempts >= 1")
        self.venue = venue
        self.rate = float(rate_per_second)
        self.burst = float(burst)
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.stats = QueueStats()
        self._headers = headers
        self._rng = rng if rng is not None else random.Random()
        # a rate-limit error asks for a pause even without a header: it is given
        # a Retry-After of at least 0, so its pause never exceeds MAX_PAUSE_S
        self.backoff = BackoffPolicy(base=base_delay_s, cap=max_delay_s, jitter=-1.0,
                                     retry_after_cap=MAX_PAUSE_S, rng=self._rng)
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = asyncio.Lock()  # FIFO waiters: arrival order is service order
        self._tokens = self.burst
        self._stamp = monotonic()
        self._paused_until = -math.inf
        self._ban_until = -math.inf
        self._ban_error: type[Exception] = ccxt.DDoSProtection

    @classmethod
    def for_exchange(cls, exchange: Any, **kw: Any) -> RequestQueue:
        """A queue sized from ccxt's ``rateLimit`` (ms between requests): rate = 1000/rateLimit per s."""
        rate_limit_ms = float(exchange.rateLimit)
        if not rate_limit_ms > 0:
            raise ValueError(f"{exchange.id}: rateLimit must be > 0 ms, got {rate_limit_ms}")
        rate = kw.pop("rate_per_second", 1000.0 / rate_limit_ms)
        kw.setdefault("burst", max(1.0, rate))
        # Read lazily: ccxt sets last_response_headers just before raising.
        kw.setdefault("headers", lambda: exchange.last_response_headers)
        return cls(exchange.id, rate_per_second=rate, **kw)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any,
                   weight: float = 1.0, retry: bool = True, **kwargs: Any) -> T:
        name = getattr(fn, "__name__", "call")
        if not 0 < weight <= self.burst:
            raise ValueError(f"{self.venue} {name}: weight {weight} outside (0, burst={self.burst:g}]")
        self.stats.calls += 1
        attempt = 0
        while True:
            attempt += 1
            await self._acquire(weight, name)
            self.stats.attempts += 1
            try:
                return await fn(*args, **kwargs)
            except ccxt.NetworkError as err:
                delay = self._on_retryable(err, name, attempt)
                if not retry or attempt >= self.max_attempts:
                    raise
                if self.on_retry is not None:
                    self.on_retry(f"{self.venue} {name}", attempt, max(delay, self._paused_until - self._monotonic()), err)
            except Exception as err:
                self._note(err, name, attempt)
                raise
            self.stats.retries += 1
            await self._pause(delay)

    def _on_retryable(self, err: Exception, name: str, attempt: int) -> float:
        """The per-call back-off still to sleep; rate-limit errors pause the venue instead."""
        self._note(err, name, attempt)
        # Headers are read before any await: another call's response would
        # overwrite exchange.last_response_headers once we yield.
        if not isinstance(err, RATE_LIMIT_ERRORS):
            return self.backoff.delay(attempt - 1)
        retry_after = parse_retry_after(self._headers())
        pause = self.backoff.delay(attempt - 1, retry_after or 0.0)
        self._pause_venue(err, name, retry_after, pause)
        return 0.0  # the pause is taken in _acquire, shared by every call

    def _pause_venue(self, err: Exception, name: str, retry_after: float | None, pause: float) -> None:
        now = self._monotonic()
        if retry_after is not None and retry_after > MAX_PAUSE_S:
            self._ban_until, self._ban_error = now + retry_after, type(err)
            raise type(err)(f"{self.venue} {name}: Retry-After {retry_after:g} s exceeds "
                            f"the {MAX_PAUSE_S:g} s pause cap; venue banned") from err
        self._paused_until = max(self._paused_until, now + pause)
        # The venue says we are over its limit: resuming with a full burst
        # would invite the next 429, so refill starts from empty after the pause.
        self._tokens = 0.0
        self._stamp = max(self._stamp, self._paused_until)

    async def _acquire(self, weight: float, name: str) -> None:
        async with self._lock:
            waited = False
            while True:
                now = self._monotonic()
                self._check_ban(now, name)
                if now < self._paused_until:
                    await self._pause(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens + _SLACK >= weight:
                    self._tokens -= weight
                    return
                if not waited:
                    self.stats.throttled += 1
                    waited = True
                await self._sleep((weight - self._tokens) / self.rate)

    def _check_ban(self, now: float, name: str) -> None:
        if now < self._ban_until:
            raise self._ban_error(f"{self.venue} {name}: venue banned for another "
                                  f"{self._ban_until - now:.0f} s (Retry-After above cap)")

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.paused_s += seconds
            await self._sleep(seconds)

    def _note(self, err: Exception, name: str, attempt: int) -> None:
        # Type name only: ccxt messages can hold the signed URL of the request.
        self.stats.last_error = f"{self.venue} {name}: {type(err).__name__} (attempt {attempt})"
