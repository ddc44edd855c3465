"""TRL (tested with 1.16): an async reward function that scores completions against each sample's rubrics.

    from verifier.integrations.trl import RubricReward

    reward = RubricReward("http://127.0.0.1:8080", rubrics_column="rubrics")
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=dataset, args=GRPOConfig(...))

The dataset needs a ``rubrics`` column (list of strings / rubric dicts, or JSON text of one); TRL passes
every extra column to reward functions as a keyword list. Unjudgeable samples get ``None``, which TRL
skips instead of reading as a genuine 0; so do samples the gateway never answered (a timeout, a refused
connection: logged and counted in ``unjudgeable_frac``). A batch larger than the gateway's ``max_items``
is sent as several concurrent requests. Beside the reward, TRL's ``log_metric`` receives the batch means of
``support_rate``, ``vital_coverage``, ``latency_s`` and the unjudgeable fraction (``rubric_reward/...``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from verifier.integrations._client import post_judge, rubrics_from

logger = logging.getLogger(__name__)

LOGGED_STATS = ("support_rate", "vital_coverage", "latency_s")


def message_text(value: Any, role: str | None = None) -> str:
    """Plain text of a prompt or completion: a string, or a conversation (the last message of ``role``)."""
    if isinstance(value, str):
        return value
    messages = [m for m in value if role is None or m.get("role") == role] or list(value)
    content = messages[-1].get("content", "") if messages else ""
    if isinstance(content, list):  # multimodal-style content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


class RubricReward:
    """A ``reward_funcs`` entry for TRL's GRPOTrainer (any trainer calling ``f(prompts, completions)``)."""

    def __init__(
        self,
        url: str,
        rubrics_column: str = "rubrics",
        question_column: str | None = None,
        aggregation: str | None = None,
        timeout: float = 300.0,
        token: str | None = None,
        max_items: int = 256,
    ):
        """``max_items``: items per request, at most the gateway's ``--max-items`` (default 256)."""
        self.url = url
        self.rubrics_column = rubrics_column
        self.question_column = question_column
        self.aggregation = aggregation
        self.timeout = timeout
        self.token = token
        self.max_items = max_items
        self.__name__ = "rubric_reward"  # TRL logs rewards under the function's name
        self.calls = 0

    async def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        if self.rubrics_column not in kwargs:
            raise KeyError(f"no dataset column {self.rubrics_column!r} reached the reward function")
        questions = kwargs[self.question_column] if self.question_column else prompts
        items = [
            {
                "question": message_text(question, "user"),
                "response": message_text(completion, "assistant"),
                "rubrics": rubrics_from(rubrics),
            }
            for question, completion, rubrics in zip(
                questions, completions, kwargs[self.rubrics_column], strict=True
            )
        ]
        self.calls += 1
        chunks = [items[i : i + self.max_items] for i in range(0, len(items), self.max_items)]
        answers = await asyncio.gather(*(self._judge(chunk) for chunk in chunks))
        results = [result for answer in answers for result in answer]
        unjudgeable = [r for r in results if r["reward"] is None]
        if callable(kwargs.get("log_metric")) and results:  # TRL >= 1.16 logs these beside the reward
            log = kwargs["log_metric"]
            log("rubric_reward/unjudgeable_frac", len(unjudgeable) / len(results))
            for key in LOGGED_STATS:
                log(f"rubric_reward/{key}", sum(r["stats"][key] for r in results) / len(results))
        if unjudgeable:
            logger.warning(
                "%d/%d samples unjudgeable: %s", len(unjudgeable), len(results), unjudgeable[0]["error"]
            )
        return [result["reward"] for result in results]

    async def _judge(self, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One request; a gateway that never answered (timeout, refused) leaves the chunk unjudgeable
        (None, counted and logged) rather than ending the run. HTTP errors (401, 413, 422) still raise."""
        try:
            return await post_judge(
                self.url, chunk, aggregation=self.aggregation, timeout=self.timeout, token=self.token
            )
        except httpx.TransportError as exc:
            error = f"no answer from the gateway: {type(exc).__name__}: {exc}"
            stats = dict.fromkeys(LOGGED_STATS, 0.0)
            return [{"reward": None, "error": error, "reason": "gateway_error", "stats": stats}] * len(chunk)
