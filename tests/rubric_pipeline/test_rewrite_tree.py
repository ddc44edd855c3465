"""The query -> passage -> query tree: bounds, node kinds, breadth-first order; on vLLM and in the build."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rubric_pipeline.core.llm import LLMClient, LLMConfig
from rubric_pipeline.core.records import Passage
from rubric_pipeline.retrieval.hybrid import HybridRetriever
from rubric_pipeline.rewrite_tree import TreeNode, TreeSettings, expand_tree

TEXTS = [
    "Velmora is a coastal city in the province of Tarsk, founded in 1342 by salt traders.",
    "The glass harbor of Velmora was built in 1901 and ferries leave it for the islands every hour.",
    "Salt traders from Tarsk shipped salt from the Velmora marshes to inland towns.",
    "Ferries to the Aske islands are run by the Velmora harbor board since 1950.",
    "Quorin Labs is a robotics company based in Ostrel that makes warehouse robots.",
    "Ostrel hosts an annual kite festival in autumn on the river banks.",
    "The province of Tarsk is famous for salt marshes and long winters.",
    "Velmora's population grew after the harbor opened, reaching 84,000 people.",
]
PASSAGES = [Passage(f"d{i}#0", f"d{i}", text) for i, text in enumerate(TEXTS)]
QUESTION = "What is the history of Velmora harbor?"


@pytest.fixture(scope="module")
def search():
    retriever = HybridRetriever(PASSAGES, bm25=True, dense=False, show_progress=False)

    async def run(query: str) -> list[Passage]:
        (hits,) = retriever.search([query], 3)
        return [hit.passage for hit in hits]

    return run


def check_tree(nodes: list[TreeNode], settings: TreeSettings) -> None:
    assert nodes[0] == TreeNode(QUESTION, 0) and nodes[0].is_query
    assert len(nodes) <= settings.max_nodes
    assert [n.depth for n in nodes] == sorted(n.depth for n in nodes)  # breadth first
    assert max(n.depth for n in nodes) <= settings.max_depth
    passages = [n.passage.passage_id for n in nodes if not n.is_query]
    assert len(passages) == len(set(passages))  # a passage joins the tree once
    for node in nodes[1:]:
        parent = nodes[node.parent]
        assert node.depth == parent.depth + 1
        assert parent.is_query != node.is_query  # query -> passage -> query
        if not node.is_query:
            assert node.query == parent.query  # a passage remembers the query that found it


async def test_depth_one_is_the_question_and_its_passages_without_an_llm(search) -> None:
    settings = TreeSettings(max_depth=1, max_nodes=3, llm_dedup=False, relevance_filter=False)
    nodes = await expand_tree(None, QUESTION, search, settings)  # nothing to rewrite at depth 1: no LLM
    check_tree(nodes, settings)
    assert len(nodes) == 3 and all(not n.is_query for n in nodes[1:])  # the node budget cuts the third hit
    assert [n.passage.passage_id for n in nodes[1:]] == [p.passage_id for p in (await search(QUESTION))[:2]]


@pytest.mark.vllm
@pytest.mark.parametrize("judges", [True, False])
async def test_tree_on_vllm_grows_within_its_bounds(vllm_server, search, judges: bool) -> None:
    config = LLMConfig(base_urls=[vllm_server.base_url], model=vllm_server.model_name, timeout_s=120)
    settings = TreeSettings(
        max_depth=4, max_nodes=14, per_passage=2, llm_dedup=judges, relevance_filter=judges, max_chars=60
    )
    events: Counter = Counter()
    async with LLMClient(config) as client:
        nodes = await expand_tree(client, QUESTION, search, settings, api="chat", seed=0, events=events)
    check_tree(nodes, settings)
    assert events["rewrite_passage.llm_calls"] >= 1
    assert events["rewrite_passage.llm_failures"] == 0  # the JSON schema keeps a random model parseable
    assert (events["duplicate.llm_calls"] > 0) == judges and (events["relevance.llm_calls"] > 0) == judges
    assert events["duplicate.llm_failures"] == events["relevance.llm_failures"] == 0  # choice-constrained
    if not judges:  # nothing filtered: the root's three hits are all in the tree
        assert sum(1 for n in nodes if n.parent == 0) == 3


@pytest.mark.vllm
async def test_search_gen_v_bounds_terminate_when_the_corpus_runs_out(vllm_server, search) -> None:
    config = LLMConfig(base_urls=[vllm_server.base_url], model=vllm_server.model_name, timeout_s=120)
    settings = TreeSettings(max_depth=30, max_nodes=300, per_passage=3, max_chars=60)
    async with LLMClient(config) as client:
        nodes = await expand_tree(client, QUESTION, search, settings, api="chat", seed=0)
    check_tree(nodes, settings)
    assert sum(not n.is_query for n in nodes) <= len(PASSAGES)


def _write_world(tmp_path: Path) -> dict[str, str]:
    corpus, questions = tmp_path / "corpus.jsonl", tmp_path / "questions.jsonl"
    corpus.write_text("".join(json.dumps({"id": p.doc_id, "text": p.text}) + "\n" for p in PASSAGES))
    questions.write_text(json.dumps({"qid": "q1", "question": QUESTION}) + "\n")
    return {"corpus": str(corpus), "questions": str(questions)}


@pytest.mark.vllm
def test_build_with_the_tree_on_vllm_keeps_its_provenance(vllm_server, tmp_path: Path) -> None:
    from datasets import load_from_disk

    from rubric_pipeline.pipeline import BuildConfig, build

    config = BuildConfig(
        **_write_world(tmp_path), rewrite_tree=True, tree_max_depth=3, tree_max_nodes=10, k=3,
        llm_url=[vllm_server.base_url], model=vllm_server.model_name, max_tokens=64, max_nugget_chars=80,
        dense=False,
    )  # fmt: skip
    stats = build(config, tmp_path / "out")
    assert stats["events"]["tree.nodes"] <= 10 and stats["events"]["rewrite_passage.llm_calls"] >= 1
    (row,) = load_from_disk(str(tmp_path / "out" / "dataset")).to_list()
    assert row["queries"][0] == QUESTION
    for rubric in row["rubrics"]:
        assert all(source["query"] in row["queries"] for source in rubric["sources"])


def test_offline_build_ignores_the_tree_and_keeps_prf(tmp_path: Path) -> None:
    from rubric_pipeline.pipeline import BuildConfig, build

    world = _write_world(tmp_path)
    plain = build(BuildConfig(**world, dense=False), tmp_path / "plain")
    tree = build(BuildConfig(**world, dense=False, rewrite_tree=True), tmp_path / "tree")
    assert tree["rubrics"] == plain["rubrics"] and tree["queries"] == plain["queries"] > 1
    assert (tmp_path / "tree" / "rubrics.trec.jsonl").read_text() == (
        tmp_path / "plain" / "rubrics.trec.jsonl"
    ).read_text()
