"""verl: an async ``compute_score`` for ``reward.custom_reward_function``.

    reward:
      custom_reward_function:
        path: <site-packages>/verifier/integrations/verl.py
        name: compute_score
        reward_kwargs: {url: "http://127.0.0.1:8080"}

``ground_truth`` carries the sample's rubrics (a list, or its JSON); the question comes from
``extra_info["question"]`` when present. verl needs a float score: an unjudgeable sample raises unless
``reward_kwargs`` sets ``unjudgeable_score``; the returned dict then flags it (``unjudgeable`` = 1.0, which
verl averages into its reward metrics, and ``reason`` / ``error`` say why), so the fallback is never a
silent score.
"""

from __future__ import annotations

from typing import Any

from verifier.integrations._client import post_judge, rubrics_from


class Unjudgeable(RuntimeError):
    """The gateway could not judge the sample and no ``unjudgeable_score`` was configured."""


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **reward_kwargs: Any,
) -> dict[str, Any]:
    """``{"score", "unjudgeable", "reason", "labels", "error"}`` for one sample, judged by the gateway at
    ``reward_kwargs["url"]``."""
    if "url" not in reward_kwargs:
        raise KeyError("set reward_kwargs.url to the reward gateway, e.g. http://127.0.0.1:8080")
    extra_info = extra_info or {}
    item = {
        "question": str(extra_info.get("question", "")),
        "response": solution_str,
        "rubrics": rubrics_from(ground_truth),
    }
    (result,) = await post_judge(
        reward_kwargs["url"],
        [item],
        aggregation=reward_kwargs.get("aggregation"),
        timeout=float(reward_kwargs.get("timeout", 300.0)),
        token=reward_kwargs.get("token"),
    )
    score, unjudgeable = result["reward"], result["reward"] is None
    if unjudgeable:
        if reward_kwargs.get("unjudgeable_score") is None:
            raise Unjudgeable(f"{data_source}: unjudgeable ({result['reason']}): {result['error']}")
        score = float(reward_kwargs["unjudgeable_score"])
    return {
        "score": score,
        "unjudgeable": float(unjudgeable),
        "reason": result["reason"],
        "labels": result["labels"],
        "error": result["error"],
    }
