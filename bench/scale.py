"""Retrieval at corpus scale on one machine: build time, peak memory, batched queries/s and recall@10.

The corpus is the demo world (planted questions whose gold passages are known) padded with background
documents from further demo worlds (other seeds; any document naming an asked entity or one of its
look-alikes is dropped, so the gold passages stay the only ones about the asked entities). Each size runs
in two child processes, so each reports its own peak RSS (``resource.getrusage``):

1. build (all cores): read the corpus, build BM25 (bm25s) and the dense index (encoder + exact or faiss
   IVF), save them;
2. serve (one thread): load the saved indices memory-mapped, then time the planted questions as one batch
   through BM25 alone and through the hybrid retriever (best of 3), and score gold-passage recall@10; with
   IVF also the overlap of its top-10 with the exact top-10 (the ANN's recall against exact search).

    flock /tmp/rv-heavy.lock timeout 3000 .venv/bin/python bench/scale.py --passages 10000 100000 1000000

Rows are merged into bench/results/scale.json by (passages, encoder, dense_index); corpora and indices are
cached under ``$RV_CACHE_DIR/bench`` (default ``~/.cache/rubric-verifier/bench``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from verifier import hardware

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench.scale")
BASE_DOCUMENTS = 10_000  # the world holding the planted questions; bigger corpora add background
BACKGROUND_DOCUMENTS = 50_000  # documents per background world (one seed each)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


# ---------------------------------------------------------------- corpus


def _background(seed: int, n_documents: int, banned: list[str]) -> list[dict[str, str]]:
    from rubric_pipeline.demo_world import generate_world

    world = generate_world(seed=seed, n_questions=1, n_documents=n_documents, lookalikes=0)
    pattern = re.compile("|".join(re.escape(name) for name in sorted(banned, key=len, reverse=True)))
    return [
        {**doc, "id": f"s{seed}-{doc['id']}"}
        for doc in world.documents
        if not pattern.search(doc["title"]) and not pattern.search(doc["text"])
    ]


def make_corpus(n_passages: int, questions: int, seed: int, cache: Path) -> tuple[Path, Path]:
    """``(corpus.jsonl, gold.jsonl)`` of ``n_passages`` one-passage documents, generated once and cached."""
    from rubric_pipeline.core.records import write_jsonl
    from rubric_pipeline.demo_world import generate_world

    folder = cache / f"world-{n_passages}-q{questions}-s{seed}"
    corpus, gold = folder / "corpus.jsonl", folder / "gold.jsonl"
    if corpus.is_file() and gold.is_file():
        return corpus, gold
    start = time.perf_counter()
    world = generate_world(seed=seed, n_questions=questions, n_documents=min(n_passages, BASE_DOCUMENTS))
    documents = list(world.documents)
    banned = [e.name for e in world.entities if e.asked or e.lookalike_of]
    seeds = iter(range(seed + 1000, seed + 1_000_000))
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        while len(documents) < n_passages:
            need = -(-(n_passages - len(documents)) // BACKGROUND_DOCUMENTS) + 1
            jobs = [pool.submit(_background, next(seeds), BACKGROUND_DOCUMENTS, banned) for _ in range(need)]
            for job in jobs:
                documents.extend(job.result())
            logger.info("corpus: %d / %d documents", min(len(documents), n_passages), n_passages)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "questions.jsonl", world.questions)
    write_jsonl(gold, ({"qid": q["qid"], "passages": world.gold_passages[q["qid"]]} for q in world.questions))
    write_jsonl(corpus, documents[:n_passages])
    logger.info("corpus of %d documents in %.0f s", n_passages, time.perf_counter() - start)
    return corpus, gold


# ---------------------------------------------------------------- the two child stages


def stage_build(args: argparse.Namespace) -> dict[str, Any]:
    from rubric_pipeline.corpus import load_corpus
    from rubric_pipeline.retrieval.hybrid import HybridRetriever

    start = time.perf_counter()
    passages = load_corpus(args.corpus)
    read_s = time.perf_counter() - start
    retriever = HybridRetriever(
        passages,
        depth=args.depth,
        dense_model=args.encoder,
        dense_index=args.dense_index,
        batch_size=args.batch_size,
        show_progress=False,
    )
    retriever.save(args.index)
    return {
        "read_s": read_s,
        "index_s": time.perf_counter() - start - read_s,
        "build_rss_gib": peak_rss_gib(),
    }


def stage_serve(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from rubric_pipeline.core.records import iter_jsonl
    from rubric_pipeline.retrieval.hybrid import HybridRetriever

    start = time.perf_counter()
    retriever = HybridRetriever.load(args.index, mmap=True, bm25_backend=args.bm25_backend)
    load_s = time.perf_counter() - start
    questions = [r["question"] for _, r in iter_jsonl(Path(args.corpus).with_name("questions.jsonl"))]
    gold = [set(r["passages"]) for _, r in iter_jsonl(args.gold)]
    queries = (questions * (-(-args.queries // len(questions))))[: args.queries]
    retriever.search(queries[:8])  # warm-up: encoder load, numba JIT, first page faults
    assert retriever.bm25 is not None and retriever.dense is not None

    def timed(fn) -> tuple[float, Any]:
        best, result = float("inf"), None
        for _ in range(3):
            began = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - began)
        return best, result

    bm25_s, _ = timed(lambda: retriever.bm25.search(queries, 10))
    hybrid_s, _ = timed(lambda: retriever.search(queries, 10))

    def recall(results: list) -> float:
        return float(
            np.mean(
                [
                    len({h.passage_id for h in hits[:10]} & g) / len(g)
                    for hits, g in zip(results, gold, strict=True)
                ]
            )
        )

    row = {
        "load_s": load_s,
        "queries": len(queries),
        "qps_bm25": len(queries) / bm25_s,
        "qps_hybrid": len(queries) / hybrid_s,
        "hybrid_over_bm25": hybrid_s / bm25_s,
        "recall": recall(retriever.search(questions, 10)),
        "recall_bm25": recall(retriever.bm25.search(questions, 10)),
        "recall_dense": recall(retriever.dense.search(questions, 10)),
    }
    if retriever.dense.ivf is not None:
        embedded = retriever.dense.encode_queries(questions)
        approx, _ = retriever.dense.top_k(embedded, 10)
        exact, _ = retriever.dense.top_k(embedded, 10, exact=True)
        row["ann_recall_vs_exact"] = float(
            np.mean(
                [len(set(a) & set(e)) / len(e) for a, e in zip(approx.tolist(), exact.tolist(), strict=True)]
            )
        )
        row["recall_dense_exact"] = recall(retriever.dense.search(questions, 10, exact=True))
    row["rss_gib"] = peak_rss_gib()
    return row


def child(stage: str, args: argparse.Namespace, corpus: Path, gold: Path, index: Path) -> dict[str, Any]:
    """Run one stage in a fresh interpreter so its peak RSS is its own."""
    command = [
        sys.executable, __file__, "--stage", stage, "--corpus", str(corpus), "--gold", str(gold),
        "--index", str(index), "--encoder", args.encoder, "--dense-index", args.dense_index,
        "--queries", str(args.queries), "--depth", str(args.depth), "--batch-size", str(args.batch_size),
        "--bm25-backend", args.bm25_backend,
    ]  # fmt: skip
    env = os.environ.copy()
    if stage == "build":  # the build may use every core (tokenizers, faiss k-means); serving uses one thread
        env |= {"TOKENIZERS_PARALLELISM": "true", "OMP_NUM_THREADS": str(args.build_threads)}
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_size(n_passages: int, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    corpus, gold = make_corpus(n_passages, args.questions, args.seed, cache)
    index = cache / f"index-{n_passages}-s{args.seed}-{args.encoder.replace('/', '_')}-{args.dense_index}"
    saved = index / "build.json"  # a saved index is reused: serve again with other settings, no rebuild
    if args.rebuild or not saved.is_file():
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(child("build", args, corpus, gold, index)), encoding="utf-8")
    built = json.loads(saved.read_text(encoding="utf-8"))
    served = child("serve", args, corpus, gold, index)
    row = {
        "passages": n_passages,
        "encoder": args.encoder,
        "dense_index": args.dense_index,
        "bm25_backend": args.bm25_backend,
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in (built | served).items()},
        "cpu_flags": hardware.speed_flags(),
        "command": f"flock /tmp/rv-heavy.lock .venv/bin/python bench/scale.py --passages {n_passages} "
        f"--encoder {args.encoder} --dense-index {args.dense_index} --bm25-backend {args.bm25_backend}",
    }
    logger.info("row: %s", row)
    return row


def merge_rows(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    key = lambda row: (row["passages"], row["encoder"], row["dense_index"], row["bm25_backend"])  # noqa: E731
    old = json.loads(path.read_text()) if path.is_file() else []
    merged = {key(row): row for row in old} | {key(row): row for row in rows}
    return sorted(merged.values(), key=key)


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| passages | encoder | dense | BM25 scorer | index s | build RSS GiB | serve RSS GiB | BM25 q/s "
        "| hybrid q/s | hybrid/BM25 | recall@10 hybrid | BM25 | dense | ANN vs exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ann = f"{r['ann_recall_vs_exact']:.3f}" if "ann_recall_vs_exact" in r else "-"
        lines.append(
            f"| {r['passages']:,} | {r['encoder']} | {r['dense_index']} | {r['bm25_backend']} "
            f"| {r['index_s']:.0f} "
            f"| {r['build_rss_gib']:.2f} | {r['rss_gib']:.2f} | {r['qps_bm25']:.0f} | {r['qps_hybrid']:.0f} "
            f"| {r['hybrid_over_bm25']:.2f}x | {r['recall']:.3f} | {r['recall_bm25']:.3f} "
            f"| {r['recall_dense']:.3f} | {ann} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--encoder", default="minilm-static", help="dense model (see retrieval/encoders.py)")
    parser.add_argument("--dense-index", choices=("exact", "ivf"), default="ivf")
    parser.add_argument("--questions", type=int, default=200, help="planted questions")
    parser.add_argument(
        "--queries", type=int, default=1000, help="queries per timed batch (questions cycled)"
    )
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bm25-backend", default="numpy", help="numpy (what build uses), numba or auto")
    parser.add_argument("--build-threads", type=int, default=os.cpu_count() or 1, help="build threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true", help="rebuild a cached index")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "scale.json"))
    parser.add_argument("--stage", choices=("build", "serve"), help=argparse.SUPPRESS)
    for name in ("--corpus", "--gold", "--index"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.stage:
        print(json.dumps((stage_build if args.stage == "build" else stage_serve)(args)))
        return 0
    from rubric_pipeline.retrieval.encoders import cache_dir

    cache = cache_dir() / "bench"
    rows = [run_size(n, args, cache) for n in args.passages]
    output = Path(args.output)
    merged = merge_rows(output, rows)
    output.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    print(f"CPU flags: {' '.join(hardware.speed_flags())}\n" + format_rows(merged) + f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
