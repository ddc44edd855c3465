from __future__ import annotations

import json
from collections import Counter

import pytest

from rubric_pipeline.core.records import RecordError, RubricSet, labelled_features, rubric_set_features
from rubric_pipeline.trec import read_trec_labelled, read_trec_rubric_sets, write_trec_jsonl


def test_dev_sample_counts_match_the_readme(trec_dir):
    examples = read_trec_labelled(trec_dir / "dev.jsonl")
    assert len(examples) == 111
    assert len({example.qid for example in examples}) == 27
    assert sum(len(example.rubrics) for example in examples) == 1612
    counts = Counter(label for example in examples for label in example.labels)
    assert counts == {"support": 553, "partial_support": 82, "not_support": 977}
    assert {example.label_source for example in examples} == {"human:trec"}
    assert len({example.response_id for example in examples}) == 111


def test_dev_sample_texts_are_stripped_and_ids_stable_per_topic(trec_dir):
    raw = [json.loads(line) for line in (trec_dir / "dev.jsonl").open(encoding="utf-8")]
    assert any(n["text"] != n["text"].strip() for r in raw for n in r["nuggets"])  # the sample has strays
    examples = read_trec_labelled(trec_dir / "dev.jsonl")
    for record, example in zip(raw, examples, strict=True):
        assert [r.text for r in example.rubrics] == [n["text"].strip() for n in record["nuggets"]]
        assert example.labels == [n["assignment"] for n in record["nuggets"]]
        assert example.response == record["answer_text"]
        assert example.response_id == f"{record['qid']}:{record['run_id']}"
    by_topic: dict[str, list[str]] = {}
    for example in examples:
        ids = [rubric.rubric_id for rubric in example.rubrics]
        assert by_topic.setdefault(example.qid, ids) == ids
        assert len(set(ids)) == len(ids)


def test_dev_sample_rubric_sets_round_trip(trec_dir, tmp_path):
    sets = read_trec_rubric_sets(trec_dir / "dev.jsonl")
    assert len(sets) == 27
    out = tmp_path / "nuggets.jsonl"
    assert write_trec_jsonl(out, sets) == 27
    again = read_trec_rubric_sets(out)
    assert [s.to_dict()["rubrics"] for s in again] == [s.to_dict()["rubrics"] for s in sets]
    assert [s.question for s in again] == [s.question for s in sets]
    record = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert set(record) == {"qid", "query", "nuggets"}
    assert set(record["nuggets"][0]) == {"text", "importance"}


def test_records_load_into_datasets(trec_dir):
    from datasets import Dataset

    examples = read_trec_labelled(trec_dir / "dev.jsonl")[:5]
    dataset = Dataset.from_list([e.to_dict() for e in examples], features=labelled_features())
    assert dataset[0]["labels"] == examples[0].labels
    sets = read_trec_rubric_sets(trec_dir / "dev.jsonl")[:2]
    assert Dataset.from_list([s.to_dict() for s in sets], features=rubric_set_features()).num_rows == 2


def _record(run_id="r1", answer="A.", nuggets=None, **extra):
    nuggets = nuggets or [
        {"text": " fact one ", "importance": "vital", "assignment": "support"},
        {"text": "fact one", "importance": "vital", "assignment": "not_support"},
        {"text": "fact two", "importance": "okay", "assignment": "partial_support"},
    ]
    return {"qid": "q1", "query": "Q?", "run_id": run_id, "answer_text": answer, "nuggets": nuggets, **extra}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_duplicates_are_kept_and_suffixed(tmp_path):
    nuggets_b = [
        {"text": "fact one", "importance": "vital", "assignment": "not_support"},
        {"text": "fact one ", "importance": "vital", "assignment": "not_support"},
        {"text": "fact two", "importance": "okay", "assignment": "not_support"},
    ]
    path = _write(tmp_path / "a.jsonl", [_record(), _record(nuggets=nuggets_b), _record(run_id="r2")])
    examples = read_trec_labelled(path)
    assert [e.response_id for e in examples] == ["q1:r1", "q1:r1~2", "q1:r2"]
    assert examples[0].labels != examples[1].labels  # same answer, different labels: both kept
    # a repeated stripped text keeps its own id; ids agree across records
    assert [r.rubric_id for r in examples[0].rubrics] == ["q1#n0", "q1#n1", "q1#n2"]
    assert [r.rubric_id for r in examples[1].rubrics] == ["q1#n0", "q1#n1", "q1#n2"]
    assert [r.text for r in examples[0].rubrics] == ["fact one", "fact one", "fact two"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"qid": "q1", "query": "Q?", "answer_text": "A", "nuggets": []}, "field 'run_id': missing"),
        (
            _record(nuggets=[{"text": "x", "importance": "vital", "assignment": "yes"}]),
            "nuggets[0].assignment",
        ),
        (
            _record(nuggets=[{"text": "x", "importance": "high", "assignment": "support"}]),
            "nuggets[0].importance",
        ),
        (
            _record(nuggets=[{"text": "  ", "importance": "vital", "assignment": "support"}]),
            "nuggets[0].text",
        ),
        (_record(query=""), "field 'query'"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, record, message):
    path = _write(tmp_path / "bad.jsonl", [_record(run_id="ok"), record])
    with pytest.raises(RecordError) as info:
        read_trec_labelled(path)
    assert str(path) in str(info.value) and "line 2" in str(info.value) and message in str(info.value)


def test_rubric_sets_reject_a_changed_nugget_list(tmp_path):
    other = [{"text": "something else", "importance": "vital", "assignment": "support"}]
    path = _write(tmp_path / "a.jsonl", [_record(), _record(run_id="r2", nuggets=other)])
    with pytest.raises(RecordError, match=r"line 2.*different nugget list"):
        read_trec_rubric_sets(path)


def test_written_rubric_sets_keep_text_and_importance_ids_are_regenerated(tmp_path):
    from rubric_pipeline.core.records import Rubric

    rubric_set = RubricSet("q9", "Why?", rubrics=[Rubric("x", "a fact", "okay"), Rubric("y", "b", "vital")])
    out = tmp_path / "o.jsonl"
    write_trec_jsonl(out, [rubric_set])
    (back,) = read_trec_rubric_sets(out)
    assert [(r.text, r.importance) for r in back.rubrics] == [("a fact", "okay"), ("b", "vital")]
    assert [r.rubric_id for r in back.rubrics] == ["q9#n0", "q9#n1"]


def _write_records(tmp_path, *records):
    path = tmp_path / "assign.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_failed_assignments_read_as_absent_labels(tmp_path):
    nuggets = [
        {"text": "fact one", "importance": "vital", "assignment": "support"},
        {"text": "fact two", "importance": "okay", "assignment": "failed"},
        {"text": "fact three", "importance": "vital", "assignment": "not_support"},
    ]
    all_failed = [{"text": "fact one", "importance": "vital", "assignment": "failed"}]
    base = {"qid": "q1", "query": "Q?", "answer_text": "A."}
    path = _write_records(
        tmp_path, base | {"run_id": "r1", "nuggets": nuggets}, base | {"run_id": "r2", "nuggets": all_failed}
    )
    (example,) = read_trec_labelled(path)  # the record whose every assignment failed is skipped
    assert [r.text for r in example.rubrics] == ["fact one", "fact three"]
    assert example.labels == ["support", "not_support"]
    assert [r.rubric_id for r in example.rubrics] == ["q1#n0", "q1#n2"]  # ids stay those of the topic


def test_retrieval_mode_assign_records_read(tmp_path):
    record = {
        "qid": "q1",
        "query": "Q?",
        "docid": "doc-7",
        "candidate_text": "The passage text.",
        "nuggets": [{"text": "fact one", "importance": "vital", "assignment": "partial_support"}],
    }
    plain = {k: v for k, v in record.items() if k != "candidate_text"} | {"docid": "doc-8", "text": "Other."}
    first, second = read_trec_labelled(_write_records(tmp_path, record, plain))
    assert (first.response, first.response_id, first.labels) == (
        "The passage text.",
        "q1:doc-7",
        ["partial_support"],
    )
    assert (second.response, second.response_id) == ("Other.", "q1:doc-8")


def test_missing_importance_defaults_to_okay_as_in_nuggetizer(tmp_path):
    record = {
        "qid": "q1",
        "query": "Q?",
        "nuggets": [{"text": "fact one"}, {"text": "x", "importance": None}],
    }
    (rubric_set,) = read_trec_rubric_sets(_write_records(tmp_path, record))
    assert [r.importance for r in rubric_set.rubrics] == ["okay", "okay"]
