"""Retrieval with the real components: bm25s, MiniLM, RRF, and a SearXNG-format server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import httpx
import numpy as np
import pytest

from rubric_pipeline.core.records import Passage
from rubric_pipeline.corpus import load_corpus
from rubric_pipeline.retrieval.bm25 import BM25Index
from rubric_pipeline.retrieval.dense import DenseIndex, top_k
from rubric_pipeline.retrieval.fusion import rrf
from rubric_pipeline.retrieval.hybrid import HybridRetriever, RetrievalConfig
from rubric_pipeline.retrieval.search_server import serve_in_thread
from rubric_pipeline.retrieval.store import saved_fingerprint
from rubric_pipeline.retrieval.web import HTTPSearchBackend, WebSearchBackend, WebSearchError

DOCUMENTS = [
    (
        "river",
        "Rivers",
        "The Zorblax river flows north through the valley of Quenton before reaching the sea.",
    ),
    ("cat", "Pets", "The cat slept on the rug all afternoon."),
    ("stocks", "Markets", "Stock markets fell sharply on Tuesday after the bank raised interest rates."),
    ("bread", "Baking", "Knead the dough for ten minutes, then let it rise in a warm place."),
    ("volcano", "Geology", "Mount Ardel erupted in 1821, covering nearby farms in ash."),
    ("chess", "Games", "A chess opening that sacrifices a pawn for rapid development is called a gambit."),
    ("tennis", "Sport", "The final set of the tennis match went to a tie-break."),
    ("comet", "Astronomy", "A comet's tail always points away from the sun because of the solar wind."),
    ("violin", "Music", "The violin has four strings tuned in perfect fifths."),
    ("rain", "Weather", "Heavy rain flooded the streets of the old harbour town overnight."),
    (
        "python",
        "Computing",
        "Python lists grow by over-allocating memory so appends take amortised constant time.",
    ),
    ("bees", "Nature", "Honey bees communicate the direction of flowers with a waggle dance."),
]


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    lines = [json.dumps({"id": doc_id, "title": title, "text": text}) for doc_id, title, text in DOCUMENTS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def passages(corpus_path: Path) -> list[Passage]:
    return load_corpus(corpus_path)


@pytest.fixture(scope="module")
def bm25(passages: list[Passage]) -> BM25Index:
    return BM25Index(passages, show_progress=False)


@pytest.fixture(scope="module")
def dense(passages: list[Passage]) -> DenseIndex:
    return DenseIndex(passages, show_progress=False)


def ids(hits) -> list[str]:
    return [hit.passage_id for hit in hits]


# ---------------------------------------------------------------- BM25


def test_bm25_finds_the_document_with_an_exact_rare_term(bm25: BM25Index) -> None:
    zorblax, gambit, stopwords_only, unknown = bm25.search(
        ["zorblax", "what is a gambit in chess", "the of and", "xylophonist"], k=5
    )
    assert ids(zorblax) == ["river#0"]  # only passages sharing a term are returned
    assert ids(gambit)[0] == "chess#0"
    assert [hit.rank for hit in gambit] == list(range(1, len(gambit) + 1))
    assert all(a.score >= b.score > 0 for a, b in pairwise(gambit))
    assert stopwords_only == [] and unknown == []
    assert bm25.search([], k=3) == []
    assert len(bm25.search(["rain"], k=1000)[0]) == 1  # k larger than the corpus is clamped


def test_bm25_save_load_round_trip(bm25: BM25Index, tmp_path: Path) -> None:
    queries = ["zorblax river valley", "interest rates bank", "strings tuned in fifths", "rain harbour"]
    bm25.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    for before, after in zip(bm25.search(queries, k=4), loaded.search(queries, k=4), strict=True):
        assert [(h.passage, h.score, h.rank) for h in before] == [(h.passage, h.score, h.rank) for h in after]
    assert saved_fingerprint(tmp_path / "bm25") is not None
    with pytest.raises(FileNotFoundError, match="no bm25 index"):
        BM25Index.load(tmp_path / "missing")


def test_bm25_numba_backend_gives_the_numpy_scores(passages: list[Passage], bm25: BM25Index) -> None:
    pytest.importorskip("numba")
    fast = BM25Index(passages, backend="numba", show_progress=False)
    assert fast.backend == "numba" and bm25.backend == "numpy"
    queries = ["zorblax river valley", "interest rates bank", "strings tuned in fifths"]
    for slow_hits, fast_hits in zip(bm25.search(queries, k=5), fast.search(queries, k=5), strict=True):
        assert [h.score for h in fast_hits] == pytest.approx([h.score for h in slow_hits], rel=1e-6)
        assert fast_hits[0].passage_id == slow_hits[0].passage_id
    with pytest.raises(ValueError, match="unknown BM25 backend"):
        BM25Index(passages, backend="gpu")


def test_bm25_selection_gives_the_scores_of_bm25s_own_retrieve(bm25: BM25Index) -> None:
    """The numpy path selects its own top-k (among passages sharing a term); bm25s' retrieve is the oracle."""
    from rubric_pipeline.retrieval.bm25 import tokenize

    queries = ["zorblax river valley", "interest rates bank", "strings tuned in fifths", "the of and", "rain"]
    for k in (1, 3, len(bm25)):
        indices, scores = bm25.top_k(queries, k=k)
        expected, expected_scores = bm25.retriever.retrieve(tokenize(queries), k=k, show_progress=False)
        assert scores == pytest.approx(np.asarray(expected_scores), rel=1e-6)
        assert ((indices == -1) == (scores == 0)).all()
        for row, want, row_scores in zip(indices, expected, scores, strict=True):
            untied = [
                i for i, x in zip(row, row_scores, strict=True) if x > 0 and (row_scores == x).sum() < 2
            ]
            assert set(untied) <= set(want.tolist())  # an untied hit is one of bm25s' passages


# ---------------------------------------------------------------- dense


def test_dense_ranks_a_paraphrase_above_unrelated_passages(dense: DenseIndex) -> None:
    (hits,) = dense.search(["a kitten napping on a carpet"], k=len(DOCUMENTS))
    assert hits[0].passage_id == "cat#0"  # no word in common with the query
    scores = {hit.passage_id: hit.score for hit in hits}
    assert scores["cat#0"] > scores["stocks#0"] + 0.2 and scores["cat#0"] > scores["volcano#0"] + 0.2
    assert np.allclose(np.linalg.norm(dense.embeddings, axis=1), 1.0, atol=1e-5)
    assert dense.embeddings.dtype == np.float32 and dense.embeddings.shape == (len(DOCUMENTS), 384)


def test_dense_save_load_round_trip(dense: DenseIndex, tmp_path: Path) -> None:
    dense.save(tmp_path / "dense")
    loaded = DenseIndex.load(tmp_path / "dense")
    assert loaded.model == "all-MiniLM-L6-v2"
    np.testing.assert_array_equal(loaded.embeddings, dense.embeddings)
    queries = ["eruption covered farms", "insects dancing"]
    before, after = dense.search(queries, k=3), loaded.search(queries, k=3)
    assert [ids(r) for r in before] == [ids(r) for r in after]
    assert ids(after[1])[0] == "bees#0"


def test_top_k_matches_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    indices, scores = top_k(queries, matrix, k=10)
    full = queries @ matrix.T
    np.testing.assert_array_equal(indices, np.argsort(-full, axis=1)[:, :10])
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :10])
    all_indices, _ = top_k(queries, matrix, k=10_000)
    assert all_indices.shape == (7, 500)


# ---------------------------------------------------------------- fusion


def test_rrf_hand_computed() -> None:
    fused = dict(rrf([["a", "b", "c"], ["b", "c", "d"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 62)
    assert fused["d"] == pytest.approx(1 / 63)
    assert [item for item, _ in rrf([["a", "b", "c"], ["b", "c", "d"]])] == ["b", "c", "a", "d"]
    assert [item for item, _ in rrf([["x", "y"], ["y", "x"]], k=0)] == ["x", "y"]  # tie: first seen first
    assert dict(rrf([["a", "a", "b"]], k=1)) == pytest.approx({"a": 1 / 2, "b": 1 / 4})  # repeats count once
    assert rrf([]) == []


# ---------------------------------------------------------------- hybrid


def test_hybrid_fuses_exact_term_and_paraphrase_evidence(
    passages: list[Passage], bm25: BM25Index, dense: DenseIndex, tmp_path: Path
) -> None:
    hybrid = HybridRetriever(passages, bm25=bm25, dense=dense, depth=len(passages))
    (hits,) = hybrid.search(["zorblax kitten napping on a carpet"], k=3)
    assert set(ids(hits[:2])) == {"river#0", "cat#0"}  # one from each retriever's top rank
    sparse_ids = ids(bm25.search(["zorblax kitten napping on a carpet"], k=len(passages))[0])
    dense_ids = ids(dense.search(["zorblax kitten napping on a carpet"], k=len(passages))[0])
    expected = dict(rrf([sparse_ids, dense_ids]))
    assert [hit.score for hit in hits] == pytest.approx([expected[hit.passage_id] for hit in hits])

    hybrid.save(tmp_path / "hybrid")
    loaded = HybridRetriever.load(tmp_path / "hybrid")
    queries = ["zorblax kitten napping on a carpet", "sun and comet tails"]
    assert [ids(r) for r in loaded.search(queries, k=5)] == [ids(r) for r in hybrid.search(queries, k=5)]


def test_hybrid_from_config_reuses_a_matching_index(
    passages: list[Passage], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = RetrievalConfig(dense=False, index_dir=str(tmp_path / "idx"), depth=5)
    first = HybridRetriever.from_config(passages, config, show_progress=False)
    assert first.dense is None and (tmp_path / "idx" / "bm25" / "meta.json").is_file()
    with caplog.at_level(logging.INFO, logger="rubric_pipeline.retrieval.hybrid"):
        again = HybridRetriever.from_config(passages, config, show_progress=False)
        assert "reusing" in caplog.text
        caplog.clear()
        HybridRetriever.from_config(passages[:-1], config, show_progress=False)
        assert "rebuilding" in caplog.text
    assert ids(again.search(["bank interest rates"], k=2)[0])[0] == "stocks#0"
    with pytest.raises(ValueError, match="at least one"):
        HybridRetriever(passages, bm25=False, dense=False)


# ---------------------------------------------------------------- web search


async def test_http_backend_against_the_real_search_server(bm25: BM25Index) -> None:
    with serve_in_thread(bm25, page_size=2) as base_url:
        backend = HTTPSearchBackend(base_url, max_retries=0)
        assert isinstance(backend, WebSearchBackend)
        # outside a context manager, one call opens its own client
        (top,) = await backend.search("Zorblax river", k=1)
        assert top.doc_id == f"{base_url}/doc/river" and top.text == DOCUMENTS[0][2] and top.title == "Rivers"
        assert top.passage_id.startswith(f"{base_url}/doc/river#")
        async with backend:
            many = await backend.search_many(["river rain bank sun strings dough", "waggle dance bees"], k=3)
            again = await backend.search("Zorblax river", k=1)
        assert again == [top]  # ids are stable across calls
        assert len(many[0]) == 3 and len({p.passage_id for p in many[0]}) == 3  # two pages of 2 were read
        assert many[1][0].doc_id.endswith("/doc/bees")
        document = httpx.get(top.url).json()  # result URLs resolve on this server
        assert document["passages"][0]["passage_id"] == "river#0"

        with pytest.raises(WebSearchError) as caught:
            await HTTPSearchBackend(base_url + "/nowhere", max_retries=0).search("river")
        assert caught.value.status == 404


async def test_http_backend_retries_then_names_the_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    backend = HTTPSearchBackend(f"http://127.0.0.1:{port}", max_retries=2, backoff_s=0.01)
    with pytest.raises(WebSearchError) as caught:
        await backend.search("anything")
    assert caught.value.attempts == 3 and caught.value.status is None
    assert f"127.0.0.1:{port}/search" in str(caught.value)


def test_search_server_command_line(corpus_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "rubric_pipeline.retrieval.search_server", "--corpus", str(corpus_path)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["passages"] == len(
                    DOCUMENTS
                ):
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "search server did not start"
            time.sleep(0.2)
        (hits,) = HTTPSearchBackend(f"http://127.0.0.1:{port}").search_sync(["knead dough"], k=2)
        assert hits[0].doc_id.endswith("/doc/bread")
        response = httpx.get(f"http://127.0.0.1:{port}/search", params={"q": "dough", "format": "html"})
        assert response.status_code == 400
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_web_backend_over_the_demo_world_corpus(tmp_path: Path) -> None:
    """The search server serving the generated demo corpus finds each question's gold documents."""
    from rubric_pipeline.demo_world import generate_world

    world = generate_world(seed=0, n_questions=8, n_documents=80)
    world.write(tmp_path)
    index = BM25Index(load_corpus(tmp_path / "corpus.jsonl"), show_progress=False)
    with serve_in_thread(index) as base_url:
        async with HTTPSearchBackend(base_url, max_concurrency=4) as backend:
            results = await backend.search_many([q["question"] for q in world.questions], k=10)
    for question, passages in zip(world.questions, results, strict=True):
        gold_docs = {passage_id.split("#")[0] for passage_id in world.gold_passages[question["qid"]]}
        found = {passage.doc_id.rsplit("/doc/", 1)[1] for passage in passages}
        assert gold_docs & found, question["question"]
