"""`rubric-verifier build` end to end: offline and on vLLM, resume after an interruption, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rubric_pipeline.pipeline import BuildConfig, build
from verifier.cli import main

DOCS = [
    (
        "velmora",
        "Velmora",
        "Velmora is a coastal city in the province of Tarsk. It was founded in 1342 by salt "
        "traders. Velmora is known for its glass harbor, built in 1901.",
    ),
    (
        "velmora-2",
        "Velmora harbor",
        "Salt traders founded Velmora in the year 1342. Ferries leave the Velmora "
        "harbor for the islands every hour.",
    ),
    (
        "quorin",
        "Quorin Labs",
        "Quorin Labs is a robotics company based in Ostrel. It makes warehouse robots and "
        "drones. Quorin Labs was founded in 2011 by Mira Dansk.",
    ),
    (
        "ostrel",
        "Ostrel",
        "Ostrel is an inland town with a river port. Ostrel hosts an annual kite festival in autumn.",
    ),
    ("tarsk", "Tarsk", "Tarsk is a northern province famous for salt marshes and long winters."),
]
QUESTIONS = [
    ("q1", "When was Velmora founded and by whom?"),
    ("q2", "What does Quorin Labs make?"),
    ("q3", "Which festival does Ostrel host?"),
    ("q4", "What is Tarsk famous for?"),
]


@pytest.fixture
def world(tmp_path: Path) -> dict[str, str]:
    corpus, questions, gold = tmp_path / "corpus.jsonl", tmp_path / "questions.jsonl", tmp_path / "gold.jsonl"
    corpus.write_text("".join(json.dumps({"id": d, "title": t, "text": x}) + "\n" for d, t, x in DOCS))
    questions.write_text("".join(json.dumps({"qid": q, "question": t}) + "\n" for q, t in QUESTIONS))
    gold.write_text(
        json.dumps(
            {
                "qid": "q1",
                "nuggets": ["Velmora was founded in 1342 by salt traders."],
                "passages": ["velmora#0", "velmora-2#0"],
            }
        )
        + "\n"
        + json.dumps(
            {
                "qid": "q3",
                "nuggets": ["Ostrel hosts an annual kite festival in autumn."],
                "passages": ["ostrel#0"],
            }
        )
        + "\n"
    )
    return {"corpus": str(corpus), "questions": str(questions), "gold": str(gold)}


def rows(directory: Path) -> list[dict]:
    from datasets import load_from_disk

    return load_from_disk(str(directory / "dataset")).to_list()


def test_offline_build_writes_dataset_with_provenance_and_scores(world, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = build(BuildConfig(**world, batch_size=2), out)
    data = rows(out)
    assert [r["qid"] for r in data] == ["q1", "q2", "q3", "q4"]
    passage_ids = {f"{d}#0" for d, _, _ in DOCS}
    q1 = data[0]
    assert q1["queries"][0] == QUESTIONS[0][1] and len(q1["queries"]) > 1  # PRF added queries
    assert any("1342" in r["text"] for r in q1["rubrics"])
    for row in data:
        assert row["meta"]["config_hash"] == stats["config_hash"] and row["meta"]["model"] == "offline"
        for rubric in row["rubrics"]:
            assert rubric["importance"] in {"vital", "okay"} and rubric["sources"]
            assert {s["passage_id"] for s in rubric["sources"]} <= passage_ids
            assert all(s["query"] in row["queries"] for s in rubric["sources"])
    # the paraphrased founding fact from two documents merged into one rubric with both sources
    founded = [r for r in q1["rubrics"] if "1342" in r["text"]]
    assert len(founded) == 1 and {s["doc_id"] for s in founded[0]["sources"]} == {"velmora", "velmora-2"}
    assert founded[0]["importance"] == "vital"
    assert set(stats["stage_seconds"]) == {"index", "rewrite", "retrieve", "extract", "merge"}
    assert stats["scores"]["recall@10"] == 1.0 and stats["scores"]["rubric_recall"] == 1.0
    assert 0 < stats["scores"]["rubric_precision"] <= 1.0
    trec = [json.loads(line) for line in (out / "rubrics.trec.jsonl").read_text().splitlines()]
    assert [t["qid"] for t in trec] == ["q1", "q2", "q3", "q4"]
    import pandas as pd

    assert len(pd.read_parquet(out / "rubrics.parquet")) == 4
    assert json.loads((out / "stats.json").read_text())["rubrics"] == stats["rubrics"]


def test_interrupted_build_resumes_to_the_same_dataset(world, tmp_path: Path) -> None:
    config = BuildConfig(**world, batch_size=1)
    build(config, tmp_path / "full")

    done: list[str] = []

    def interrupt_after_two(qid: str) -> None:
        done.append(qid)
        if len(done) == 2:
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build(config, out, on_question_done=interrupt_after_two)
    assert not (out / "dataset").exists()
    with (out / "progress.jsonl").open("a") as handle:  # a kill in the middle of writing a record
        handle.write('{"rubric_set": {"qid": "q3", "quest')
    stats = build(config, out)
    assert stats["resumed"] == 2 and stats["built_this_run"] == 2
    assert rows(out) == rows(tmp_path / "full")
    lines = (out / "progress.jsonl").read_text().splitlines()
    qids = [json.loads(line)["rubric_set"]["qid"] for line in lines[1:]]
    assert sorted(qids) == ["q1", "q2", "q3", "q4"]  # no duplicate, none lost
    # a finished build restarted does no work and keeps the dataset
    again = build(config, out)
    assert again["built_this_run"] == 0 and rows(out) == rows(tmp_path / "full")


def test_resume_refuses_progress_from_another_config(world, tmp_path: Path) -> None:
    build(BuildConfig(**world, limit=1), tmp_path / "out")
    with pytest.raises(ValueError, match="config hash"):
        build(BuildConfig(**world, max_rubrics=3), tmp_path / "out")
    stats = build(BuildConfig(**world, max_rubrics=3, resume=False, limit=1), tmp_path / "out")
    assert stats["built_this_run"] == 1


def test_cli_recipe_and_flags(world, tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"build:\n  corpus: {world['corpus']}\n  questions: {world['questions']}\n  max_rubrics: 2\n"
    )
    code = main(
        [
            "build",
            "--recipe",
            str(recipe),
            "--output",
            str(tmp_path / "out"),
            "--limit",
            "2",
            "--gold",
            world["gold"],
            "--dense",
            "false",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "built 2 questions" in printed and "recall@10" in printed and "stage wall time" in printed
    data = rows(tmp_path / "out")
    assert len(data) == 2 and all(len(r["rubrics"]) <= 2 for r in data)


def serve_documents(tmp_path: Path, docs: list[tuple[str, str, str]]):
    """The project's SearXNG-style search server over ``docs`` on 127.0.0.1 (context manager -> base URL)."""
    from rubric_pipeline.corpus import load_corpus
    from rubric_pipeline.retrieval.bm25 import BM25Index
    from rubric_pipeline.retrieval.search_server import serve_in_thread

    path = tmp_path / "web-corpus.jsonl"
    path.write_text("".join(json.dumps({"id": d, "title": t, "text": x}) + "\n" for d, t, x in docs))
    return serve_in_thread(BM25Index(load_corpus(path), show_progress=False))


def test_build_from_the_web_alone_keeps_url_and_title(world, tmp_path: Path, capsys) -> None:
    titles = {f"/doc/{d}": t for d, t, _ in DOCS}
    with serve_documents(tmp_path, DOCS) as base_url:
        code = main(
            ["build", "--questions", world["questions"], "--web-search-url", base_url,
             "--output", str(tmp_path / "out"), "--batch-size", "2"]
        )  # fmt: skip
    assert code == 0
    assert "retrieval web" in capsys.readouterr().out
    data = rows(tmp_path / "out")
    assert [r["qid"] for r in data] == ["q1", "q2", "q3", "q4"]
    assert not (tmp_path / "out" / "index").exists()  # no local corpus was indexed
    for row in data:
        assert row["rubrics"], row["qid"]
        for source in (s for rubric in row["rubrics"] for s in rubric["sources"]):
            path = source["url"].removeprefix(base_url)
            assert source["doc_id"] == source["url"] and source["passage_id"].startswith(source["url"] + "#")
            assert source["title"] == titles[path]
    founded = [r for r in data[0]["rubrics"] if "1342" in r["text"]]
    assert len(founded) == 1
    assert {s["title"] for s in founded[0]["sources"]} == {"Velmora", "Velmora harbor"}
    assert any("kite festival" in r["text"] for r in data[2]["rubrics"])


def test_build_fuses_corpus_and_web_by_rrf(world, tmp_path: Path) -> None:
    local, web = DOCS[:3], DOCS[2:]  # Quorin Labs is in both
    corpus = tmp_path / "local.jsonl"
    corpus.write_text("".join(json.dumps({"id": d, "title": t, "text": x}) + "\n" for d, t, x in local))
    with serve_documents(tmp_path, web) as base_url:
        config = BuildConfig(
            corpus=str(corpus), questions=world["questions"], web_search_url=base_url, dense=False
        )
        stats = build(config, tmp_path / "out")
    assert stats["retrieval"] == "corpus+web"
    sources = {
        row["qid"]: [s for rubric in row["rubrics"] for s in rubric["sources"]]
        for row in rows(tmp_path / "out")
    }
    # Velmora only in the corpus: local passage ids, the corpus title, no URL
    assert {(s["passage_id"], s["url"]) for s in sources["q1"]} <= {
        ("velmora#0", None),
        ("velmora-2#0", None),
    }
    # Quorin Labs on both sides: the web result is the same passage, so it is not duplicated
    assert {s["passage_id"] for s in sources["q2"]} == {"quorin#0"}
    # Ostrel and Tarsk only on the web: web URLs and titles
    for qid, title in (("q3", "Ostrel"), ("q4", "Tarsk")):
        assert sources[qid] and all(s["url"].startswith(f"{base_url}/doc/") for s in sources[qid])
        assert title in {s["title"] for s in sources[qid]}


def test_unreachable_web_search_is_one_line(world, tmp_path: Path, capsys) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once it is closed
    code = main(
        ["build", "--questions", world["questions"], "--web-search-url", url, "--output", str(tmp_path)]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert error.splitlines()[-1].startswith(
        f"rubric-verifier build: error: web search {url}/search failed after 3 attempt(s)"
    )


@pytest.mark.parametrize(
    ("which", "content", "expected"),
    [
        ("corpus", '{"id": "a", "text": "fine"}\n{"id": "b"}\n', "line 2, field 'text'"),
        ("corpus", '{"id": "a", "text": "fine"}\n{not json\n', "line 2: malformed JSON"),
        ("corpus", b'{"id": "a", "text": "caf\xe9"}\n', "line 1: not UTF-8 text"),
        ("questions", '{"qid": "q1", "question": "ok?"}\n{"qid": "q2"}\n', "line 2, field 'question'"),
        ("questions", '{"qid": "q1", "question": "ok?"}\n{"qid": "q2", "quest', "line 2: malformed JSON"),
        ("questions", '{"question": "no id?"}\n', "line 1, field 'qid': missing required field"),
        ("questions", '{"qid": "q1", "question": 5}\n', "line 1, field 'question': expected str, got int"),
        ("questions", '{"qid": ["q1"], "question": "ok?"}\n', "line 1, field 'qid': expected str, got list"),
        ("questions", "[1, 2]\n", "line 1: expected a JSON object, got list"),
        ("questions", "", ": no questions in the file (it is empty or blank)"),
        ("questions", "\n\n", ": no questions in the file (it is empty or blank)"),
        ("gold", '{"qid": "q1", "nuggets": "one"}\n', "line 1, field 'nuggets'"),
    ],
)
def test_bad_inputs_name_the_record(
    world, tmp_path: Path, capsys, which: str, content: str | bytes, expected: str
) -> None:
    bad = tmp_path / f"bad-{which}.jsonl"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    paths = world | {which: str(bad)}
    out = tmp_path / "out"
    flags = ["--corpus", paths["corpus"], "--questions", paths["questions"], "--gold", paths["gold"]]
    assert main(["build", *flags, "--output", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()  # one line, no traceback
    assert line.startswith(f"rubric-verifier build: error: {bad}") and expected in line
    # questions and gold are read before the output folder is made; the corpus only when there is work
    assert not (out / "dataset").exists() and (which == "corpus" or not out.exists())


@pytest.mark.parametrize(
    ("recipe", "flags", "expected"),
    [
        ("build: [unclosed\n", [], "line 2, column 1: invalid YAML"),
        ("build:\n  k: ten\n", [], "section 'build' of RECIPE: option 'k' expects int, got str 'ten'"),
        ("build:\n  dense: maybe\n", [], "option 'dense' expects bool, got str 'maybe'"),
        ("build:\n  llm_api: responses\n", [], "option 'llm_api' must be one of ['chat', 'completions']"),
        ("build:\n  max_rubrics: 0\n", [], "build option max_rubrics must be >= 1, got 0"),
        ("", ["--min-words", "9", "--max-words", "3"], "min_words (9) must be <= max_words (3)"),
        ("", ["--llm-url", "http://127.0.0.1:9/v1"], "--llm-url needs --model"),
        ("", ["--questions", "QUESTIONS_DIR"], "is a folder, not a JSONL file"),
        ("", ["--output", "CORPUS"], "is a file, not a folder"),
    ],
)
def test_bad_options_are_one_line(
    world, tmp_path: Path, capsys, recipe: str, flags: list, expected: str
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe)
    names = {"QUESTIONS_DIR": str(tmp_path), "CORPUS": world["corpus"]}
    flags = [names.get(flag, flag) for flag in flags]
    args = ["build", "--recipe", str(path), "--corpus", world["corpus"], "--questions", world["questions"]]
    assert main([*args, "--output", str(tmp_path / "out"), *flags]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("rubric-verifier build: error: ")
    assert expected.replace("RECIPE", str(path)) in line


def test_a_question_with_nothing_found_is_counted_not_silent(world, tmp_path: Path) -> None:
    questions = tmp_path / "zorblax.jsonl"
    questions.write_text(json.dumps({"qid": "z", "question": "Which moons orbit Zorblax?"}) + "\n")
    stats = build(
        BuildConfig(corpus=world["corpus"], questions=str(questions), dense=False), tmp_path / "out"
    )
    assert stats["rubrics"] == 0 and stats["events"]["merge.questions_without_rubrics"] == 1
    assert stats["stage_seconds"]["merge"] < 1.0  # no encoder loaded for nothing
    assert rows(tmp_path / "out")[0]["rubrics"] == []


def test_recipe_values_are_converted_where_yaml_is_ambiguous(world) -> None:
    from rubric_pipeline.core.config import build_config

    recipe = {"build": {"merge_threshold": 1, "timeout_s": "1e2", "dense": "false", "k": "7"}}
    config = build_config(BuildConfig, recipe, "build", {"corpus": world["corpus"]})
    assert (config.merge_threshold, config.timeout_s, config.dense, config.k) == (1.0, 100.0, False, 7)
    assert isinstance(config.merge_threshold, float)


@pytest.mark.vllm
def test_build_with_the_tiny_model_on_vllm(world, tmp_path: Path, vllm_server) -> None:
    config = BuildConfig(
        **world,
        llm_url=[vllm_server.base_url],
        model=vllm_server.model_name,
        limit=2,
        rewrite_max_nodes=3,
        rewrites_per_call=2,
        passages_per_question=2,
        min_words=1,
        max_words=80,
        max_nugget_chars=60,
        max_tokens=160,
        dense=False,
        min_relative_coverage=0.0,  # every retrieved passage goes to the model
    )
    stats = build(config, tmp_path / "out")
    usage = stats["llm_usage"]
    progress = (tmp_path / "out" / "progress.jsonl").read_text().splitlines()[1:]
    passages = sum(len(json.loads(line)["retrieved"]) for line in progress)
    # a rewrite call per question and an extraction call per retrieved passage (BM25 may find fewer)
    assert passages >= 2 and usage["requests"] >= 2 + passages and usage["failures"] == 0
    assert stats["events"].get("rewrite.llm_failures", 0) == 0
    assert stats["events"].get("extract.llm_failures", 0) == 0  # structured outputs kept it parseable
    data = rows(tmp_path / "out")
    assert [r["qid"] for r in data] == ["q1", "q2"]
    for row in data:
        assert row["meta"]["model"] == vllm_server.model_name and row["meta"]["backend"] == "llm:chat"
        for rubric in row["rubrics"]:
            assert rubric["importance"] in {"vital", "okay"} and rubric["sources"]


def test_rubric_matching_is_one_to_one() -> None:
    from rubric_pipeline.scoring import recall_at_k, rubric_scores

    gold = {
        "q": ["Velmora was founded in 1342 by salt traders.", "Velmora has a glass harbor built in 1901."]
    }
    duplicate = {
        "q": ["Salt traders founded Velmora in 1342.", "Velmora was founded by salt traders in 1342."]
    }
    scores = rubric_scores(duplicate, gold)
    assert scores["rubric_recall"] == 0.5 and scores["rubric_precision"] == 0.5  # a duplicate counts once
    both = rubric_scores({"q": [*duplicate["q"][:1], "The glass harbor of Velmora dates from 1901."]}, gold)
    assert both["rubric_recall"] == 1.0 and both["rubric_precision"] == 1.0
    assert rubric_scores({}, gold)["rubric_recall"] == 0.0
    assert recall_at_k({"q": ["a", "x", "b"]}, {"q": ["a", "b"], "r": []}, k=2) == 0.5


def test_similarity_filters_drop_off_topic_nuggets_and_count_them(world, tmp_path: Path) -> None:
    plain = build(BuildConfig(**world, dense=False), tmp_path / "plain")
    strict = build(BuildConfig(**world, dense=False, min_topic_similarity=0.99), tmp_path / "topic")
    assert strict["events"]["merge.off_topic_dropped"] > 0 and strict["rubrics"] < plain["rubrics"]
    question = build(BuildConfig(**world, dense=False, min_question_similarity=0.99), tmp_path / "question")
    assert question["events"]["merge.off_topic_dropped"] > 0 and question["rubrics"] < plain["rubrics"]
    assert "merge.off_topic_dropped" not in plain["events"]  # both filters are off by default
    agreed = build(BuildConfig(**world, dense=False, min_agreeing_documents=1), tmp_path / "agreement")
    assert agreed["events"]["merge.off_topic_dropped"] > 0 and agreed["rubrics"] < plain["rubrics"]


def test_agreeing_documents_counts_other_documents_that_say_the_same() -> None:
    import numpy as np

    from rubric_pipeline.extract import Candidate
    from rubric_pipeline.stages import agreeing_documents

    def candidate(text: str, doc_id: str) -> Candidate:
        return Candidate(text, f"{doc_id}#0", doc_id, "q", 1)

    group = [candidate("a", "d1"), candidate("a'", "d1"), candidate("a''", "d2"), candidate("b", "d3")]
    same, other = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    vectors = np.stack([same, same, same, other])
    # d1's two candidates agree with d2 only (their own document does not count); b stands alone
    assert agreeing_documents(group, vectors, 0.7).tolist() == [1, 1, 1, 0]
    assert agreeing_documents(group, vectors, 1.01).tolist() == [0, 0, 0, 0]
