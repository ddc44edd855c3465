"""Training rows: windows, formats, augmentation mix and the split by question."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.records import LabelledExample, Rubric
from verifier.judge.prompt import OUTPUT_FORMATS, parse_labels
from verifier.train.data import (
    WindowOptions,
    build_splits,
    make_windows,
    mix_augmentation,
    sample_windows,
    split_by_question,
)

LABEL_CYCLE = ("support", "not_support", "partial_support")


def _examples(n_questions: int = 10, per_question: int = 3, n_rubrics: int = 7) -> list[LabelledExample]:
    examples = []
    for q in range(n_questions):
        rubrics = [Rubric(rubric_id=f"q{q}r{i}", text=f"Fact {i} about topic {q}.") for i in range(n_rubrics)]
        for r in range(per_question):
            labels = [LABEL_CYCLE[(q + r + i) % 3] for i in range(n_rubrics)]
            examples.append(
                LabelledExample(
                    f"q{q}", f"What about topic {q}?", f"Answer {r}.", f"q{q}-{r}", rubrics, labels, "t"
                )
            )
        negatives = ["not_support"] * n_rubrics
        question = f"What about topic {q}?"
        key = LabelledExample(f"q{q}", question, ":", f"q{q}:key", rubrics, negatives, "augment:punctuation")
        examples.append(key)
    return examples


def test_split_keeps_each_question_on_one_side() -> None:
    examples = _examples()
    train, held_out = split_by_question(examples, 0.3, seed=1)
    assert {e.qid for e in train}.isdisjoint({e.qid for e in held_out})
    assert len({e.qid for e in held_out}) == 3 and len(train) + len(held_out) == len(examples)
    # augmented copies follow their question
    assert all(e.qid in {x.qid for x in held_out} for e in held_out if e.label_source.startswith("augment:"))


def test_windows_cover_every_rubric_once_with_its_label() -> None:
    examples = _examples(n_questions=4, per_question=1, n_rubrics=23)
    options = WindowOptions(window_min=2, window_max=5, output_formats=("json", "xml", "csv"), seed=3)
    windows = make_windows(examples, options)
    assert all(1 <= len(w.labels) <= 5 for w in windows)
    assert sum(len(w.labels) <= 1 for w in windows) <= len(examples)  # only a remainder can be shorter than 2
    by_response: dict[str, Counter] = {}
    for window in windows:
        pairs = zip(window.rubric_texts, window.labels, strict=True)
        by_response.setdefault(window.response_id, Counter()).update(pairs)
    for example in examples:
        assert by_response[example.response_id] == Counter(
            zip([r.text for r in example.rubrics], example.labels, strict=True)
        )
    assert {w.output_format for w in windows} == {"json", "xml", "csv"}


def test_window_passes_cut_every_example_again_in_a_new_order() -> None:
    examples = _examples(n_questions=3, per_question=1, n_rubrics=12)
    once = make_windows(examples, WindowOptions(window_min=12, window_max=12, seed=1))
    thrice = make_windows(examples, WindowOptions(window_min=12, window_max=12, seed=1, passes=3))
    assert len(thrice) == 3 * len(once)
    for example in examples:
        orders = [w.rubric_texts for w in thrice if w.response_id == example.response_id]
        assert len(orders) == 3 and len({tuple(order) for order in orders}) == 3  # reshuffled each pass
        for window in (w for w in thrice if w.response_id == example.response_id):
            gold = dict(zip([r.text for r in example.rubrics], example.labels, strict=True))
            assert [gold[text] for text in window.rubric_texts] == window.labels
    splits = build_splits(examples, WindowOptions(window_min=12, window_max=12, passes=3), eval_fraction=0.34)
    assert len(splits.eval) == 1  # the held-out question is windowed once
    with pytest.raises(ConfigError, match="passes"):
        make_windows(examples, WindowOptions(passes=0))


def test_foreign_rubrics_are_other_questions_labelled_not_support_within_the_window_cap() -> None:
    examples = _examples(n_questions=4, per_question=1, n_rubrics=6)
    options = WindowOptions(window_min=1, window_max=5, seed=2, foreign_rubrics=2)
    windows = make_windows(examples, options)
    added = 0
    for window in windows:
        example = next(e for e in examples if e.response_id == window.response_id)
        own = dict(zip([r.text for r in example.rubrics], example.labels, strict=True))
        assert len(window.labels) <= 5 and len(set(window.rubric_texts)) == len(window.rubric_texts)
        for text, label in zip(window.rubric_texts, window.labels, strict=True):
            if text in own:
                assert label == own[text]
            else:  # a rubric of another question
                assert label == "not_support" and not text.endswith(f"topic {example.qid[1:]}.")
                added += 1
        assert sum(text not in own for text in window.rubric_texts) == min(
            2, 5 - sum(t in own for t in window.rubric_texts)
        )
    assert added > 0
    # every own rubric still appears exactly once per example
    assert sum(len(w.labels) for w in windows) - added == sum(len(e.rubrics) for e in examples)
    splits = build_splits(examples, options, eval_fraction=0.25)
    held_out_qid = splits.eval[0].qid
    own_texts = {r.text for e in examples if e.qid == held_out_qid for r in e.rubrics}
    assert all(set(w.rubric_texts) <= own_texts for w in splits.eval)  # held-out windows are left as they are
    with pytest.raises(ConfigError, match="two questions"):
        make_windows(examples[:1], options)


def test_balanced_sampling_spreads_the_cap_over_labels() -> None:
    examples = _examples(n_questions=10, per_question=3, n_rubrics=7)
    every = make_windows(examples, WindowOptions(window_min=1, window_max=1))  # 70 of each label
    partial = [w for w in every if w.labels == ["partial_support"]][:10]
    windows = [w for w in every if w.labels != ["partial_support"]] + partial  # 70 / 70 / 10
    balanced = sample_windows(windows, 40, random.Random(0), balance_labels=True)
    got = Counter(w.labels[0] for w in balanced)
    assert got == {"partial_support": 10, "support": 15, "not_support": 15}  # the rare label gives all it has
    plain = Counter(w.labels[0] for w in sample_windows(windows, 40, random.Random(0)))
    assert sum(plain.values()) == 40 and plain["partial_support"] < 10
    assert sample_windows(windows, len(windows) + 1, random.Random(0)) == windows


def test_sft_rows_use_the_served_prompt_and_parse_back() -> None:
    options = WindowOptions(window_min=1, window_max=10, output_formats=OUTPUT_FORMATS, seed=0)
    windows = make_windows(_examples(n_questions=6), options)
    for window in windows:
        row = window.sft_row()
        assert row["prompt"] == window.messages() and row["prompt"][-1]["role"] == "user"
        assert window.rubric_texts[-1].split()[0] in row["prompt"][-1]["content"]
        target = row["completion"][0]["content"]
        assert list(parse_labels(target, len(window.labels)).labels) == window.labels
    grpo = windows[0].grpo_row()
    assert grpo["teacher_labels"] == windows[0].labels and grpo["output_format"] in OUTPUT_FORMATS


def test_augmentation_mixed_at_the_configured_rate() -> None:
    examples = _examples(n_questions=20, per_question=2)
    none = mix_augmentation(examples, 0.0)
    assert not any(e.label_source.startswith("augment:") for e in none) and len(none) == 40
    some = mix_augmentation(examples, 0.25)
    assert sum(e.label_source.startswith("augment:") for e in some) == 10
    every = mix_augmentation(examples, 5.0)  # more than exist: all of them, no duplicates
    assert sum(e.label_source.startswith("augment:") for e in every) == 20


def test_build_splits_eval_has_no_augmented_or_train_questions() -> None:
    splits = build_splits(_examples(), WindowOptions(), eval_fraction=0.2, augment_rate=0.5)
    assert {w.qid for w in splits.train}.isdisjoint({w.qid for w in splits.eval})
    assert not any(w.label_source.startswith("augment:") for w in splits.eval)
    assert splits.summary()["train_augmented"] > 0
    with pytest.raises(ValueError, match="shares questions"):
        build_splits(_examples(), WindowOptions(), eval_examples=_examples()[:3])
    with pytest.raises(ValueError, match="unknown output formats"):
        make_windows(_examples(), WindowOptions(output_formats=("json", "toml")))


def test_held_out_sample_does_not_move_with_the_training_cap() -> None:
    def eval_ids(**caps) -> list[tuple[str, tuple[str, ...]]]:
        splits = build_splits(_examples(40), WindowOptions(), eval_fraction=0.5, max_eval_windows=6, **caps)
        assert len(splits.eval) == 6
        return [(w.response_id, tuple(w.rubric_texts)) for w in splits.eval]

    assert eval_ids() == eval_ids(max_train_windows=5) == eval_ids(max_train_windows=9, balance_labels=True)


# one case: the command imports torch (seconds); every case runs through the same reader in test_augment.py
@pytest.mark.parametrize("bad_labelled_file", ["unknown_label"], indirect=True)
def test_train_sft_cli_names_bad_data_line_and_field(tmp_path, bad_labelled_file, one_line_error) -> None:
    """`train sft --data` reads through read_labelled: a bad record fails before any model is loaded."""
    path, fragments = bad_labelled_file
    args = ["--model", str(tmp_path / "no-model"), "--output-dir", str(tmp_path / "run"), "--data", str(path)]
    one_line_error("train sft", args, path, fragments)
    assert not (tmp_path / "run").exists()
