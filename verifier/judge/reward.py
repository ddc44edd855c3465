"""Reward semantics: per-rubric labels + importance -> one scalar in [0, 1], or None with a reason.

Scores per label: support 1.0, partial_support 0.5, not_support 0.0 (``strict_*`` modes count partial
as 0, as nuggetizer's strict scores do). :func:`score` returns a :class:`RewardResult` whose ``value`` is
None with a ``reason`` when the item cannot be scored (no rubrics, no vital rubric in a vital mode, no
labels); :func:`aggregate` is the float-or-None shorthand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rubric_pipeline.core.records import LABEL_SCORES, LABELS, Importance, Rubric


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
    values = [(LABEL_SCORES[label], 1.0 if label == "support" else 0.0) for _, label in items]
    return _aggregate([rubric for rubric, _ in items], values, mode)


def score_expected(
    probs: Sequence[dict[str, float]] | None,
    rubrics: Sequence[Rubric | dict[str, Any] | str],
    mode: Aggregation | str = Aggregation.WEIGHTED,
) -> RewardResult:
    """The soft reward: :func:`score` with each rubric's label score replaced by its expected value under
    the rubric's label distribution (``strict_*``: the probability of support)."""
    mode = Aggregation(mode)
    if probs is None:
        return RewardResult(None, "no label probabilities (the judgement failed)")
    if not rubrics:
        return RewardResult(None, "no rubrics to score against")
    if len(probs) != len(rubrics):
        raise ValueError(f"{len(probs)} distributions for {len(rubrics)} rubrics")
    values = [
        (sum(LABEL_SCORES[label] * p.get(label, 0.0) for label in LABELS), p.get("support", 0.0))
        for p in probs
    ]
    return _aggregate([_as_rubric(rubric, i) for i, rubric in enumerate(rubrics)], values, mode)


def _aggregate(rubrics: list[Rubric], values: list[tuple[float, float]], mode: Aggregation) -> RewardResult:
    """Per-rubric ``(score, strict score)`` pairs -> the reward of ``mode``."""
    if mode is Aggregation.WEIGHTED:
        total = sum(rubric.effective_weight() for rubric in rubrics)
        if total <= 0:
            return RewardResult(None, "rubric weights sum to zero")
        return RewardResult(
            sum(rubric.effective_weight() * value for rubric, (value, _) in zip(rubrics, values, strict=True))
            / total
        )
    pairs = list(zip(rubrics, values, strict=True))
    if mode in (Aggregation.VITAL, Aggregation.STRICT_VITAL):
        pairs = [(rubric, value) for rubric, value in pairs if rubric.importance == Importance.VITAL]
        if not pairs:
            return RewardResult(None, f"no vital rubric for mode {mode.value!r}")
    strict = mode in (Aggregation.STRICT_ALL, Aggregation.STRICT_VITAL)
    scores = [strict_value if strict else value for _, (value, strict_value) in pairs]
    return RewardResult(sum(scores) / len(scores))


def aggregate(
    labels: Sequence[str] | None,
    rubrics: Sequence[Rubric | dict[str, Any] | str],
    mode: Aggregation | str = Aggregation.WEIGHTED,
) -> float | None:
    """:func:`score` without the reason: a float in [0, 1], or None when unscorable."""
    return score(labels, rubrics, mode).value
