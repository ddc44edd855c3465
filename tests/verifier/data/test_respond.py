"""`rubric-verifier respond`: endpoints x contexts x temperatures, the form `label` reads, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rubric_pipeline.core.records import Rubric, RubricSet, iter_jsonl, write_jsonl
from verifier.data.respond import (
    RespondConfig,
    load_question_list,
    parse_endpoint,
    plan,
    render,
    response_id,
)
from verifier.data.teacher import load_responses

QUESTIONS = [
    {"qid": "q1", "question": "When did the Varenholt bridge open?"},
    {"qid": "q2", "question": "Who runs the Lissor ferry?"},
]
CORPUS = [
    {
        "id": "d1",
        "title": "Varenholt bridge",
        "text": "The Varenholt bridge opened in 1932 over the Aske river.",
    },
    {"id": "d2", "title": "Lissor ferry", "text": "The Lissor ferry is run by the town council since 1950."},
    {"id": "d3", "text": "Kite festivals draw crowds to the dunes every spring."},
]


def _rows(path: Path) -> list[dict]:
    return [record for _, record in iter_jsonl(path)] if path.exists() else []


def test_endpoint_specs_and_config_are_checked() -> None:
    assert parse_endpoint("qwen@http://127.0.0.1:8000/v1") == ("qwen", "http://127.0.0.1:8000/v1")
    assert parse_endpoint("org/model@v2@http://h:1/v1") == ("org/model@v2", "http://h:1/v1")
    for bad in ("http://127.0.0.1:8000/v1", "qwen@", "@http://h/v1", "qwen@ftp://h"):
        with pytest.raises(ValueError, match="MODEL@URL"):
            parse_endpoint(bad)
    with pytest.raises(ValueError, match="needs --corpus"):
        RespondConfig(contexts=["passages"])
    with pytest.raises(ValueError, match="unknown context"):
        RespondConfig(contexts=["web"])
    with pytest.raises(ValueError, match="temperatures"):
        RespondConfig(temperatures=[-0.5])
    with pytest.raises(ValueError, match="samples"):
        RespondConfig(samples=0)


def test_questions_come_from_questions_or_rubric_sets(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "q.jsonl", QUESTIONS)
    sets = [
        RubricSet("q9", "Why is the sky blue?", rubrics=[Rubric("r0", "Rayleigh scattering is involved")])
    ]
    write_jsonl(tmp_path / "sets.jsonl", [s.to_dict() for s in sets])
    assert load_question_list(tmp_path / "q.jsonl") == [(q["qid"], q["question"]) for q in QUESTIONS]
    assert load_question_list(tmp_path / "sets.jsonl") == [("q9", "Why is the sky blue?")]


def test_plan_covers_every_combination_and_skips_what_is_written() -> None:
    config = RespondConfig(
        endpoint=["a@http://h/v1", "b@http://h/v1", "a@http://g/v1"], temperatures=[0, 0.7]
    )
    questions = [(q["qid"], q["question"]) for q in QUESTIONS]
    jobs = plan(config, questions, set())
    assert len(jobs) == 2 * 2 * 2  # questions x models (a counted once) x temperatures
    assert len({job.response_id for job in jobs}) == len(jobs)
    assert response_id("q1", "a", "none", 0.7, 0) == "q1:a:none:t0.7:s0"
    done = {jobs[0].response_id, jobs[3].response_id}
    assert [job for job in plan(config, questions, done)] == [j for j in jobs if j.response_id not in done]


def test_prompts_carry_the_passages_and_the_completion_cue() -> None:
    from rubric_pipeline.core.records import Passage

    passage = Passage("d1#0", "d1", "The bridge opened in 1932.", title="Bridge")
    chat = render("When?", [passage], 10, "chat")
    assert "[1] Bridge: The bridge" in chat and "opened in 1932" not in chat  # cut to passage_chars
    assert render("When?", [], 600, "completions").endswith("Answer:")


@pytest.mark.vllm
def test_respond_on_vllm_writes_what_label_reads_and_resumes(tmp_path: Path, vllm_server) -> None:
    from verifier.cli import main

    write_jsonl(tmp_path / "q.jsonl", QUESTIONS)
    write_jsonl(tmp_path / "corpus.jsonl", CORPUS)
    out = tmp_path / "out"
    endpoint = f"{vllm_server.model_name}@{vllm_server.base_url}"
    argv = ["respond", "--questions", str(tmp_path / "q.jsonl"), "--endpoint", endpoint, "--output", str(out)]
    argv += ["--contexts", "none", "passages", "--corpus", str(tmp_path / "corpus.jsonl"), "--passages", "2"]
    argv += ["--temperatures", "0", "1.0", "--max-tokens", "8"]
    assert main(argv) == 0
    rows = _rows(out / "responses.jsonl")
    assert len(rows) == 2 * 2 * 2 and len({row["response_id"] for row in rows}) == 8
    with_passages = [row for row in rows if row["context"] == "passages"]
    assert all(len(row["passage_ids"]) == 2 for row in with_passages)
    assert {row["passage_ids"][0] for row in with_passages if row["qid"] == "q1"} == {"d1#0"}
    assert all(not row["passage_ids"] for row in rows if row["context"] == "none")
    assert {row["temperature"] for row in rows} == {0.0, 1.0}
    greedy = [row["response"] for row in rows if row["qid"] == "q1" and row["context"] == "none"]
    assert all(isinstance(text, str) for text in greedy)
    assert {r[1] for r in load_responses(out / "responses.jsonl")} == {row["response_id"] for row in rows}

    # a run killed part-way: the first three responses survive; the rerun writes only the other five
    kept = rows[:3]
    write_jsonl(out / "responses.jsonl", kept)
    assert main(argv) == 0
    again = _rows(out / "responses.jsonl")
    assert again[:3] == kept and len(again) == 8
    assert {row["response_id"] for row in again} == {row["response_id"] for row in rows}
    # greedy decoding with the same seed reproduces what the first run wrote
    first = {row["response_id"]: row["response"] for row in rows if row["temperature"] == 0.0}
    assert {k: v for k, v in ((r["response_id"], r["response"]) for r in again) if k in first} == first
    assert main(argv) == 0 and len(_rows(out / "responses.jsonl")) == 8  # nothing left to do


def test_respond_cli_names_a_bad_endpoint(tmp_path: Path, one_line_error) -> None:
    write_jsonl(tmp_path / "q.jsonl", QUESTIONS)
    argv = ["--questions", str(tmp_path / "q.jsonl"), "--endpoint", "nourl", "--output", str(tmp_path)]
    one_line_error("respond", argv, "", ("--endpoint 'nourl'", "MODEL@URL"))


def test_respond_cli_names_a_bad_questions_file(tmp_path: Path, one_line_error) -> None:
    (tmp_path / "q.jsonl").write_text(json.dumps({"qid": "q1"}) + "\n", encoding="utf-8")
    argv = ["--questions", str(tmp_path / "q.jsonl"), "--endpoint", "m@http://127.0.0.1:9/v1"]
    one_line_error(
        "respond", [*argv, "--output", str(tmp_path / "o")], tmp_path / "q.jsonl", ("line 1", "question")
    )
