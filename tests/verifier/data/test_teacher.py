"""Teacher labelling: labelled rows + dataset dir, resume, failures kept apart, TREC input, generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rubric_pipeline.core.records import LabelledExample, Rubric, RubricSet, iter_jsonl, write_jsonl
from verifier.data.teacher import LabelConfig, run_label

S, N = "support", "not_support"
RUBRICS = [Rubric("b0", "The Varenholt bridge opened in 1932"), Rubric("b1", "Harbor tolls pay for upkeep")]
RUBRIC_SETS = [
    RubricSet("q1", "When did the Varenholt bridge open?", rubrics=RUBRICS),
    RubricSet("q2", "Who runs the ferry?", rubrics=[Rubric("f0", "The ferry is run by the town council")]),
]
RESPONSES = [
    {"qid": "q1", "response_id": "a", "response": "The Varenholt bridge opened in 1932."},
    {"qid": "q1", "response_id": "b", "response": "Harbor tolls pay for its upkeep."},
    {"qid": "q2", "response_id": "c", "response": "The town council runs the ferry."},
    {"qid": "q2", "response_id": "d", "response": "Thought process:"},
]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "rubrics.jsonl", [rubric_set.to_dict() for rubric_set in RUBRIC_SETS])
    dev = [
        LabelledExample("q1", "?", "The Varenholt bridge opened in 1932.", "d1", RUBRICS, [S, N], "human"),
        LabelledExample("q1", "?", "Tolls at the harbor pay for upkeep.", "d2", RUBRICS, [N, S], "human"),
    ]
    write_jsonl(tmp_path / "dev.jsonl", [example.to_dict() for example in dev])
    return tmp_path


def _rows(path: Path) -> list[dict]:
    return [record for _, record in iter_jsonl(path)] if path.exists() else []


async def test_label_writes_rows_and_dataset_then_resumes(inputs: Path) -> None:
    from datasets import load_from_disk

    out = inputs / "out"
    write_jsonl(inputs / "responses.jsonl", RESPONSES[:2])
    config = LabelConfig(
        judge="lexical",
        fit=str(inputs / "dev.jsonl"),
        rubrics=str(inputs / "rubrics.jsonl"),
        responses=str(inputs / "responses.jsonl"),
        output=str(out),
    )
    counts = await run_label(config)
    assert counts == {"already_done": 0, "labelled": 2, "failed": 0, "dataset_rows": 2}
    rows = _rows(out / "labelled.jsonl")
    assert {row["response_id"]: row["labels"] for row in rows} == {"a": [S, N], "b": [N, S]}
    assert {row["label_source"] for row in rows} == {"teacher:lexical"}

    write_jsonl(inputs / "responses.jsonl", RESPONSES)  # two new responses; a and b must not be judged again
    counts = await run_label(config)
    assert counts == {"already_done": 2, "labelled": 2, "failed": 0, "dataset_rows": 4}
    rows = {row["response_id"]: row for row in _rows(out / "labelled.jsonl")}
    assert len(rows) == 4 and len(_rows(out / "labelled.jsonl")) == 4  # appended, nothing twice
    assert rows["c"]["labels"] == [S]
    assert rows["d"]["labels"] == [N]  # degenerate opener: not_support
    dataset = load_from_disk(str(out / "dataset"))
    assert dataset.num_rows == 4
    assert {row["response_id"]: row["rubrics"][0]["rubric_id"] for row in dataset}["c"] == "f0"


async def test_unjudgeable_items_go_to_failures_not_the_dataset(inputs: Path) -> None:
    from verifier.serve.engine import free_port

    write_jsonl(inputs / "responses.jsonl", RESPONSES)
    config = LabelConfig(
        judge="llm",
        llm_url=[f"http://127.0.0.1:{free_port()}/v1"],  # nothing listens: every request fails
        model="m",
        max_retries=0,
        rubrics=str(inputs / "rubrics.jsonl"),
        responses=str(inputs / "responses.jsonl"),
        output=str(inputs / "out"),
    )
    counts = await run_label(config)
    assert counts["failed"] == 3 and counts["labelled"] == 1  # the degenerate one needs no model
    failures = _rows(inputs / "out" / "failures.jsonl")
    assert sorted(f["response_id"] for f in failures) == ["a", "b", "c"]
    assert all("request failed" in f["error"] for f in failures)
    assert [row["response_id"] for row in _rows(inputs / "out" / "labelled.jsonl")] == ["d"]
    counts = await run_label(config)  # failures are retried on the next run, and listed once
    assert counts["already_done"] == 1 and counts["failed"] == 3
    assert len(_rows(inputs / "out" / "failures.jsonl")) == 3


async def test_trec_responses_carry_their_own_rubrics(tmp_path: Path) -> None:
    nuggets = [
        {"text": " The bridge opened in 1932 ", "importance": "vital", "assignment": "support"},
        {"text": "Tolls pay for upkeep", "importance": "okay", "assignment": "not_support"},
    ]
    record = {
        "qid": "t1",
        "query": "bridge?",
        "run_id": "r1",
        "answer_text": "It opened in 1932.",
        "nuggets": nuggets,
    }
    write_jsonl(tmp_path / "trec.jsonl", [record, record | {"run_id": "r2", "answer_text": "Tolls pay."}])
    config = LabelConfig(
        judge="lexical", responses=str(tmp_path / "trec.jsonl"), output=str(tmp_path / "out")
    )
    counts = await run_label(config)
    assert counts["labelled"] == 2
    rows = _rows(tmp_path / "out" / "labelled.jsonl")
    assert [rubric["text"] for rubric in rows[0]["rubrics"]] == [
        "The bridge opened in 1932",
        "Tolls pay for upkeep",
    ]


async def test_missing_rubric_set_is_a_record_error(inputs: Path) -> None:
    from rubric_pipeline.core.records import RecordError

    write_jsonl(inputs / "responses.jsonl", [{"qid": "nope", "response_id": "z", "response": "text"}])
    config = LabelConfig(
        judge="lexical",
        rubrics=str(inputs / "rubrics.jsonl"),
        responses=str(inputs / "responses.jsonl"),
        output=str(inputs / "out"),
    )
    with pytest.raises(RecordError, match="no rubric set"):
        await run_label(config)


@pytest.mark.vllm
def test_label_cli_generates_and_judges_with_the_served_model(inputs: Path, vllm_server) -> None:
    from verifier.cli import main

    out = inputs / "gen"
    argv = ["label", "--judge", "llm", "--llm-url", vllm_server.base_url, "--model", vllm_server.model_name]
    argv += ["--rubrics", str(inputs / "rubrics.jsonl"), "--generate", "2", "--gen-max-tokens", "12"]
    assert main([*argv, "--output", str(out)]) == 0
    rows = _rows(out / "labelled.jsonl")
    assert sorted(row["response_id"] for row in rows) == ["q1:gen0", "q1:gen1", "q2:gen0", "q2:gen1"]
    assert all(len(row["labels"]) == len(row["rubrics"]) for row in rows)
    assert {row["label_source"] for row in rows} == {f"teacher:{vllm_server.model_name}"}
    assert json.loads((out / "dataset" / "dataset_info.json").read_text())["features"]["labels"]


DEMO_GOLD = Path(__file__).parents[3] / "data" / "demo" / "gold.jsonl"  # not a rubric-set file
BAD_RESPONSES = {
    "empty": (b"", ("no responses", "empty")),
    "missing": (b'{"qid": "q1", "response_id": "a"}\n', ("line 1", "field 'response'", "missing")),
    "wrong_type": (
        b'{"qid": "q1", "response_id": "a", "response": ["x"]}\n',
        ("field 'response'", "got list"),
    ),
    "malformed": (b'{"qid": "q1", "response_id": "a", "response": "x"}\n\n{"qid"\n', ("line 3", "malformed")),
    "not_utf8": ('{"qid": "q1", "response_id": "a", "response": "caf\xe9"}\n'.encode("latin-1"), ("line 1",)),
}


@pytest.mark.parametrize("case", sorted(BAD_RESPONSES))
def test_label_cli_names_the_bad_responses_file(inputs: Path, case: str, one_line_error) -> None:
    """The responses are read first: a bad one is reported even when the rubrics file is bad too."""
    content, fragments = BAD_RESPONSES[case]
    (inputs / "responses.jsonl").write_bytes(content)
    path = inputs / "responses.jsonl"
    args = ["--judge", "lexical", "--responses", str(path), "--rubrics", str(DEMO_GOLD)]
    one_line_error("label", [*args, "--output", str(inputs / "out")], path, fragments)


BAD_RUBRIC_SETS = {
    "empty": ("", ("no rubric sets", "empty")),
    "rubrics_a_string": ('{"qid": "q1", "question": "Q?", "rubrics": "abc"}', ("field 'rubrics'", "got str")),
    "missing_question": ('{"qid": "q1", "rubrics": ["a"]}', ("line 1", "field 'question'")),
    "rubric_bad_importance": (
        '{"qid": "q1", "question": "Q?", "rubrics": [{"text": "a", "importance": "high"}]}',
        ("field 'rubrics[0].importance'", "unknown importance 'high'"),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RUBRIC_SETS))
def test_label_cli_names_the_bad_rubric_set(inputs: Path, case: str, one_line_error) -> None:
    text, fragments = BAD_RUBRIC_SETS[case]
    path = inputs / "bad_rubrics.jsonl"
    path.write_text(text + "\n" if text else "", encoding="utf-8")
    write_jsonl(inputs / "responses.jsonl", RESPONSES)
    args = ["--judge", "lexical", "--responses", str(inputs / "responses.jsonl"), "--rubrics", str(path)]
    one_line_error("label", [*args, "--output", str(inputs / "out")], path, fragments)


def test_label_cli_names_a_folder_that_is_not_a_datasets_folder(
    inputs: Path, not_a_datasets_folder, one_line_error
) -> None:
    path, fragments = not_a_datasets_folder
    write_jsonl(inputs / "responses.jsonl", RESPONSES)
    args = ["--judge", "lexical", "--responses", str(inputs / "responses.jsonl"), "--rubrics", str(path)]
    one_line_error("label", [*args, "--output", str(inputs / "out")], path, fragments)


def test_rubric_sets_from_a_datasetdict_need_one_split(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    from rubric_pipeline.core.records import RecordError, rubric_set_features
    from verifier.data.teacher import load_rubric_sets

    rows = Dataset.from_list([rs.to_dict() for rs in RUBRIC_SETS], features=rubric_set_features())
    DatasetDict({"train": rows}).save_to_disk(str(tmp_path / "one"))
    loaded = load_rubric_sets(tmp_path / "one")
    assert {qid: [r.text for r in rs.rubrics] for qid, rs in loaded.items()} == {
        rs.qid: [r.text for r in rs.rubrics] for rs in RUBRIC_SETS
    }
    DatasetDict({"train": rows, "dev": rows}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(RecordError, match="splits \\['train', 'dev'\\]"):
        load_rubric_sets(tmp_path / "two")


def test_reference_nuggets_are_named_as_not_rubric_sets(tmp_path: Path) -> None:
    from rubric_pipeline.core.records import RecordError
    from verifier.data.teacher import load_rubric_sets

    gold = tmp_path / "gold.jsonl"  # the demo world's gold.jsonl shape
    write_jsonl(gold, [{"qid": "q1", "nuggets": ["A fact.", "Another fact."], "passages": ["d1"]}])
    with pytest.raises(RecordError, match=r"plain-string reference nuggets .*build"):
        load_rubric_sets(gold)
