"""The one HTTP call every integration makes: POST items to the gateway's ``/v1/judge``.

One pooled ``httpx.AsyncClient`` per process and event loop (RL frameworks call the reward function once
per sample, thousands of times a step), retried through :mod:`rubric_pipeline.core.http` when the
connection broke or the gateway asked to come back (503 + Retry-After while its queue is full); other 4xx
answers are final. Sync callers (verl's ``remote`` reward manager) run the same coroutine on one
background event loop per process. Imports only the standard library and httpx: the adapters install
into the RL frameworks' own environments.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from rubric_pipeline.core.http import RetryPolicy, send_with_retries
from rubric_pipeline.core.records import parse_rubric_list

logger = logging.getLogger(__name__)
T = TypeVar("T")

# 503 is what a full gateway answers; 502/504 come from a proxy in front of it. A read timeout means the
# gateway is still judging: resending would pile work on it, so it is final.
RETRY = RetryPolicy(retries=8, backoff_s=0.5, statuses=frozenset({502, 503, 504}), retry_read_timeout=False)
LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128)
# Calls past this wait on a semaphore, not in httpx's pool: the pool re-scans every waiting request on each
# connection event, so thousands of waiters cost it minutes (bench/rl_load.py: 2,000 calls in flight).
MAX_IN_FLIGHT = 256

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


class GatewayError(RuntimeError):
    """The gateway refused the request for good (4xx other than a retryable one, or retries spent)."""

    def __init__(self, url: str, status: int | None, message: str):
        super().__init__(f"POST {url}: {f'HTTP {status}' if status else 'no answer'}: {message}")
        self.url, self.status = url, status


def rubrics_from(value: Any) -> list[dict[str, Any]]:
    """A sample's rubrics (a list of strings / rubric dicts, or that list as JSON text), each checked by
    the one rubric parser and sent in the record's dict form; a bad one raises RecordError."""
    return [rubric.to_dict() for rubric in parse_rubric_list(value)]


def judge_url(url: str) -> str:
    """Accept the gateway root or the full endpoint."""
    url = url.rstrip("/")
    return url if url.endswith("/v1/judge") else f"{url}/v1/judge"


def pooled_client() -> httpx.AsyncClient:
    """This event loop's client, created on first use and reused by every later call on the loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = _clients[loop] = httpx.AsyncClient(limits=LIMITS, timeout=httpx.Timeout(300.0, pool=None))
    return client


def in_flight_gate() -> asyncio.Semaphore:
    """This event loop's bound on requests handed to the pooled client at once."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(MAX_IN_FLIGHT)
    return gate


async def post_judge(
    url: str,
    items: list[dict[str, Any]],
    *,
    aggregation: str | None = None,
    timeout: float = 300.0,
    token: str | None = None,
    client: httpx.AsyncClient | None = None,
    retries: int | None = None,
    backoff_s: float | None = None,
) -> list[dict[str, Any]]:
    """Results (``{labels, reward, error, reason, stats}``) in item order. Raises :class:`GatewayError`
    for a final HTTP error, or the transport error once the retries are spent."""
    body: dict[str, Any] = {"items": items}
    if aggregation is not None:
        body["aggregation"] = aggregation
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http, endpoint = client or pooled_client(), judge_url(url)
    policy = RetryPolicy(
        RETRY.retries if retries is None else retries,
        RETRY.backoff_s if backoff_s is None else backoff_s,
        statuses=RETRY.statuses,
        retry_read_timeout=False,
    )

    def warn(attempt: int) -> None:
        logger.warning("POST %s: no answer or busy; retry %d/%d", endpoint, attempt, policy.retries)

    async with in_flight_gate():
        outcome = await send_with_retries(
            lambda attempt: http.post(endpoint, json=body, headers=headers, timeout=timeout),
            policy,
            what=f"POST {endpoint}",
            on_retry=warn,
        )
    if outcome.error is not None:
        raise outcome.error
    response = outcome.response
    if response.status_code != 200:
        raise GatewayError(endpoint, response.status_code, response.text[:500])
    return response.json()["results"]


class _BackgroundLoop:
    """One event loop on a daemon thread, shared by every sync call of the process."""

    def __init__(self) -> None:
        self._reset()
        # A forked child has the loop object but not its thread: it starts its own.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="rv-reward-client", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


run_sync = _BackgroundLoop().run
