"""OpenRLHF: point the trainer at the gateway's ``/get_reward`` endpoint.

    --remote_rm_url http://127.0.0.1:8080/get_reward      (``--reward.remote_url`` in newer releases)

OpenRLHF POSTs ``{"query": [prompt + response], "prompts": [prompt], "labels": [label]}`` where ``label``
is the dataset's label column (``--label_key``): store each sample's rubrics there as JSON text (see
:func:`rubrics_label`). The gateway answers ``{"rewards", "scores", "extra_logs"}``; the response is
``query`` minus the ``prompt`` prefix. Unjudgeable samples come back as ``null`` rewards, or as the
float given by ``rubric-verifier serve --unjudgeable-reward X`` (OpenRLHF needs floats); either way
``extra_logs`` flags them (``unjudgeable`` = 1, ``judged`` = 0, ``unjudgeable/<reason>`` = 1) and the
gateway's ``rv_unjudgeable_total`` counts them. :func:`get_reward` sends that exact request, for tests and
smoke checks.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


def rubrics_label(rubrics: list[Any]) -> str:
    """The label-column value for one sample: its rubrics (strings or rubric dicts) as JSON text."""
    return json.dumps(rubrics, ensure_ascii=False)


def reward_request(queries: list[str], prompts: list[str], labels: list[str]) -> dict[str, list[str]]:
    return {"query": list(queries), "prompts": list(prompts), "labels": list(labels)}


async def get_reward(
    url: str, queries: list[str], prompts: list[str], labels: list[str], timeout: float = 180.0
) -> dict[str, Any]:
    """POST OpenRLHF's request to ``url`` (the full ``.../get_reward`` address) and return the JSON answer."""
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.post(url, json=reward_request(queries, prompts, labels))
    response.raise_for_status()
    return response.json()
