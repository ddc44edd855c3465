"""OpenRLHF (tested with 0.11.2): point the trainer at the gateway's ``/get_reward`` endpoint.

    --reward.remote_url http://127.0.0.1:8080/get_reward --data.label_key rubrics

OpenRLHF POSTs ``{"query": [prompt + response], "prompts": [prompt], "labels": [label]}`` one sample per
request, where ``label`` is the dataset's ``--data.label_key`` column: store each sample's rubrics there
as JSON text (:func:`rubrics_label`, optionally with the plain question, since OpenRLHF's prompt carries
the chat template). The gateway splits the response off ``query`` (special tokens kept, prompt possibly
cut from the left), answers a float reward for every sample (``rubric-verifier serve --unjudgeable-reward``,
default 0.0, for one it cannot judge) and ``extra_logs`` with the same numeric keys for every sample
(``support_rate``, ``vital_coverage``, ``unjudgeable``, ``latency_s``, ...), which OpenRLHF logs. With a
gateway token, append ``?token=...`` to the URL: OpenRLHF sends no headers. :func:`get_reward` sends
OpenRLHF's exact request, for smoke checks.
"""

from __future__ import annotations

import json
from typing import Any

from verifier.integrations._client import pooled_client


def rubrics_label(rubrics: list[Any], question: str | None = None) -> str:
    """The label-column value for one sample: its rubrics (strings or rubric dicts) as JSON text, with the
    question when given (the gateway judges against it instead of the templated prompt)."""
    if question is None:
        return json.dumps(rubrics, ensure_ascii=False)
    return json.dumps({"question": question, "rubrics": rubrics}, ensure_ascii=False)


def reward_request(queries: list[str], prompts: list[str], labels: list[str]) -> dict[str, list[str]]:
    return {"query": list(queries), "prompts": list(prompts), "labels": list(labels)}


async def get_reward(
    url: str, queries: list[str], prompts: list[str], labels: list[str], timeout: float = 180.0
) -> dict[str, Any]:
    """POST OpenRLHF's request to ``url`` (the full ``.../get_reward`` address) and return the JSON answer."""
    response = await pooled_client().post(url, json=reward_request(queries, prompts, labels), timeout=timeout)
    response.raise_for_status()
    return response.json()
