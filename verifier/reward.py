"""Reward semantics: per-rubric labels + importance -> one scalar, and the stage-2 RL training reward.

Scores per label: support 1.0, partial_support 0.5, not_support 0.0 (``strict_*`` modes count partial
as 0, as nuggetizer's strict scores do). :func:`score` returns a :class:`RewardResult` whose ``value`` is
None with a ``reason`` when the item cannot be scored (no rubrics, no vital rubric in a vital mode, no
labels); :func:`aggregate` is the float-or-None shorthand.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rubric_pipeline.schema import LABEL_SCORES, LABELS, Importance, Rubric

DEGENERATE = "degenerate"


class Aggregation(StrEnum):
    WEIGHTED = "weighted"
    ALL = "all"
    VITAL = "vital"
    STRICT_ALL = "strict_all"
    STRICT_VITAL = "strict_vital"


@dataclass(frozen=True)
class RewardResult:
    value: float | None
    reason: str | None = None


def _as_rubric(rubric: Rubric | dict[str, Any] | str, index: int) -> Rubric:
    return rubric if isinstance(rubric, Rubric) else Rubric.from_dict(rubric, index)


def score(
    labels: Sequence[str] | None,
    rubrics: Sequence[Rubric | dict[str, Any] | str],
    mode: Aggregation | str = Aggregation.WEIGHTED,
) -> RewardResult:
    """Aggregate labels into a reward in [0, 1]; unscorable items give ``value=None`` and a reason.

    Raises ``ValueError`` for a label count that does not match the rubrics or an unknown label: that is a
    caller's bug, not an unjudgeable item.
    """
    mode = Aggregation(mode)
    if labels is None:
        return RewardResult(None, "no labels (the judgement failed)")
    if not rubrics:
        return RewardResult(None, "no rubrics to score against")
    if len(labels) != len(rubrics):
        raise ValueError(f"{len(labels)} labels for {len(rubrics)} rubrics")
    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise ValueError(f"unknown labels {unknown}; known: {list(LABELS)}")
    items = [
        (_as_rubric(rubric, i), label) for i, (rubric, label) in enumerate(zip(rubrics, labels, strict=True))
    ]
    if mode is Aggregation.WEIGHTED:
        total = sum(rubric.effective_weight() for rubric, _ in items)
        if total <= 0:
            return RewardResult(None, "rubric weights sum to zero")
        return RewardResult(
            sum(rubric.effective_weight() * LABEL_SCORES[label] for rubric, label in items) / total
        )
    if mode in (Aggregation.VITAL, Aggregation.STRICT_VITAL):
        items = [(rubric, label) for rubric, label in items if rubric.importance == Importance.VITAL]
        if not items:
            return RewardResult(None, f"no vital rubric for mode {mode.value!r}")
    strict = mode in (Aggregation.STRICT_ALL, Aggregation.STRICT_VITAL)
    scores = [(1.0 if label == "support" else 0.0) if strict else LABEL_SCORES[label] for _, label in items]
    return RewardResult(sum(scores) / len(scores))


def aggregate(
    labels: Sequence[str] | None,
    rubrics: Sequence[Rubric | dict[str, Any] | str],
    mode: Aggregation | str = Aggregation.WEIGHTED,
) -> float | None:
    """:func:`score` without the reason: a float in [0, 1], or None when unscorable."""
    return score(labels, rubrics, mode).value


# ---------------------------------------------------------------- degenerate-response guard

# Normalised (casefolded, NFKC, outer punctuation stripped) texts that open an answer but say nothing.
OPENERS: frozenset[str] = frozenset(
    {
        "thought process", "thinking process", "reasoning", "let's think step by step",
        "let's solve this problem step by step", "let's solve this step by step", "let me think",
        "step 1", "step by step", "solution", "answer", "the answer is", "final answer", "here is the answer",
        "sure", "okay", "ok", "certainly", "of course", "analysis", "explanation", "response", "result",
        "解", "解答", "答え", "答", "回答", "かいせつ", "解説", "解析", "思考过程",
        "让我们一步一步地解决这个问题",
        "respuesta", "solución", "solucion", "réponse", "reponse", "antwort", "lösung", "risposta",
        "soluzione", "resposta", "solução", "ответ", "решение",
    }
)  # fmt: skip


def _is_filler(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "PSC"


def _normalise(text: str) -> str:
    """Casefolded NFKC text with inner whitespace collapsed and outer punctuation/symbols removed."""
    text = " ".join(unicodedata.normalize("NFKC", text).replace("\u2019", "'").casefold().split())
    start, end = 0, len(text)
    while start < end and _is_filler(text[start]):
        start += 1
    while end > start and _is_filler(text[end - 1]):
        end -= 1
    return text[start:end]


def is_degenerate(response: str | None) -> bool:
    """True for responses with no content: empty, only whitespace/punctuation/symbols, or a bare opener."""
    if response is None:
        return True
    core = _normalise(response)
    return not core or core in OPENERS


# ---------------------------------------------------------------- stage-2 RL reward (Search-Gen-V)

RL_WEIGHTS = {"macro_f1": 0.35, "exact_match": 0.35, "reasoning_format": 0.2, "output_format": 0.1}
_REASONING_BLOCK = re.compile(r"^\s*<reasoning>(.+?)</reasoning>", re.DOTALL)


def macro_f1(predicted: Sequence[str], reference: Sequence[str]) -> float:
    """Macro-F1 over the labels present in either sequence (absent labels would make a perfect score < 1)."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted labels for {len(reference)} reference labels")
    classes = sorted(set(predicted) | set(reference))
    if not classes:
        return 0.0
    total = 0.0
    for cls in classes:
        tp = sum(p == cls and r == cls for p, r in zip(predicted, reference, strict=True))
        fp = sum(p == cls and r != cls for p, r in zip(predicted, reference, strict=True))
        fn = sum(p != cls and r == cls for p, r in zip(predicted, reference, strict=True))
        total += 2 * tp / (2 * tp + fp + fn)
    return total / len(classes)


def has_reasoning_block(completion: str) -> bool:
    """A single well-formed, non-empty ``<reasoning>...</reasoning>`` block that opens the completion."""
    match = _REASONING_BLOCK.match(completion)
    return (
        match is not None
        and bool(match.group(1).strip())
        and completion.count("<reasoning>") == 1
        and completion.count("</reasoning>") == 1
    )


def rl_reward(completion: str, teacher_labels: Sequence[str], requested_format: str = "json") -> float:
    """Search-Gen-V stage-2 reward in [0, 1]: 0.35 macro-F1 + 0.35 exact match + 0.2 reasoning tag +
    0.1 output-format compliance; 0 when the completion does not parse into ``len(teacher_labels)`` labels.

    A 0 here is a genuine training signal for the policy (it produced no usable judgement).
    """
    from verifier.prompt import ParseError, complies, parse_labels

    unknown = sorted(set(teacher_labels) - set(LABELS))
    if unknown or not teacher_labels:
        raise ValueError(
            f"teacher labels must be a non-empty list of {list(LABELS)}, got {list(teacher_labels)}"
        )
    try:
        parsed = parse_labels(completion, len(teacher_labels))
    except ParseError:
        return 0.0
    predicted = list(parsed.labels)
    parts = {
        "macro_f1": macro_f1(predicted, teacher_labels),
        "exact_match": float(predicted == list(teacher_labels)),
        "reasoning_format": float(has_reasoning_block(completion)),
        "output_format": float(complies(parsed, requested_format)),
    }
    return math.fsum(RL_WEIGHTS[name] * value for name, value in parts.items())
