from __future__ import annotations

import json

import pytest

from rubric_pipeline.core.records import (
    LabelledExample,
    RecordError,
    Rubric,
    RubricSet,
    Source,
    iter_jsonl,
    labelled_features,
    read_questions,
    rubric_set_features,
    write_jsonl,
)


def make_set() -> RubricSet:
    rubric = Rubric("q1-r0", "Lake Orvin freezes in January", "vital", None, [Source("d1#0", "d1", "orvin")])
    return RubricSet("q1", "When does Lake Orvin freeze?", ["orvin freeze"], [rubric], {"model": "m"})


def test_rubric_set_round_trips_through_datasets():
    from datasets import Dataset

    row = make_set().to_dict()
    dataset = Dataset.from_list([row], features=rubric_set_features())
    back = RubricSet.from_dict(dataset[0])
    assert back.rubrics[0].sources == [Source("d1#0", "d1", "orvin")]
    assert back.meta["model"] == "m" and back.meta["created_by"] == "rubric-verifier"


def test_labelled_example_validates_labels_and_counts():
    rubrics = make_set().rubrics
    with pytest.raises(ValueError, match="1 rubrics"):
        LabelledExample("q1", "?", "a", "a1", rubrics, ["support", "support"], "human:x")
    with pytest.raises(ValueError, match="unknown labels"):
        LabelledExample("q1", "?", "a", "a1", rubrics, ["yes"], "human:x")
    example = LabelledExample("q1", "?", "a", "a1", rubrics, ["support"], "human:x")
    from datasets import Dataset

    dataset = Dataset.from_list([example.to_dict()], features=labelled_features())
    assert LabelledExample.from_dict(dataset[0]) == example


def test_rubric_weights_default_by_importance():
    assert Rubric("a", "t", "vital").effective_weight() == 1.0
    assert Rubric("a", "t", "okay").effective_weight() == 0.5
    assert Rubric("a", "t", "okay", weight=2.0).effective_weight() == 2.0
    with pytest.raises(ValueError, match="importance"):
        Rubric.from_dict({"text": "t", "importance": "high"})


def test_iter_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(RecordError, match=r"x.jsonl: line 3: malformed JSON"):
        list(iter_jsonl(path))


def test_read_questions_errors_name_record_and_field(tmp_path):
    path = tmp_path / "q.jsonl"
    write_jsonl(path, [{"qid": "1", "question": "a?"}, {"question": "b?"}])
    with pytest.raises(RecordError, match=r"line 2, field 'qid': missing"):
        read_questions(path)
    write_jsonl(path, [{"qid": "1", "question": "a?"}, {"qid": "1", "query": "b?"}])
    with pytest.raises(RecordError, match="duplicate qid"):
        read_questions(path)
    write_jsonl(path, [{"qid": 7, "query": " b? "}])
    assert read_questions(path) == [("7", "b?")]
    assert json.loads(path.read_text())["qid"] == 7


def test_records_and_the_rl_adapters_import_without_the_training_stack():
    """The RL-side adapters run in the trainer's environment: records (stdlib + pydantic) must not pull in
    torch, datasets, numpy or transformers."""
    import subprocess
    import sys

    code = (
        "import sys, rubric_pipeline.core.records, verifier.integrations.verl, verifier.integrations.trl; "
        "heavy = {'torch', 'datasets', 'numpy', 'transformers'}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
