"""verl (tested with 0.9.1): ``compute_score`` for ``reward.custom_reward_function``.

    reward.custom_reward_function.path=pkg://verifier.integrations.verl
    reward.custom_reward_function.name=compute_score    # compute_score_sync with reward_manager.name=remote
    +reward.custom_reward_function.reward_kwargs.url=http://127.0.0.1:8080

``pkg://`` imports the installed module on every Ray worker, whatever its working directory (a relative
``path:`` does not). ``ground_truth`` carries the sample's rubrics (a list, or its JSON); the question comes
from ``extra_info["question"]`` when present. verl stacks every returned key across the batch with
``np.array`` and averages each in its metrics, so the dict holds ``score`` and scalar floats only, under the
same keys for every sample: the gateway's stats (``support_rate``, ``vital_coverage``, ``n_rubrics``,
``judged``, ``unjudgeable``, ``degenerate``, ``latency_s``) and ``gateway_error``. An unjudgeable sample, or
one the gateway never answered (timeout, refused), scores ``reward_kwargs.unjudgeable_score`` (default
0.0) with ``unjudgeable`` = 1.0, logged; it never raises into the training loop.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from verifier.integrations._client import GatewayError, post_judge, rubrics_from, run_sync
from verifier.serve.contract import STAT_KEYS

logger = logging.getLogger(__name__)

UNJUDGEABLE_SCORE = 0.0


def _item(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any]) -> dict:
    try:
        rubrics = rubrics_from(ground_truth)
    except ValueError as exc:  # a data bug, not an unjudgeable sample: say which field
        raise ValueError(f"{data_source}: reward_model.ground_truth: {exc}") from None
    return {"question": str(extra_info.get("question", "")), "response": solution_str, "rubrics": rubrics}


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **reward_kwargs: Any,
) -> dict[str, float]:
    """``{"score", <stats>, "gateway_error"}`` for one sample, judged by the gateway at
    ``reward_kwargs["url"]`` (also read: ``aggregation``, ``timeout``, ``token``, ``unjudgeable_score``)."""
    if "url" not in reward_kwargs:
        raise KeyError("set reward_kwargs.url to the reward gateway, e.g. http://127.0.0.1:8080")
    item = _item(data_source, solution_str, ground_truth, extra_info or {})
    fallback = float(reward_kwargs.get("unjudgeable_score", UNJUDGEABLE_SCORE))
    try:
        (result,) = await post_judge(
            reward_kwargs["url"],
            [item],
            aggregation=reward_kwargs.get("aggregation"),
            timeout=float(reward_kwargs.get("timeout", 300.0)),
            token=reward_kwargs.get("token"),
        )
    except (httpx.HTTPError, GatewayError) as exc:
        logger.warning(
            "%s: no judgement from the gateway (%s); score %g, flagged", data_source, exc, fallback
        )
        stats = dict.fromkeys(STAT_KEYS, 0.0) | {"n_rubrics": float(len(item["rubrics"])), "unjudgeable": 1.0}
        return {"score": fallback, **stats, "gateway_error": 1.0}
    if result["reward"] is None:
        logger.warning(
            "%s: unjudgeable (%s): %s; score %g", data_source, result["reason"], result["error"], fallback
        )
    score = fallback if result["reward"] is None else float(result["reward"])
    stats = {key: float(result["stats"][key]) for key in STAT_KEYS}
    return {"score": score, **stats, "gateway_error": 0.0}


def compute_score_sync(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **reward_kwargs: Any,
) -> dict[str, float]:
    """:func:`compute_score` for callers that need a plain function (verl's ``remote`` reward manager
    asserts its reward function is not async); runs on one background event loop per process."""
    return run_sync(compute_score(data_source, solution_str, ground_truth, extra_info, **reward_kwargs))
