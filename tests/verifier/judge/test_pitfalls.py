"""Pitfall rubrics (negative weight): every case of the semantics in verifier.judge.reward, and [0, 1]."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rubric_pipeline.core.records import LABELS, Rubric
from verifier.judge.reward import Aggregation, aggregate, score, score_expected

S, P, N = "support", "partial_support", "not_support"
POSITIVE = [Rubric("a", "A", weight=2.0), Rubric("b", "B", weight=1.0)]
PITFALL = Rubric("x", "The response claims the bridge is in Paris", weight=-1.5)


def test_a_committed_pitfall_takes_its_weight_off_the_credit():
    assert aggregate([S, S, N], [*POSITIVE, PITFALL]) == 1.0  # avoided: no cost
    assert aggregate([S, S, S], [*POSITIVE, PITFALL]) == pytest.approx((3 - 1.5) / 3)
    assert aggregate([S, S, P], [*POSITIVE, PITFALL]) == pytest.approx((3 - 0.75) / 3)  # half its weight
    assert aggregate([S, N, S], [*POSITIVE, PITFALL]) == pytest.approx((2 - 1.5) / 3)


def test_the_reward_is_clipped_at_zero():
    assert aggregate([N, S, S], [*POSITIVE, Rubric("y", "Y", weight=-5.0)]) == 0.0


def test_only_pitfalls_reward_avoiding_them():
    pitfalls = [PITFALL, Rubric("y", "Y", weight=-0.5)]
    assert aggregate([N, N], pitfalls) == 1.0
    assert aggregate([S, N], pitfalls) == pytest.approx(1 - 1.5 / 2)
    assert aggregate([S, S], pitfalls) == 0.0
    for mode in ("all", "vital", "strict_all", "strict_vital"):
        assert aggregate([S, N], pitfalls, mode) == 0.5


def test_weights_summing_to_zero_normalise_by_the_positive_mass():
    rubrics = [Rubric("a", "A", weight=1.0), Rubric("x", "X", weight=-1.0)]
    assert aggregate([S, N], rubrics) == 1.0 and aggregate([S, S], rubrics) == 0.0
    assert aggregate([P, N], rubrics) == 0.5
    assert score([S, S], [Rubric("a", "A", weight=0.0)] * 2).reason == "rubric weights sum to zero"


def test_count_modes_weigh_each_pitfall_as_one_and_strict_counts_partial_as_committed():
    rubrics = [Rubric("a", "A"), Rubric("b", "B", "okay"), PITFALL]
    assert aggregate([S, S, P], rubrics, "all") == pytest.approx((2 - 0.5) / 2)
    assert aggregate([S, S, P], rubrics, "strict_all") == pytest.approx((2 - 1) / 2)
    assert aggregate([S, N, S], rubrics, "vital") == 0.0  # vital positives only; the pitfall still counts
    assert aggregate([S, N, N], rubrics, "strict_vital") == 1.0


WEIGHTS = st.one_of(st.none(), st.floats(-10, 10, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(WEIGHTS, st.sampled_from(LABELS), st.booleans()), min_size=1, max_size=12))
def test_every_reward_is_in_the_unit_interval_or_none(rows):
    rubrics = [Rubric(f"r{i}", "t", "vital" if v else "okay", w) for i, (w, _, v) in enumerate(rows)]
    labels = [label for _, label, _ in rows]
    for mode in Aggregation:
        result = score(labels, rubrics, mode)
        assert (result.value is None and result.reason) or 0.0 <= result.value <= 1.0
        pitfalls = [r.effective_weight() < 0 for r in rubrics]
        if all(label == N for label in labels) and any(pitfalls):  # avoided pitfalls cost nothing
            kept = [(r, label) for r, label, pit in zip(rubrics, labels, pitfalls, strict=True) if not pit]
            alone = score([label for _, label in kept], [r for r, _ in kept], mode).value if kept else None
            assert result.value == (0.0 if alone is not None else 1.0)


def _one_hot(label: str) -> dict[str, float]:
    return {other: float(other == label) for other in LABELS}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(WEIGHTS, st.sampled_from(LABELS), st.booleans()), min_size=1, max_size=12))
def test_the_soft_reward_of_certain_labels_is_the_reward_of_the_labels(rows):
    """score_expected shares score's aggregation: one-hot distributions give the same result, pitfalls,
    modes and unscorable items included."""
    rubrics = [Rubric(f"r{i}", "t", "vital" if v else "okay", w) for i, (w, _, v) in enumerate(rows)]
    labels = [label for _, label, _ in rows]
    for mode in Aggregation:
        hard, soft = (
            score(labels, rubrics, mode),
            score_expected([_one_hot(x) for x in labels], rubrics, mode),
        )
        assert soft.reason == hard.reason
        assert soft.value == pytest.approx(hard.value)


def test_a_pitfall_costs_its_expected_score_in_the_soft_reward():
    uncertain = {S: 0.5, P: 0.2, N: 0.3}  # expected score 0.6; P(not not_support) 0.7
    probs = [_one_hot(S), _one_hot(S), uncertain]
    assert score_expected(probs, [*POSITIVE, PITFALL]).value == pytest.approx((3 - 1.5 * 0.6) / 3)
    assert score_expected(probs, [*POSITIVE, PITFALL], "all").value == pytest.approx((2 - 0.6) / 2)
    assert score_expected(probs, [*POSITIVE, PITFALL], "strict_all").value == pytest.approx((2 - 0.7) / 2)
    assert score_expected([uncertain], [PITFALL]).value == pytest.approx(1 - 0.6)
