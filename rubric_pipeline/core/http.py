"""HTTP retries with backoff, written once: the LLM client, the web-search backend and the RL-framework
adapters all send through :func:`send_with_retries`.

It imports only the standard library and httpx, because the adapters install into the RL frameworks' own
environments. A retry is safe for every caller (an LLM call, a search, a judgement have no side effects).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` further attempts after the first; delay ``backoff_s * 2**n`` (jittered, capped), or the
    server's ``Retry-After`` when longer. Other 4xx answers are final: sending them again cannot help."""

    retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    jitter: bool = True
    statuses: frozenset[int] = field(default=RETRY_STATUSES)
    # A read timeout means the server is still working on the request: resending piles work on it.
    retry_read_timeout: bool = True

    def delay(self, attempt: int, retry_after: float = 0.0) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        if self.jitter:
            delay *= random.uniform(0.5, 1.5)
        return max(delay, min(retry_after, self.max_backoff_s))

    def retryable_error(self, exc: httpx.HTTPError) -> bool:
        if not isinstance(exc, httpx.TransportError):
            return False
        return self.retry_read_timeout or not isinstance(exc, httpx.ReadTimeout)


def retry_after_s(response: httpx.Response) -> float:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date); 0 when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


@dataclass
class Outcome:
    """How a call ended: the last response (any status), or the transport error that ended it."""

    response: httpx.Response | None
    error: httpx.TransportError | None
    attempts: int

    @property
    def reason(self) -> str:
        if self.response is not None:
            return self.response.text[:500]
        return f"{type(self.error).__name__}: {self.error}"


async def send_with_retries(
    send: Callable[[int], Awaitable[httpx.Response]],
    policy: RetryPolicy,
    *,
    what: str = "request",
    on_retry: Callable[[int], None] | None = None,
) -> Outcome:
    """Call ``send(attempt)`` until it returns a status outside ``policy.statuses``, raises a transport
    error the policy does not retry, or the retries are spent; the caller turns the outcome into its own
    result or error. A non-transport exception propagates at once."""
    attempt = 0
    while True:
        attempt += 1
        retry_after = 0.0
        try:
            response = await send(attempt)
        except httpx.TransportError as exc:
            outcome = Outcome(None, exc, attempt)
            if not policy.retryable_error(exc) or attempt > policy.retries:
                return outcome
            logger.debug("%s attempt %d failed: %s", what, attempt, outcome.reason)
        else:
            if response.status_code not in policy.statuses or attempt > policy.retries:
                return Outcome(response, None, attempt)
            retry_after = retry_after_s(response)
            logger.debug("%s attempt %d: HTTP %d", what, attempt, response.status_code)
        if on_retry is not None:
            on_retry(attempt)
        await asyncio.sleep(policy.delay(attempt, retry_after))
