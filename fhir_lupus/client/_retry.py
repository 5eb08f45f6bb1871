"""Retries live in a transport that wraps the real one; ``classify`` decides what is worth retrying.

Only requests that are safe to repeat are retried: GET/HEAD/PUT/DELETE, and POSTs the caller marked
idempotent (a transaction made only of conditional entries, a conditional create). Transient means
transport errors (connect, read, timeouts) and what ``classify`` calls transient (408, 429, 500, 502, 503,
504); everything else is final, except a conflict (409) on a write we send without If-Match: there it can
only mean the server lost a lock or version race (HAPI answers 409 when its database times out on a lock),
and the conditional write is re-evaluated. The body is not read to decide: the status alone says it.
Delays grow exponentially with full jitter and honour Retry-After (seconds or HTTP date), capped.
A request marked ``FIRST_CONTACT`` (``FhirClient.reach``: a run's first request) is not sent again when no
connection could be made: nothing is under way yet, and a wrong URL should fail at once, not after the back-off.
Each retry is logged at INFO (``fhir-lupus -v`` shows them).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from fhir_lupus._logredact import get_logger, redact_url
from fhir_lupus.client._classify import classify

__all__ = ["FIRST_CONTACT", "IDEMPOTENT", "RetryPolicy", "RetryTransport", "retry_after_seconds", "retryable"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
IDEMPOTENT = "fhir_lupus.idempotent"  # request extension: True when a POST may be repeated safely
FIRST_CONTACT = "fhir_lupus.first_contact"  # request extension: True when no connection means a wrong URL
logger = get_logger(__name__)


def retryable(response: httpx.Response, request: httpx.Request) -> bool:
    """True when the answer may change if the (safe) request goes again: transient, or a lock or version race."""
    verdict = classify(response.status_code)
    return verdict == "transient" or (verdict == "conflict" and "If-Match" not in request.headers)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait per a Retry-After header (delta-seconds or HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    retry_after_cap: float = 120.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**attempt)]."""
        return float(self.rng() * min(self.max_delay, self.base_delay * (2**attempt)))


class RetryTransport(httpx.BaseTransport):
    """Wraps a transport; repeats safe requests on transient failures, then hands back the last answer."""

    def __init__(self, inner: httpx.BaseTransport, policy: RetryPolicy | None = None) -> None:
        self._inner = inner
        self.policy = policy or RetryPolicy()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        safe = request.method in SAFE_METHODS or bool(request.extensions.get(IDEMPOTENT))
        first = bool(request.extensions.get(FIRST_CONTACT))
        last = self.policy.attempts - 1
        for attempt in range(self.policy.attempts):
            try:
                response = self._inner.handle_request(request)
            except httpx.TransportError as exc:
                unconnected = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                # A connect error never reached the server, so even an unsafe request may go again.
                if attempt == last or (first and unconnected) or not (safe or isinstance(exc, httpx.ConnectError)):
                    raise
                self._sleep(request, self.policy.backoff(attempt), attempt, type(exc).__name__)
                continue
            if attempt == last or not safe or not retryable(response, request):
                return response
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            response.read()
            response.close()
            delay = min(wait, self.policy.retry_after_cap) if wait is not None else self.policy.backoff(attempt)
            self._sleep(request, delay, attempt, str(response.status_code))
        raise AssertionError("unreachable: the loop returns or raises on its last attempt")

    def _sleep(self, request: httpx.Request, delay: float, attempt: int, why: str) -> None:
        where = redact_url(str(request.url))
        logger.info(
            "%s %s: %s; attempt %d of %d in %.1f s",
            request.method,
            where,
            why,
            attempt + 2,
            self.policy.attempts,
            delay,
        )
        self.policy.sleep(delay)

    def close(self) -> None:
        self._inner.close()
