"""Reward semantics: per-rubric labels + importance -> one scalar in [0, 1], or None with a reason.

Scores per label: support 1.0, partial_support 0.5, not_support 0.0 (``strict_*`` modes count partial
as 0, as nuggetizer's strict scores do). :func:`score` returns a :class:`RewardResult` whose ``value`` is
None with a ``reason`` when the item cannot be scored (no rubrics, no vital rubric in a vital mode, no
labels); :func:`aggregate` is the float-or-None shorthand. :func:`score_expected` is the soft reward: the
same aggregation over each rubric's expected score under its label distribution (from the judge's
logprobs), so pitfalls and modes mean the same there.

Pitfalls (Rubrics-as-Rewards, Rubicon): a rubric with a NEGATIVE weight names a mistake ("The response
claims the bridge is in Paris"); judged ``support`` it means the response makes that mistake. Semantics,
every case (``s`` = label score, ``w`` = weight; positives P have w > 0, pitfalls N have w < 0):

- ``weighted``: ``max(0, (sum_P w*s - sum_N |w|*s) / sum_P w)``: pitfalls take away from the credit the
  positive rubrics earned, in the same weight units, and the reward never goes below 0.
- only pitfalls (sum_P w = 0): ``1 - sum_N |w|*s / sum_N |w|``: 1 for a response that avoids them all.
- weights summing to zero over P and N together change nothing: only the positive mass normalises. Zero
  weights are ignored; all weights zero -> None ("rubric weights sum to zero").
- a pitfall judged ``partial_support`` costs half its weight (``strict_*`` modes: its full weight, strict
  on both sides); ``not_support`` costs nothing.
- ``all`` / ``vital`` / ``strict_*``: the same with weight 1 per rubric, over the positives the mode
  counts (vital ones for ``vital``); pitfalls count whatever their importance. Only pitfalls -> 1 - the
  share of pitfalls committed.

The reward is always in [0, 1].
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
    values = [_label_value(label) for _, label in items]
    return _aggregate([rubric for rubric, _ in items], values, mode)


def score_expected(
    probs: Sequence[dict[str, float]] | None,
    rubrics: Sequence[Rubric | dict[str, Any] | str],
    mode: Aggregation | str = Aggregation.WEIGHTED,
) -> RewardResult:
    """The soft reward: :func:`score` with each rubric's label score replaced by its expected value under
    the rubric's label distribution (``strict_*``: the probability of support; for a pitfall, of any label
    but not_support). Pitfalls, modes and unscorable items follow :func:`score` exactly."""
    mode = Aggregation(mode)
    if probs is None:
        return RewardResult(None, "no label probabilities (the judgement failed)")
    if not rubrics:
        return RewardResult(None, "no rubrics to score against")
    if len(probs) != len(rubrics):
        raise ValueError(f"{len(probs)} distributions for {len(rubrics)} rubrics")
    values = [_expected_value(p) for p in probs]
    return _aggregate([_as_rubric(rubric, i) for i, rubric in enumerate(rubrics)], values, mode)


@dataclass(frozen=True)
class _Value:
    """One rubric's judged value, in the three forms the modes read: ``score`` (support 1, partial 0.5),
    ``support`` (strict credit of a positive rubric) and ``committed`` (strict cost of a pitfall: any label
    but not_support). A label gives indicators; a distribution gives their expectations."""

    score: float
    support: float
    committed: float


def _label_value(label: str) -> _Value:
    return _Value(LABEL_SCORES[label], float(label == "support"), float(label != "not_support"))


def _expected_value(probs: dict[str, float]) -> _Value:
    return _Value(
        sum(LABEL_SCORES[label] * probs.get(label, 0.0) for label in LABELS),
        probs.get("support", 0.0),
        probs.get("support", 0.0) + probs.get("partial_support", 0.0),
    )


def _aggregate(rubrics: list[Rubric], values: list[_Value], mode: Aggregation) -> RewardResult:
    """Per-rubric values -> the reward of ``mode``, pitfalls included (semantics in the module doc)."""
    strict = mode in (Aggregation.STRICT_ALL, Aggregation.STRICT_VITAL)
    pairs = list(zip(rubrics, values, strict=True))
    pitfalls = [(r, value) for r, value in pairs if r.effective_weight() < 0]
    positives = [(r, value) for r, value in pairs if r.effective_weight() >= 0]
    penalty_scores = [
        (abs(r.effective_weight()) if mode is Aggregation.WEIGHTED else 1.0,
         value.committed if strict else value.score)
        for r, value in pitfalls
    ]  # fmt: skip
    if mode is Aggregation.WEIGHTED:
        gained = [(r.effective_weight(), value.score) for r, value in positives]
    else:
        if mode in (Aggregation.VITAL, Aggregation.STRICT_VITAL):
            positives = [(r, value) for r, value in positives if r.importance == Importance.VITAL]
            if not positives and not pitfalls:
                return RewardResult(None, f"no vital rubric for mode {mode.value!r}")
        gained = [(1.0, value.support if strict else value.score) for _, value in positives]
    return _combine(gained, penalty_scores)


def _combine(gained: list[tuple[float, float]], penalties: list[tuple[float, float]]) -> RewardResult:
    """Credit from positive rubrics minus pitfall penalties, in [0, 1] (semantics in the module doc)."""
    positive_mass = sum(weight for weight, _ in gained)
    penalty = sum(weight * value for weight, value in penalties)
    if positive_mass > 0:
        earned = sum(weight * value for weight, value in gained)
        return RewardResult(min(1.0, max(0.0, (earned - penalty) / positive_mass)))
    pitfall_mass = sum(weight for weight, _ in penalties)
    if pitfall_mass > 0:
        return RewardResult(1.0 - penalty / pitfall_mass)
    return RewardResult(None, "rubric weights sum to zero")


def aggregate(
    labels: Sequence[str] | None,
    rubrics: Sequence[Rubric | dict[str, Any] | str],
    mode: Aggregation | str = Aggregation.WEIGHTED,
) -> float | None:
    """:func:`score` without the reason: a float in [0, 1], or None when unscorable."""
    return score(labels, rubrics, mode).value
