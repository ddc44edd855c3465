"""The demo world: reproducible committed files, well-formed gold, and responses whose labels are true."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from rubric_pipeline import demo_world
from rubric_pipeline.core.records import LABELS, LabelledExample
from rubric_pipeline.demo_world import LABEL_SOURCE, DemoWorld, Entity, generate_world, make_responses

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "demo"
FILES = ("corpus.jsonl", "questions.jsonl", "gold.jsonl", "responses.jsonl")
PRONOUNS = {"it", "its", "he", "she", "his", "her", "they", "their", "them", "this", "these"}


def mentions(text: str, value: str) -> bool:
    """Whole-value match: "600" is not found inside "35,600" nor "1600"."""
    return re.search(rf"(?<!\w)(?<!\d,){re.escape(value)}(?!\w)(?!,\d)", text) is not None


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return generate_world(seed=0)


@pytest.fixture(scope="module")
def responses(world: DemoWorld) -> list[LabelledExample]:
    return make_responses(world, seed=0)


def test_committed_demo_world_is_reproduced_exactly(world: DemoWorld, tmp_path: Path) -> None:
    world.write(tmp_path)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), (
            f"data/demo/{name} differs from the generator: python -m rubric_pipeline.demo_world data/demo"
        )


def test_generator_version_follows_the_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version = demo_world.generator_version()
    assert re.fullmatch(r"demo-world-[0-9a-f]{12}", version) and demo_world.generator_version() == version
    edited = tmp_path / "demo_world.yaml"
    edited.write_bytes(demo_world.TEMPLATES_PATH.read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(demo_world, "TEMPLATES_PATH", edited)
    demo_world.generator_version.cache_clear()
    try:
        assert demo_world.generator_version() != version  # figures on another generator are not comparable
    finally:
        demo_world.generator_version.cache_clear()


def test_world_is_deterministic_by_seed(world: DemoWorld) -> None:
    again, other = generate_world(seed=0), generate_world(seed=1)
    assert again.documents == world.documents and again.gold_nuggets == world.gold_nuggets
    assert other.documents != world.documents
    assert [e.to_dict() for e in make_responses(again, 0)] == [e.to_dict() for e in make_responses(world, 0)]


def test_sizes_and_ids(world: DemoWorld) -> None:
    assert len(world.documents) == 400 and len(world.questions) == 40
    ids = [doc["id"] for doc in world.documents]
    assert len(set(ids)) == len(ids)
    assert all(len(doc["text"].split()) < 120 for doc in world.documents)  # one passage per document
    kinds = Counter(entity.kind for entity in world.question_entities.values())
    assert len(kinds) == 5 and min(kinds.values()) == 8
    small = generate_world(seed=3, n_questions=5, n_documents=30)
    assert len(small.documents) == 30 and len(small.questions) == 5
    with pytest.raises(ValueError, match="cannot hold"):
        generate_world(n_questions=40, n_documents=50)


def test_twenty_thousand_passages_in_seconds() -> None:
    start = time.perf_counter()
    big = generate_world(seed=0, n_documents=20_000)
    assert len(big.documents) == 20_000 and len({doc["id"] for doc in big.documents}) == 20_000
    assert len({entity.name for entity in big.entities}) == len(big.entities)  # entity names are unique
    assert time.perf_counter() - start < 20


def test_gold_nuggets_are_atomic_and_held_by_gold_passages(world: DemoWorld) -> None:
    texts = {f"{doc['id']}#0": doc["text"] for doc in world.documents}
    for qid, entity in world.question_entities.items():
        assert world.gold_nuggets[qid] == [nugget.text for nugget in entity.nuggets]
        assert 4 <= len(entity.nuggets) <= 8
        assert any(len(nugget.facts) == 2 for nugget in entity.nuggets)
        for nugget in entity.nuggets:
            words = nugget.text.rstrip(".").split()
            assert 10 <= len(words) <= 20, nugget.text
            assert not PRONOUNS & {word.lower() for word in words}, nugget.text
            assert entity.name in nugget.text
            passage = texts[f"{nugget.doc_id}#0"]
            assert f"{nugget.doc_id}#0" in world.gold_passages[qid]
            assert entity.name in passage and all(mentions(passage, v) for v in nugget.facts.values())
        question = next(q["question"] for q in world.questions if q["qid"] == qid)
        assert entity.name in question


def test_lookalikes_are_distractors(world: DemoWorld) -> None:
    gold = {pid for passages in world.gold_passages.values() for pid in passages}
    for entity in world.question_entities.values():
        twins = [e for e in world.entities if e.lookalike_of == entity.name]
        assert len(twins) == 2
        for twin in twins:
            assert twin.name != entity.name and not mentions(twin.name, entity.name)
            assert twin.name[:3] == entity.name[:3] or twin.name.split()[-1] == entity.name.split()[-1]
            assert not {f"{n.doc_id}#0" for n in twin.nuggets} & gold
            shared = [n for n in twin.nuggets if n.facts in [m.facts for m in entity.nuggets]]
            assert shared, "a look-alike repeats one fact group of its original"


def _check_label(entity: Entity, example: LabelledExample) -> None:
    lookalike = example.response_id.endswith("-lookalike")
    assert mentions(example.response, entity.name) != lookalike
    for nugget, label in zip(entity.nuggets, example.labels, strict=True):
        stated = [mentions(example.response, value) for value in nugget.facts.values()]
        if label == "support":
            assert all(stated), (example.response_id, nugget.text)
        elif label == "partial_support":
            assert len(stated) == 2 and sum(stated) == 1, (example.response_id, nugget.text)
        elif not lookalike:  # look-alike answers may repeat a shared fact about the other entity
            assert not any(stated), (example.response_id, nugget.text)


def test_response_labels_are_true(world: DemoWorld, responses: list[LabelledExample]) -> None:
    assert len(responses) == 5 * len(world.questions)
    for example in responses:
        entity = world.question_entities[example.qid]
        assert example.label_source == LABEL_SOURCE
        assert [rubric.text for rubric in example.rubrics] == world.gold_nuggets[example.qid]
        _check_label(entity, example)
    counts = Counter(label for example in responses for label in example.labels)
    assert set(counts) == set(LABELS) and min(counts.values()) >= 50
    complete = [e for e in responses if e.response_id.endswith("-complete")]
    assert all(set(e.labels) == {"support"} for e in complete)
    assert all(set(e.labels) == {"not_support"} for e in responses if e.response_id.endswith("-lookalike"))


def test_rubric_importance_and_provenance(world: DemoWorld, responses: list[LabelledExample]) -> None:
    example = responses[0]
    n = len(example.rubrics)
    assert [r.importance for r in example.rubrics] == ["vital"] * ((n + 1) // 2) + ["okay"] * (n // 2)
    for rubric in example.rubrics:
        (source,) = rubric.sources
        assert source.passage_id in world.gold_passages[example.qid] and source.query == example.question


def test_written_files_load_back(tmp_path: Path) -> None:
    small = generate_world(seed=5, n_questions=3, n_documents=20)
    small.write(tmp_path)
    corpus = [json.loads(line) for line in (tmp_path / "corpus.jsonl").read_text().splitlines()]
    assert [set(doc) for doc in corpus] == [{"id", "title", "text"}] * 20
    gold = [json.loads(line) for line in (tmp_path / "gold.jsonl").read_text().splitlines()]
    assert [g["passages"] for g in gold] == [small.gold_passages[g["qid"]] for g in gold]
    lines = (tmp_path / "responses.jsonl").read_text().splitlines()
    loaded = [LabelledExample.from_dict(json.loads(line)) for line in lines]
    assert [e.to_dict() for e in loaded] == [e.to_dict() for e in make_responses(small, 5)]
