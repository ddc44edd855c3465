"""The one HTTP call every integration makes: POST items to the gateway's ``/v1/judge``."""

from __future__ import annotations

import json
from typing import Any

import httpx


def rubrics_from(value: Any) -> list[Any]:
    """A sample's rubrics: a list of strings / rubric dicts, or that list as JSON text."""
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict) and "rubrics" in value:
        value = value["rubrics"]
    if not isinstance(value, list):
        raise ValueError(f"expected a list of rubrics (or its JSON), got {type(value).__name__}")
    return [rubric if isinstance(rubric, str) else dict(rubric) for rubric in value]


def judge_url(url: str) -> str:
    """Accept the gateway root or the full endpoint."""
    url = url.rstrip("/")
    return url if url.endswith("/v1/judge") else f"{url}/v1/judge"


async def post_judge(
    url: str,
    items: list[dict[str, Any]],
    *,
    aggregation: str | None = None,
    timeout: float = 300.0,
    token: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> list[dict[str, Any]]:
    """Results (``{labels, reward, error, reason}``) in item order; HTTP errors raise."""
    body: dict[str, Any] = {"items": items}
    if aggregation is not None:
        body["aggregation"] = aggregation
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if client is None:
        async with httpx.AsyncClient(timeout=timeout) as own:
            response = await own.post(judge_url(url), json=body, headers=headers)
    else:
        response = await client.post(judge_url(url), json=body, headers=headers, timeout=timeout)
    response.raise_for_status()
    return response.json()["results"]
