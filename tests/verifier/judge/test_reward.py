from __future__ import annotations

import pytest

from rubric_pipeline.core.records import Rubric
from verifier.judge.guard import is_degenerate
from verifier.judge.prompt import format_labels
from verifier.judge.reward import Aggregation, RewardResult, aggregate, score
from verifier.train.rl_reward import has_reasoning_block, macro_f1, rl_reward

# Two vital rubrics, one okay, one with an explicit weight.
RUBRICS = [
    Rubric("a", "A", "vital"),
    Rubric("b", "B", "vital"),
    Rubric("c", "C", "okay"),
    Rubric("d", "D", "okay", weight=2.0),
]
LABELS = ["support", "partial_support", "support", "not_support"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # weights 1, 1, 0.5, 2 ; scores 1, .5, 1, 0 -> (1 + .5 + .5 + 0) / 4.5
        ("weighted", 2.0 / 4.5),
        ("all", (1 + 0.5 + 1 + 0) / 4),
        ("vital", (1 + 0.5) / 2),
        ("strict_all", 2 / 4),
        ("strict_vital", 1 / 2),
    ],
)
def test_every_mode_on_a_hand_computed_case(mode, expected):
    assert aggregate(LABELS, RUBRICS, mode) == pytest.approx(expected)
    assert score(LABELS, RUBRICS, Aggregation(mode)) == RewardResult(pytest.approx(expected), None)


def test_default_mode_is_weighted_and_strings_are_vital_rubrics():
    assert aggregate(["support", "not_support"], ["x", "y"]) == 0.5
    assert aggregate(["support", "not_support"], [{"text": "x", "importance": "okay"}, "y"]) == pytest.approx(
        0.5 / 1.5
    )


def test_perfect_and_empty_responses():
    for mode in Aggregation:
        assert aggregate(["support"] * 4, RUBRICS, mode) == 1.0
        assert aggregate(["not_support"] * 4, RUBRICS, mode) == 0.0


def test_unscorable_items_are_none_with_a_reason():
    assert score(["support"], [], "all") == RewardResult(None, "no rubrics to score against")
    okay_only = [Rubric("c", "C", "okay")]
    for mode in ("vital", "strict_vital"):
        result = score(["support"], okay_only, mode)
        assert result.value is None and "no vital rubric" in result.reason
    assert aggregate(["support"], okay_only, "all") == 1.0
    assert score(None, RUBRICS).value is None
    assert score(["support"], [Rubric("z", "Z", weight=0.0)]).reason == "rubric weights sum to zero"


def test_bad_calls_raise():
    with pytest.raises(ValueError, match="3 labels for 4 rubrics"):
        aggregate(LABELS[:3], RUBRICS)
    with pytest.raises(ValueError, match="unknown labels"):
        aggregate(["yes"], ["x"])
    with pytest.raises(ValueError):
        aggregate(["support"], ["x"], "mean")


@pytest.mark.parametrize(
    "response",
    ["", " ", ".", ",", ":", "Thought process:", "Let's solve this problem step by step.", "Solution", "解",
     "かいせつ", "Respuesta", "  **Solution:**  ", "...!?", "SOLUTION.", "Let’s think step by step", None],
)  # fmt: skip
def test_degenerate_responses(response):
    assert is_degenerate(response)


@pytest.mark.parametrize("response", ["Paris.", "Solution: x = 3", "解 x=3", "42", "No."])
def test_responses_with_content_are_not_degenerate(response):
    assert not is_degenerate(response)


def test_macro_f1_hand_computed():
    # support: tp1 fp1 fn0 -> 2/3 ; not_support: tp0 fp0 fn1 -> 0 ; partial absent from both -> 1
    # (Search-Gen-V's F1 over all three labels)
    assert macro_f1(["support", "support"], ["support", "not_support"]) == pytest.approx(5 / 9)
    assert macro_f1(["support"], ["support"]) == 1.0


TEACHER = ["support", "not_support", "partial_support"]


def test_rl_reward_perfect_is_one():
    assert rl_reward(format_labels(TEACHER, "yaml", "checked each"), TEACHER, "yaml") == 1.0


def test_rl_reward_parts():
    # right labels, no reasoning, right format -> .35 + .35 + .1
    assert rl_reward(format_labels(TEACHER, "csv"), TEACHER, "csv") == pytest.approx(0.8)
    # right labels, reasoning, wrong format -> .35 + .35 + .2
    assert rl_reward(format_labels(TEACHER, "json", "r"), TEACHER, "csv") == pytest.approx(0.9)
    # one wrong label: support tp1 ; not_support tp0 fn1 ; partial tp1 fp1 -> (1 + 0 + 2/3) / 3
    wrong = ["support", "partial_support", "partial_support"]
    assert rl_reward(format_labels(wrong, "json"), TEACHER, "json") == pytest.approx(0.35 * (5 / 9) + 0.1)


def test_rl_reward_zero_when_unparsable_or_wrong_count():
    assert rl_reward(format_labels(TEACHER[:2], "json", "r"), TEACHER, "json") == 0.0
    assert rl_reward("<reasoning>r</reasoning> I am not sure", TEACHER, "json") == 0.0
    assert rl_reward('["support", "maybe", "support"]', TEACHER, "json") == 0.0
    with pytest.raises(ValueError):
        rl_reward("[]", [], "json")


def test_reasoning_block_must_be_single_non_empty_and_first():
    assert has_reasoning_block('<reasoning>x</reasoning>["support"]')
    assert not has_reasoning_block('<reasoning> </reasoning>["support"]')
    assert not has_reasoning_block('["support"]<reasoning>x</reasoning>')
    assert not has_reasoning_block("<reasoning>x</reasoning><reasoning>y</reasoning>")
