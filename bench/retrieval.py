"""Retrieval speed on a generated 20,000-passage corpus, measured side by side in one run.

1. BM25 queries/s: bm25s (the library behind ``BM25Index``; numpy and numba scorers) and ``BM25Index``
   itself (bm25s' scores, its own top-k selection) beside rank-bm25's ``BM25Okapi``, all on the same corpus
   and queries (rank-bm25 is timed on a subset: it is slow).
   Goal: bm25s >= 50x rank-bm25.
2. Hybrid latency per query (BM25 + MiniLM query encoding + dense top-k + RRF) beside BM25 alone, with the
   queries sent as one batch and one at a time. Goal: hybrid <= 2x BM25 alone.
3. Recall@10 of each query's gold passages for BM25, dense and hybrid, so speed is not bought with quality.
4. What a cheaper query encoder would give: MiniLM under bf16 autocast (on a CPU with native bf16), the
   static encoder (``minilm-static``) on its own index, and static query vectors mapped into MiniLM's space
   by a ridge regression fitted on the passages (MiniLM passage index kept): ms/query and recall@10.

    flock /tmp/rv-heavy.lock .venv/bin/python bench/retrieval.py

Prints a table with ratios; writes bench/results/retrieval.json. Passage embeddings are cached under
.cache/bench/ (keyed by the corpus fingerprint) so a rerun skips the ~minutes of corpus encoding; the
encoding time reported is from the run that built the cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from rubric_pipeline.core.records import write_jsonl
from rubric_pipeline.corpus import load_corpus, passages_fingerprint
from rubric_pipeline.retrieval.bm25 import BM25Index, tokenize
from rubric_pipeline.retrieval.dense import DenseIndex, top_k
from rubric_pipeline.retrieval.fusion import rrf
from rubric_pipeline.retrieval.hybrid import HybridRetriever

logger = logging.getLogger("bench.retrieval")
ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- corpus generator (seeded, self-contained)

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "tor",
    "bel",
    "dun",
    "sha",
    "qui",
    "zor",
    "pel",
    "ash",
    "nim",
    "gar",
    "ost",
    "lun",
    "ber",
    "cal",
    "dre",
    "fen",
    "hal",
]
KINDS = {
    "city": ["population", "founding year", "mayor", "river", "main export"],
    "company": ["founder", "headquarters", "founding year", "main product", "chief executive"],
    "species": ["habitat", "diet", "average lifespan", "wingspan", "discoverer"],
    "mountain": ["height", "first climber", "range", "nearest town", "last eruption"],
}
TEMPLATES = [
    "The {attr} of {name} is {value}.",
    "{name} is known for its {attr}, which is {value}.",
    "Records list {value} as the {attr} of the {kind} {name}.",
    "According to the archive, {name} has {value} as its {attr}.",
]


def pseudo_words(rng: random.Random, n: int) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))))
    return sorted(words)


def generate(n_passages: int, n_queries: int, seed: int = 0) -> tuple[list[dict], list[tuple[str, set[str]]]]:
    """Documents (one passage each) about fictional entities, plus questions with their gold doc ids.

    Each document states two or three facts about one entity in varied templates, padded with Zipf-
    distributed filler words so term statistics look like prose; a fact may be restated by several
    documents (the gold set of a question is every document stating it).
    """
    rng = random.Random(seed)
    vocabulary = pseudo_words(rng, 6000)
    names = [w.capitalize() for w in pseudo_words(random.Random(seed + 1), n_passages // 4)]
    zipf = np.random.default_rng(seed).zipf(1.3, size=n_passages * 60)
    filler = [vocabulary[(int(z) - 1) % len(vocabulary)] for z in zipf]
    entities = []
    for name in names:
        kind = rng.choice(sorted(KINDS))
        facts = {attr: f"{rng.choice(vocabulary)} {rng.randint(2, 9999)}" for attr in KINDS[kind]}
        entities.append((name, kind, facts))
    documents, gold = [], {}
    cursor = 0
    for doc_index in range(n_passages):
        name, kind, facts = entities[doc_index % len(entities)]
        sentences = []
        for attr in rng.sample(sorted(facts), rng.randint(2, 3)):
            template = rng.choice(TEMPLATES)
            sentences.append(template.format(attr=attr, name=name, value=facts[attr], kind=kind))
            gold.setdefault((name, attr), set()).add(f"doc{doc_index}#0")
        length = rng.randint(8, 20)
        sentences.insert(rng.randint(0, len(sentences)), " ".join(filler[cursor : cursor + length]) + ".")
        cursor += length
        documents.append({"id": f"doc{doc_index}", "title": f"{name} ({kind})", "text": " ".join(sentences)})
    keys = rng.sample(sorted(gold), n_queries)
    forms = ["What is the {attr} of {name}?", "{name} {attr}", "Which {attr} does the {kind} {name} have?"]
    kinds = {name: kind for name, kind, _ in entities}
    queries = [
        (rng.choice(forms).format(attr=attr, name=name, kind=kinds[name]), gold[(name, attr)])
        for name, attr in keys
    ]
    return documents, queries


# ---------------------------------------------------------------- timing helpers


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time over ``repeats`` runs (the least disturbed by other processes) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def per_query_loop(queries: list[str], fn: Callable[[list[str]], Any]) -> float:
    """Median seconds per query when each query is sent alone."""
    times = []
    for query in queries:
        start = time.perf_counter()
        fn([query])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def recall_at(results: list[list[str]], golds: list[set[str]], k: int = 10) -> float:
    return float(
        np.mean([len(set(ids[:k]) & gold) / len(gold) for ids, gold in zip(results, golds, strict=True)])
    )


# ---------------------------------------------------------------- the benchmark


def run(args: argparse.Namespace) -> dict[str, Any]:
    import bm25s
    import torch
    from rank_bm25 import BM25Okapi

    torch.set_num_threads(args.threads)
    cache = ROOT / ".cache" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    documents, query_gold = generate(args.passages, args.queries, args.seed)
    corpus_path = cache / f"retrieval-corpus-{args.passages}-{args.seed}.jsonl"
    write_jsonl(corpus_path, documents)
    load_s, passages = best_of(1, lambda: load_corpus(corpus_path))
    queries = [query for query, _ in query_gold]
    golds = [gold for _, gold in query_gold]
    logger.info("%d passages, %d queries", len(passages), len(queries))

    # -- 1. bm25s vs rank-bm25 on the same tokens
    texts = [f"{p.title}\n{p.text}" for p in passages]
    tokenize_s, corpus_tokens = best_of(1, lambda: tokenize(texts))
    query_tokens = tokenize(queries)
    bm25s_build_s, retriever = best_of(1, lambda: _bm25s_index(bm25s, corpus_tokens, "numpy"))
    numba_retriever = _bm25s_index(bm25s, corpus_tokens, "numba")
    rank_build_s, okapi = best_of(1, lambda: BM25Okapi(corpus_tokens))
    k = args.k

    bm25s_s, numpy_top = best_of(3, lambda: retriever.retrieve(query_tokens, k=k, show_progress=False))
    jit_s, _ = best_of(1, lambda: numba_retriever.retrieve(query_tokens[:1], k=k, show_progress=False))
    numba_s, numba_top = best_of(3, lambda: numba_retriever.retrieve(query_tokens, k=k, show_progress=False))
    # same scores from both scorers (document order may differ among tied scores)
    np.testing.assert_allclose(numba_top.scores, numpy_top.scores, rtol=1e-5, atol=1e-6)
    subset = query_tokens[: args.rank_bm25_queries]

    def rank_bm25_topk() -> None:
        for tokens in subset:
            scores = okapi.get_scores(tokens)
            top = np.argpartition(-scores, k)[:k]
            top[np.argsort(-scores[top])]

    rank_s, _ = best_of(1, rank_bm25_topk)
    bm25s_qps = len(queries) / bm25s_s
    numba_qps = len(queries) / numba_s
    rank_qps = len(subset) / rank_s
    # agreement of the two implementations' top-10 (BM25 variants differ slightly in idf)
    bm25s_top = retriever.retrieve(subset, k=k, show_progress=False)[0]
    overlap = np.mean(
        [len(set(bm25s_top[i]) & set(np.argsort(-okapi.get_scores(t))[:k])) / k for i, t in enumerate(subset)]
    )

    # -- 2. hybrid vs BM25 alone, through the project's classes
    index = BM25Index(passages, show_progress=False)
    fingerprint = passages_fingerprint(passages)
    dense_dir = cache / f"retrieval-dense-{fingerprint}"
    encode_s = None
    if (dense_dir / "meta.json").is_file():
        dense = DenseIndex.load(dense_dir, batch_size=args.batch_size)
    else:
        torch.set_num_threads(args.build_threads)  # index building may use every core; queries use --threads
        encode_s, dense = best_of(1, lambda: DenseIndex(passages, batch_size=args.batch_size))
        torch.set_num_threads(args.threads)
        dense.save(dense_dir)
    hybrid = HybridRetriever(passages, bm25=index, dense=dense, depth=args.depth)
    hybrid.search(queries[:4], k=k)  # warm-up: model load, first allocations

    bm25_batch_s, bm25_results = best_of(3, lambda: index.search(queries, k=k))
    hybrid_batch_s, hybrid_results = best_of(3, lambda: hybrid.search(queries, k=k))
    depth_s, _ = best_of(3, lambda: index.search(queries, k=args.depth))
    query_encode_s, query_embeddings = best_of(3, lambda: dense.encode_queries(queries))
    dense_topk_s, _ = best_of(3, lambda: top_k(query_embeddings, dense.embeddings, args.depth))
    dense_results = dense.search(queries, k=k, query_embeddings=query_embeddings)
    sparse_deep = index.search(queries, k=args.depth)
    dense_deep = dense.search(queries, k=args.depth, query_embeddings=query_embeddings)
    rrf_s, _ = best_of(
        3,
        lambda: [
            rrf([[h.passage_id for h in s], [h.passage_id for h in d]])
            for s, d in zip(sparse_deep, dense_deep, strict=True)
        ],
    )
    single = queries[: args.single_queries]
    bm25_single_s = per_query_loop(single, lambda q: index.search(q, k=k))
    hybrid_single_s = per_query_loop(single, lambda q: hybrid.search(q, k=k))

    def ids(results: list) -> list[list[str]]:
        return [[hit.passage_id for hit in hits] for hits in results]

    n = len(queries)
    alternatives = query_encoder_alternatives(args, passages, queries, golds, dense, query_embeddings)
    return {
        "command": "flock /tmp/rv-heavy.lock .venv/bin/python bench/retrieval.py " + " ".join(args.argv),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads},
        "corpus": {
            "passages": len(passages),
            "queries": n,
            "vocabulary": len(retriever.vocab_dict),
            "mean_passage_tokens": float(np.mean([len(t) for t in corpus_tokens])),
            "mean_query_tokens": float(np.mean([len(t) for t in query_tokens])),
            "load_corpus_s": load_s,
            "tokenize_s": tokenize_s,
        },
        "bm25_libraries": {
            "k": k,
            "bm25s_index_s": bm25s_build_s,
            "rank_bm25_index_s": rank_build_s,
            "bm25s_queries": n,
            "bm25s_qps": bm25s_qps,
            "bm25s_numba_qps": numba_qps,
            "bm25s_numba_jit_s": jit_s,
            "rank_bm25_queries": len(subset),
            "rank_bm25_qps": rank_qps,
            "speedup": bm25s_qps / rank_qps,
            "speedup_numba": numba_qps / rank_qps,
            "top10_overlap": float(overlap),
            "bm25index_qps": n / bm25_batch_s,  # the project's class: bm25s scores, its own top-k selection
            "speedup_bm25index": n / bm25_batch_s / rank_qps,
        },
        "hybrid": {
            "k": k,
            "depth": args.depth,
            "dense_encode_corpus_s": encode_s,
            "dense_encode_threads": args.build_threads,
            "batch_ms_per_query": {
                "bm25": 1000 * bm25_batch_s / n,
                "hybrid": 1000 * hybrid_batch_s / n,
                "ratio": hybrid_batch_s / bm25_batch_s,
                "ratio_without_query_encoder": (hybrid_batch_s - query_encode_s) / bm25_batch_s,
                "components": {
                    "bm25_at_depth": 1000 * depth_s / n,
                    "query_encode": 1000 * query_encode_s / n,
                    "dense_topk": 1000 * dense_topk_s / n,
                    "rrf": 1000 * rrf_s / n,
                },
            },
            "single_ms_per_query": {
                "queries": len(single),
                "bm25": 1000 * bm25_single_s,
                "hybrid": 1000 * hybrid_single_s,
                "ratio": hybrid_single_s / bm25_single_s,
            },
        },
        "recall_at_10": {
            "bm25": recall_at(ids(bm25_results), golds),
            "dense": recall_at(ids(dense_results), golds),
            "hybrid": recall_at(ids(hybrid_results), golds),
        },
        "query_encoders": alternatives,
    }


def query_encoder_alternatives(
    args: argparse.Namespace,
    passages: list,
    queries: list[str],
    golds: list[set[str]],
    dense: DenseIndex,
    minilm_queries: np.ndarray,
) -> dict[str, Any]:
    """Per query encoder: batched ms/query and dense recall@10 (see the module docstring, item 4)."""
    import torch

    from rubric_pipeline.retrieval.encoders import STATIC_MINILM, encode
    from verifier.hardware import bf16_is_fast

    n, texts = len(queries), [f"{p.title}\n{p.text}" for p in passages]

    def recall(query_vectors: np.ndarray, passage_vectors: np.ndarray) -> float:
        top = top_k(query_vectors, passage_vectors, args.k)[0]
        return recall_at([[passages[i].passage_id for i in row] for row in top], golds, args.k)

    rows: dict[str, Any] = {}
    minilm_s, _ = best_of(3, lambda: dense.encode_queries(queries))
    rows["minilm_float32"] = {"ms": 1000 * minilm_s / n, "recall": recall(minilm_queries, dense.embeddings)}
    if bf16_is_fast():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_s, bf16_queries = best_of(3, lambda: dense.encode_queries(queries))
        rows["minilm_bf16"] = {
            "ms": 1000 * bf16_s / n,
            "recall": recall(bf16_queries, dense.embeddings),
            "min_cosine_to_float32": float((bf16_queries * minilm_queries).sum(axis=1).min()),
        }
    static_passages = encode(texts, STATIC_MINILM)
    static_s, static_queries = best_of(3, lambda: encode(queries, STATIC_MINILM))
    rows["static"] = {"ms": 1000 * static_s / n, "recall": recall(static_queries, static_passages)}
    # ridge regression from static to MiniLM vectors, fitted on the passages (with a bias column)
    design = np.hstack([static_passages, np.ones((len(texts), 1), np.float32)])
    for ridge in (1.0, 10.0):
        weights = np.linalg.solve(
            design.T @ design + ridge * np.eye(design.shape[1]), design.T @ dense.embeddings
        )
        mapped = np.hstack([static_queries, np.ones((n, 1), np.float32)]) @ weights
        mapped /= np.maximum(np.linalg.norm(mapped, axis=1, keepdims=True), 1e-12)
        rows[f"static_mapped_to_minilm_ridge{ridge:g}"] = {
            "ms": rows["static"]["ms"],  # plus one small matrix product
            "recall": recall(mapped.astype(np.float32), dense.embeddings),
        }
    return rows


def _bm25s_index(bm25s: Any, corpus_tokens: list[list[str]], backend: str) -> Any:
    retriever = bm25s.BM25(backend=backend)
    retriever.index(corpus_tokens, show_progress=False)
    return retriever


def format_report(report: dict[str, Any]) -> str:
    lib, hy = report["bm25_libraries"], report["hybrid"]
    batch, single = hy["batch_ms_per_query"], hy["single_ms_per_query"]
    parts = batch["components"]
    recall = report["recall_at_10"]
    corpus = report["corpus"]
    lines = [
        f"corpus: {corpus['passages']} passages, {corpus['queries']} queries, "
        f"vocabulary {corpus['vocabulary']}, "
        f"{corpus['mean_passage_tokens']:.0f} tokens/passage, {corpus['mean_query_tokens']:.1f} tokens/query",
        "",
        "| BM25 library (same tokens, top-10) | queries timed | queries/s | ratio |",
        "|---|---|---|---|",
        f"| rank-bm25 BM25Okapi | {lib['rank_bm25_queries']} | {lib['rank_bm25_qps']:.1f} | 1.0x |",
        f"| bm25s (numpy backend) | {lib['bm25s_queries']} | {lib['bm25s_qps']:.1f} "
        f"| {lib['speedup']:.1f}x |",
        f"| bm25s (numba backend, 1 thread) | {lib['bm25s_queries']} | {lib['bm25s_numba_qps']:.1f} "
        f"| {lib['speedup_numba']:.1f}x |",
        f"| BM25Index (bm25s numpy scores, own top-k; tokenizing included) | {lib['bm25s_queries']} "
        f"| {lib['bm25index_qps']:.1f} | {lib['speedup_bm25index']:.1f}x |",
        f"index build: bm25s {lib['bm25s_index_s']:.2f} s, rank-bm25 {lib['rank_bm25_index_s']:.2f} s; "
        f"top-10 overlap {lib['top10_overlap']:.2f}; "
        f"numba JIT on first search {lib['bm25s_numba_jit_s']:.1f} s "
        "(identical scores to numpy, checked)",
        "",
        "| retriever (top-10) | batch of all queries, ms/query | one query at a time, ms | recall@10 |",
        "|---|---|---|---|",
        f"| BM25Index | {batch['bm25']:.3f} | {single['bm25']:.3f} | {recall['bm25']:.3f} |",
        f"| dense (MiniLM) | - | - | {recall['dense']:.3f} |",
        f"| HybridRetriever (depth {hy['depth']}) | {batch['hybrid']:.3f} | {single['hybrid']:.3f} | "
        f"{recall['hybrid']:.3f} |",
        f"| hybrid / BM25 | {batch['ratio']:.2f}x | {single['ratio']:.2f}x | |",
        f"| hybrid without the query encoder / BM25 | {batch['ratio_without_query_encoder']:.2f}x | - | |",
        f"hybrid batch components, ms/query: BM25@{hy['depth']} {parts['bm25_at_depth']:.3f}, "
        f"query encode {parts['query_encode']:.3f}, dense top-k {parts['dense_topk']:.3f}, "
        f"rrf {parts['rrf']:.3f}",
    ]
    lines += ["", "| query encoder | ms/query (batched) | dense recall@10 |", "|---|---|---|"]
    for name, row in report["query_encoders"].items():
        lines.append(f"| {name} | {row['ms']:.3f} | {row['recall']:.3f} |")
    if hy["dense_encode_corpus_s"] is not None:
        lines.append(
            f"corpus encoding: {hy['dense_encode_corpus_s']:.1f} s "
            f"with {hy['dense_encode_threads']} torch threads"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rank-bm25-queries", type=int, default=30, help="rank-bm25 is timed on this many")
    parser.add_argument("--single-queries", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--depth", type=int, default=100, help="candidates per retriever before fusion")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for queries")
    parser.add_argument("--build-threads", type=int, default=2, help="torch threads for corpus encoding")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "retrieval.json"))
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else __import__("sys").argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run(args)
    print(format_report(report))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
