"""OpenRLHF's remote reward protocol (``POST /get_reward``) over :class:`RewardService`.

OpenRLHF 0.11 sends ``{"query": [...], "prompts": [...], "labels": [...]}`` where ``query[i]`` is the prompt
tokens plus the generated tokens decoded with special tokens kept, and the prompt tokens may have been
cut from the left to fit ``max_len``. The response is split off that text; when neither the prompt nor a
left-truncated end of it starts the query, the sample is unjudgeable (``prompt_mismatch``), never judged
as prompt + answer. OpenRLHF turns rewards into a float tensor, so an unjudgeable sample gets the
configured ``unjudgeable_reward`` (default 0.0) and is flagged in ``extra_logs``; it also ignores
Retry-After and ends the run after five failed tries, so this endpoint waits for room instead of 503.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from verifier.serve.service import (
    OVERLOADED,
    PROMPT_MISMATCH,
    STAT_KEYS,
    UNJUDGEABLE_REASONS,
    UNPARSABLE,
    BadInput,
    Item,
    ItemResult,
    QueueFull,
    RewardService,
    parse_rubrics,
)

# End-of-turn / end-of-text markers that a decode with special tokens kept leaves after the response.
END_MARKERS = (
    "<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<eos>",
    "</s>", "<|end|>", "<|return|>",
)  # fmt: skip
# A left-truncated prompt keeps at least this many characters before the response (OpenRLHF keeps
# max_len - max_new_tokens tokens); a shorter overlap is a coincidence, not the prompt.
MIN_OVERLAP = 8


def strip_end_markers(text: str) -> str:
    """Drop trailing end-of-turn markers (and the whitespace around them)."""
    stripped = text.rstrip()
    while True:
        for marker in END_MARKERS:
            if stripped.endswith(marker):
                stripped = stripped[: -len(marker)].rstrip()
                break
        else:
            return stripped


def split_response(query: str, prompt: str) -> str | None:
    """The generated text of ``query`` = prompt + response, or None when the prompt cannot be found.

    The whole prompt prefix is tried first, then the longest end of the prompt that starts the query
    (OpenRLHF cuts long prompts from the left)."""
    if query.startswith(prompt):
        return strip_end_markers(query[len(prompt) :])
    if not query:
        return None
    k = prompt.find(query[0], 1)
    while k != -1 and len(prompt) - k >= MIN_OVERLAP:
        if query.startswith(prompt[k:]):
            return strip_end_markers(query[len(prompt) - k :])
        k = prompt.find(query[0], k + 1)
    return None


def _label_parts(label: Any) -> tuple[str | None, Any]:
    """``labels[i]``: rubrics (list or JSON), or ``{"question", "rubrics"}`` (as JSON text too)."""
    if isinstance(label, str) and label.lstrip().startswith("{"):
        import json

        try:
            label = json.loads(label)
        except json.JSONDecodeError:
            return None, label  # parse_rubrics reports it with the field's location
    if isinstance(label, dict):
        question = label.get("question")
        return (question if isinstance(question, str) else None), label.get("rubrics", label)
    return None, label


def _items(
    service: RewardService, query: list[str], prompts: list[str], labels: list[Any]
) -> list[tuple[Item, str | None]]:
    """An item per sample, with the error text of a sample whose response cannot be split off."""
    if not len(query) == len(prompts) == len(labels):
        raise BadInput(
            ("body",), f"query, prompts, labels differ in length: {len(query)}, {len(prompts)}, {len(labels)}"
        )
    items: list[tuple[Item, str | None]] = []
    for index, (text, prompt, label) in enumerate(zip(query, prompts, labels, strict=True)):
        response = split_response(text, prompt)
        if isinstance(label, str) and label in service.rubric_sets:
            rubric_set = service.rubric_sets[label]
            item = Item(rubric_set.question, response or "", rubric_set.rubrics)
        else:
            question, rubrics = _label_parts(label)
            item = Item(question or prompt, response or "", parse_rubrics(rubrics, ("body", "labels", index)))
        error = None
        if response is None:
            error = (
                f"query[{index}] does not start with prompts[{index}] or a left-truncated end of it; "
                "its response cannot be told apart from the prompt"
            )
        items.append((item, error))
    return items


async def openrlhf_rewards(
    service: RewardService, query: list[str], prompts: list[str], labels: list[Any]
) -> dict[str, Any]:
    """``{"rewards", "scores", "extra_logs"}``: a float reward per sample (``unjudgeable_reward`` for an
    unjudgeable one) and the same numeric ``extra_logs`` keys for every sample: the result stats plus one
    ``unjudgeable/<reason>`` flag per reason."""
    built = _items(service, query, prompts, labels)
    judgeable = [item for item, error in built if error is None]
    try:
        judged = iter(
            await service.judge_items(
                judgeable, wait_s=service.limits.queue_wait_s, answer_within_s=service.limits.answer_within_s
            )
        )
    except QueueFull as exc:
        judged = iter(service.unjudgeable(judgeable, OVERLOADED, str(exc)))
    results = [
        next(judged) if error is None else service.unjudgeable([item], PROMPT_MISMATCH, error)[0]
        for item, error in built
    ]
    return render(results, service.unjudgeable_reward)


def render(results: Sequence[ItemResult], fallback: float) -> dict[str, Any]:
    rewards = [fallback if r.reward is None else r.reward for r in results]
    extra_logs: dict[str, list[float]] = {key: [r.stats[key] for r in results] for key in STAT_KEYS}
    for reason in UNJUDGEABLE_REASONS:  # a fixed key set: every sample and response has the same keys
        extra_logs[f"unjudgeable/{reason}"] = [
            1.0 if r.reward is None and (r.reason or UNPARSABLE) == reason else 0.0 for r in results
        ]
    return {"rewards": rewards, "scores": rewards, "extra_logs": extra_logs}
