"""The one HTTP call every integration makes: POST items to the gateway's ``/v1/judge``, retried when the
connection broke or the gateway asked to come back (judging is idempotent, so a retry is safe)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from rubric_pipeline.core.records import parse_rubric_list

logger = logging.getLogger(__name__)


def rubrics_from(value: Any) -> list[dict[str, Any]]:
    """A sample's rubrics (a list of strings / rubric dicts, or that list as JSON text), each checked by
    the one rubric parser and sent in the record's dict form; a bad one raises RecordError."""
    return [rubric.to_dict() for rubric in parse_rubric_list(value)]


def judge_url(url: str) -> str:
    """Accept the gateway root or the full endpoint."""
    url = url.rstrip("/")
    return url if url.endswith("/v1/judge") else f"{url}/v1/judge"


# Failures after which the same request is safe and worth sending again: judging has no side effects, and
# these mean the gateway never answered (the connection broke or was refused) or asked to come back (503).
RETRY_STATUS = frozenset({502, 503, 504})


def _retryable(exc: httpx.HTTPError) -> bool:
    """Transport failures other than a read timeout (the gateway is then busy judging: do not pile on)."""
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.ReadTimeout)


async def post_judge(
    url: str,
    items: list[dict[str, Any]],
    *,
    aggregation: str | None = None,
    timeout: float = 300.0,
    token: str | None = None,
    client: httpx.AsyncClient | None = None,
    retries: int = 3,
    backoff_s: float = 0.5,
) -> list[dict[str, Any]]:
    """Results (``{labels, reward, error, reason}``) in item order; HTTP errors raise once ``retries``
    further attempts are spent on broken connections and 502/503/504 answers (honouring Retry-After)."""
    body: dict[str, Any] = {"items": items}
    if aggregation is not None:
        body["aggregation"] = aggregation
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if client is None:
        async with httpx.AsyncClient(timeout=timeout) as own:
            return await _post_with_retries(own, judge_url(url), body, headers, timeout, retries, backoff_s)
    return await _post_with_retries(client, judge_url(url), body, headers, timeout, retries, backoff_s)


async def _post_with_retries(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout: float,
    retries: int,
    backoff_s: float,
) -> list[dict[str, Any]]:
    attempt = 0
    while True:
        delay = backoff_s * 2**attempt
        try:
            response = await client.post(url, json=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            if attempt >= retries or not _retryable(exc):
                raise
            logger.warning("POST %s failed (%r); retry %d/%d", url, exc, attempt + 1, retries)
        else:
            if response.status_code not in RETRY_STATUS or attempt >= retries:
                response.raise_for_status()
                return response.json()["results"]
            delay = max(delay, _retry_after(response))
            logger.warning("POST %s: HTTP %d; retry %d/%d", url, response.status_code, attempt + 1, retries)
        attempt += 1
        await asyncio.sleep(delay)


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", 0)), 30.0)
    except ValueError:
        return 0.0
