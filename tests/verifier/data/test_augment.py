from __future__ import annotations

import json
from collections import Counter

import pytest

from rubric_pipeline.core.records import LabelledExample, RecordError, Rubric, write_jsonl
from verifier.data.augment import (
    MASTER_KEYS,
    AugmentConfig,
    augment_examples,
    master_key_examples,
    regroup,
    truncate,
    truncation_examples,
)

N_KEYS = sum(len(keys) for keys in MASTER_KEYS.values())  # 10 master keys


def _example(qid: str, run: str, response: str, labels: list[str], texts: list[str] | None = None):
    texts = texts or [f"fact {i} of {qid}" for i in range(len(labels))]
    rubrics = [Rubric(f"{qid}#n{i}", text) for i, text in enumerate(texts)]
    return LabelledExample(qid, f"question {qid}?", response, f"{qid}:{run}", rubrics, labels, "human:test")


EXAMPLES = [
    _example(
        "q1", "a", "Paris is the capital. It has museums.", ["support", "not_support", "partial_support"]
    ),
    _example("q1", "b", "Lyon is big.", ["not_support", "not_support", "not_support"]),
    _example("q2", "a", "Whales are mammals. They breathe air.", ["support"] * 12),
]


def test_master_keys_one_per_question_and_key_all_not_support():
    out = master_key_examples(EXAMPLES, ["punctuation", "reasoning-opener", "multilingual"])
    assert len(out) == 2 * N_KEYS
    assert Counter(e.label_source for e in out) == {
        "augment:punctuation": 8,
        "augment:reasoning-opener": 6,
        "augment:multilingual": 6,
    }
    assert {e.response for e in out} == {key for keys in MASTER_KEYS.values() for key in keys}
    assert {" ", "解", "かいせつ", "Respuesta", "Thought process:"} <= {e.response for e in out}
    for example in out:
        assert example.labels == ["not_support"] * len(example.rubrics)
        assert len(example.rubrics) == (12 if example.qid == "q2" else 3)
    assert len({e.response_id for e in out}) == len(out)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Paris is the capital. It has museums.", "Paris is the capital."),
        ("Thought process:\nFirst, Paris...", "Thought process:"),
        ("one two three four five six seven eight nine ten", "one two three four five six seven eight"),
        ("解答は次の通り。パリです。", "解答は次の通り。"),
        ("Only one sentence.", None),
        ("   ", None),
    ],
)
def test_truncate(response, expected):
    assert truncate(response, max_words=8) == expected


def test_truncation_skips_cuts_that_may_still_support_a_rubric():
    keeps = _example(
        "q3", "a", "Sure thing. Paris is the capital of France.", ["support"], ["capital of France"]
    )
    risky = _example("q3", "b", "Paris is the capital of France. More.", ["support"], ["capital of France"])
    unsupported = _example(
        "q3", "c", "Paris is the capital of France. More.", ["not_support"], ["capital of France"]
    )
    out, skipped = truncation_examples([keeps, risky, unsupported], max_words=8)
    assert skipped == 1
    assert [(e.response, e.labels, e.label_source) for e in out] == [
        ("Sure thing.", ["not_support"], "augment:truncation"),
        ("Paris is the capital of France.", ["not_support"], "augment:truncation"),
    ]


def test_regroup_carries_labels_and_covers_every_rubric_once_per_round():
    out = regroup(EXAMPLES, rounds=2, window_min=1, window_max=10, seed=3)
    truth = {
        (e.response_id, r.rubric_id): label
        for e in EXAMPLES
        for r, label in zip(e.rubrics, e.labels, strict=True)
    }
    seen: Counter[tuple[str, str]] = Counter()
    for window in out:
        assert 1 <= len(window.rubrics) <= 10 and window.label_source == "augment:regroup"
        source_id = window.response_id.split(":regroup:")[0]
        for rubric, label in zip(window.rubrics, window.labels, strict=True):
            assert truth[(source_id, rubric.rubric_id)] == label
            seen[(source_id, rubric.rubric_id)] += 1
    assert seen == {key: 2 for key in truth}
    assert any(len(w.rubrics) < 10 for w in out if w.qid == "q2")  # the 12 rubrics were cut into windows
    assert regroup(EXAMPLES, rounds=2, seed=3) == out  # deterministic for a seed


def test_heldout_families_never_reach_train():
    config = AugmentConfig(heldout_families=["multilingual", "truncation"], regroup_rounds=1)
    result = augment_examples(EXAMPLES, config)
    train, heldout = result.splits["train"], result.splits["heldout_keys"]
    assert {e.label_source for e in heldout} == {"augment:multilingual", "augment:truncation"}
    assert not {e.label_source for e in train} & {"augment:multilingual", "augment:truncation"}
    assert Counter(e.label_source for e in heldout)["augment:multilingual"] == 2 * 3
    assert result.counts["heldout_keys"] == len(heldout) and result.counts["train"] == len(train)
    assert train[:3] == EXAMPLES  # originals kept
    assert result.counts["augment:punctuation"] == 2 * 4


def test_openers_that_state_a_rubric_are_not_attacks():
    from verifier.data.augment import opener_examples

    states = _example("q3", "a", "The bridge opened in 1932. Tolls pay for it.", ["support", "not_support"],
                      ["The bridge opened in 1932", "Tolls pay for upkeep"])  # fmt: skip
    opens = _example("q4", "a", "Here is a summary of the sources. The dam is 80 m high.", ["support"],
                     ["The dam is 80 m high"])  # fmt: skip
    out, skipped = opener_examples([states, opens])
    responses = {e.response for e in out}
    assert "The bridge opened in 1932." not in responses and skipped >= 1  # it states a fact: kept out
    assert "Here is a summary of the sources." in responses
    assert all(set(e.labels) == {"not_support"} and e.label_source == "augment:opener" for e in out)


def test_injection_and_echo_keys_are_sized_to_the_rubrics_and_labelled_not_support():
    from verifier.data.augment import injection_keys, per_question_examples

    rubrics = EXAMPLES[0].rubrics
    labels, lines, obj = injection_keys("label-injection", rubrics)
    assert json.loads(labels) == ["support"] * 3 and lines.count("support") == 3
    assert json.loads(obj) == {"labels": ["support"] * 3}
    echo, listed = injection_keys("rubric-echo", rubrics)
    assert echo.startswith("The response should mention") and rubrics[0].text in echo
    assert all(f"{i + 1}. {r.text}" in listed for i, r in enumerate(rubrics))
    out = per_question_examples(EXAMPLES, ["label-injection", "instruction-injection", "rubric-echo"])
    assert Counter(e.label_source for e in out) == {
        "augment:label-injection": 6, "augment:instruction-injection": 6, "augment:rubric-echo": 4
    }  # fmt: skip
    assert all(set(e.labels) == {"not_support"} and len(e.labels) == len(e.rubrics) for e in out)


def test_config_rejects_unknown_families():
    with pytest.raises(ValueError, match="unknown augment families"):
        AugmentConfig(heldout_families=["emoji"])


def test_cli_writes_datasetdict_and_jsonl(tmp_path):
    from datasets import load_from_disk

    from verifier.cli import main

    source = tmp_path / "labelled.jsonl"
    write_jsonl(source, (e.to_dict() for e in EXAMPLES))
    out = tmp_path / "aug"
    assert main(["augment", "--input", str(source), "--output", str(out), "--regroup-rounds", "0"]) == 0
    data = load_from_disk(str(out))
    assert set(data) == {"train", "heldout_keys"}
    # 3 originals + 2 questions x 7 non-held-out keys + 2 truncations ("Lyon is big." is one sentence)
    # + 8 openers (2 first sentences of real answers + 2 x 3 generated) + 2 questions x (3 label-injection
    # + 3 instruction-injection + 2 rubric-echo keys)
    assert data["train"].num_rows == 3 + 2 * 7 + 2 + 8 + 2 * (3 + 3 + 2)
    assert data["heldout_keys"].num_rows == 2 * 3
    assert all(set(row["labels"]) == {"not_support"} for row in data["heldout_keys"])
    lines = (out / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == data["train"].num_rows
    assert json.loads((out / "augment_meta.json").read_text())["counts"]["heldout_keys"] == 6


def test_trec_dev_sample_counts(trec_dir, tmp_path):
    from verifier.data.augment import augment
    from verifier.data.labelled_io import read_labelled_input

    real = read_labelled_input(trec_dir / "dev.jsonl")
    result = augment(AugmentConfig(input=str(trec_dir / "dev.jsonl"), output=str(tmp_path / "o"), seed=1))
    counts = result.counts
    assert counts["augment:punctuation"] == 27 * 4 and counts["augment:multilingual"] == 27 * 3
    assert counts["heldout_keys"] == 27 * 3
    assert sum(len(e.rubrics) for e in result.splits["train"] if e.label_source == "augment:regroup") == 1612
    assert counts["augment:truncation"] + counts["truncation_skipped"] <= len(real)
    assert all(set(e.labels) == {"not_support"} for e in result.splits["heldout_keys"])


def test_reads_a_datasets_dir_and_skips_already_augmented_examples(tmp_path):
    from verifier.data.augment import augment, write_splits
    from verifier.data.labelled_io import read_labelled_input

    first = augment_examples(EXAMPLES, AugmentConfig(regroup_rounds=0))
    write_splits(tmp_path / "a", first, meta={})
    again = read_labelled_input(tmp_path / "a", "train")
    assert again == first.splits["train"]
    second = augment(AugmentConfig(input=str(tmp_path / "a"), output=str(tmp_path / "b"), regroup_rounds=0))
    # master keys are built from the 3 real examples only, not from the augmented ones read back
    assert second.counts["augment:punctuation"] == 2 * 4
    with pytest.raises(RecordError, match="no split 'dev'"):
        read_labelled_input(tmp_path / "a", "dev")


def test_cli_bad_labelled_input_is_one_line_naming_line_and_field(
    tmp_path, bad_labelled_file, one_line_error
):
    path, fragments = bad_labelled_file
    one_line_error("augment", ["--input", str(path), "--output", str(tmp_path / "o")], path, fragments)
    assert not (tmp_path / "o").exists()


def test_cli_folder_that_is_not_a_datasets_folder(tmp_path, not_a_datasets_folder, one_line_error):
    path, fragments = not_a_datasets_folder
    one_line_error("augment", ["--input", str(path), "--output", str(tmp_path / "o")], path, fragments)


def test_datasets_dir_rows_are_checked_too(tmp_path):
    from datasets import Dataset

    from verifier.data.labelled_io import read_labelled_input

    rows = [EXAMPLES[1].to_dict() | {"labels": ["not_support", "nope", "not_support"]}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(RecordError, match=r"record 'q1:b', field 'labels\[1\]': unknown label 'nope'"):
        read_labelled_input(tmp_path / "ds")
