"""Rubric construction on real data: TREC RAG 2024 answers as the corpus, NIST nuggets as gold.

The world: every answer of the sample (dev and test files) is a corpus document, every topic a question, and
the topic's NIST nuggets its gold. The build (offline; with ``--gemma`` also Gemma-3-270M served by vLLM) is
scored at several MiniLM cosine thresholds, dev and test topics apart:

- one-to-one: the assignment maximizing total similarity (``rubric_pipeline.scoring``), pairs >= threshold;
- many-to-one: recall = share of nuggets some rubric reaches, precision = share of rubrics reaching some
  nugget (what a nugget evaluation without assignment reports);
- the oracle ceiling: for each nugget the best sentence of the whole corpus (recall an extractive build
  could reach at best);
- with ``--gemma`` an LLM matcher too (nuggetizer-style: the LLM says whether a rubric states the nugget,
  asked for each nugget's closest rubrics).

Tune on dev topics only; test topics are reported, never selected on. Nothing here feeds verifier training:
the rubrics are written to a scratch folder (``--work``), only scores go to ``bench/results``.

    flock /tmp/rv-heavy.lock timeout 900 .venv/bin/python bench/rubrics_real.py [--gemma --gemma-topics N]

The tuned settings are ``recipes/build-answers.yaml`` (``--recipe``); the build defaults are scored beside
them, and both are also run on the demo world, so a change for real answers that hurts it shows.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TREC_DIR = ROOT.parent / "shared" / "data" / "trec_rag24"
THRESHOLDS = (0.5, 0.6, 0.7, 0.75)
logger = logging.getLogger("bench.rubrics_real")


@dataclasses.dataclass
class World:
    documents: list[dict[str, str]]  # {id, text}: one per answer
    questions: dict[str, str]  # qid -> topic text
    gold: dict[str, list[str]]  # qid -> NIST nugget texts
    split: dict[str, str]  # qid -> "dev" | "test"


def load_world(trec_dir: Path = TREC_DIR) -> World:
    from rubric_pipeline.trec import read_trec_labelled

    documents, questions, gold, split = [], {}, {}, {}
    for name in ("dev", "test"):
        for example in read_trec_labelled(trec_dir / f"{name}.jsonl"):
            documents.append({"id": example.response_id, "text": example.response})
            if example.qid not in questions:
                questions[example.qid] = example.question
                gold[example.qid] = [rubric.text for rubric in example.rubrics]
                split[example.qid] = name
    return World(documents, questions, gold, split)


def write_inputs(world: World, folder: Path) -> tuple[Path, Path]:
    from rubric_pipeline.core.records import write_jsonl

    folder.mkdir(parents=True, exist_ok=True)
    corpus, questions = folder / "corpus.jsonl", folder / "questions.jsonl"
    write_jsonl(corpus, world.documents)
    write_jsonl(questions, ({"qid": q, "question": text} for q, text in world.questions.items()))
    return corpus, questions


def corpus_sentences(world: World, chunk_words: int, overlap_words: int, chunk_by: str) -> list[str]:
    """Distinct sentences of the corpus passages (as the build chunks them): the oracle's pool."""
    from rubric_pipeline.core.text import split_sentences
    from rubric_pipeline.corpus import document_to_passages

    sentences: dict[str, None] = {}
    for index, document in enumerate(world.documents):
        for passage in document_to_passages(document, "corpus", index, chunk_words, overlap_words, chunk_by):
            sentences.update(dict.fromkeys(s for s in split_sentences(passage.text) if len(s.split()) >= 3))
    return list(sentences)


def similarity_scores(rubrics: list[str], gold: list[str], vectors: dict[str, np.ndarray], t: float) -> dict:
    """One-to-one and many-to-one matches of one topic at threshold ``t``."""
    from rubric_pipeline.scoring import matched_pairs

    if not rubrics:
        return {"one_to_one": 0, "nuggets_hit": 0, "rubrics_hit": 0}
    sim = np.stack([vectors[r] for r in rubrics]) @ np.stack([vectors[g] for g in gold]).T
    return {
        "one_to_one": matched_pairs(sim, t),
        "nuggets_hit": int((sim.max(axis=0) >= t).sum()),
        "rubrics_hit": int((sim.max(axis=1) >= t).sum()),
    }


def macro(rows: list[dict], numerator: str, denominator: str) -> float | None:
    values = [row[numerator] / row[denominator] for row in rows if row[denominator]]
    return round(float(np.mean(values)), 4) if values else None


def oracle_similarity(world: World, sentences: list[str]) -> dict[str, float]:
    """For each gold nugget, its cosine with the closest sentence of the corpus (the extractive ceiling)."""
    from rubric_pipeline.merge import embed

    nuggets = sorted({t for g in world.gold.values() for t in g})
    best = (embed(nuggets) @ embed(sentences).T).max(axis=1)
    return dict(zip(nuggets, (float(x) for x in best), strict=True))


def score_build(
    rubrics: dict[str, list[str]], world: World, oracle: dict[str, float], llm_hits: dict | None = None
) -> list[dict[str, Any]]:
    """Rows {split, threshold, recall/precision one-to-one and many-to-one, oracle recall} per split."""
    from rubric_pipeline.merge import embed

    texts = sorted({t for group in rubrics.values() for t in group} | set(oracle))
    vectors = dict(zip(texts, embed(texts), strict=True))
    best_sentence = oracle
    rows = []
    for split in ("dev", "test"):
        qids = [q for q, s in world.split.items() if s == split]
        for t in THRESHOLDS:
            per_topic = []
            for qid in qids:
                gold, made = world.gold[qid], rubrics.get(qid, [])
                counts = similarity_scores(made, gold, vectors, t)
                oracle = sum(best_sentence[g] >= t for g in gold)
                per_topic.append({**counts, "rubrics": len(made), "gold": len(gold), "oracle": oracle})
            rows.append(
                {
                    "split": split,
                    "threshold": t,
                    "topics": len(qids),
                    "rubrics_per_topic": round(float(np.mean([r["rubrics"] for r in per_topic])), 2),
                    "nuggets_per_topic": round(float(np.mean([r["gold"] for r in per_topic])), 2),
                    "recall_1to1": macro(per_topic, "one_to_one", "gold"),
                    "precision_1to1": macro(per_topic, "one_to_one", "rubrics"),
                    "recall_many": macro(per_topic, "nuggets_hit", "gold"),
                    "precision_many": macro(per_topic, "rubrics_hit", "rubrics"),
                    "oracle_recall": macro(per_topic, "oracle", "gold"),
                }
            )
        if llm_hits is not None:
            per_topic = [
                llm_hits[qid] | {"rubrics": len(rubrics.get(qid, [])), "gold": len(world.gold[qid])}
                for qid in qids
            ]
            rows.append(
                {
                    "split": split,
                    "threshold": "llm",
                    "topics": len(qids),
                    "recall_many": macro(per_topic, "nuggets_hit", "gold"),
                    "precision_many": macro(per_topic, "rubrics_hit", "rubrics"),
                }
            )
    return rows


async def run_build(config, output: Path) -> tuple[dict[str, list[str]], dict]:
    from rubric_pipeline.pipeline import build_async

    stats = await build_async(config, output)
    rubrics = {}
    for line in (output / "progress.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "rubric_set" in record:
            rubric_set = record["rubric_set"]
            rubrics[rubric_set["qid"]] = [r["text"] for r in rubric_set["rubrics"]]
    return rubrics, stats


def build_config(corpus: Path, questions: Path, overrides: dict[str, Any]):
    from rubric_pipeline.build_config import BuildConfig

    return BuildConfig(corpus=str(corpus), questions=str(questions), resume=False, **overrides)


def print_rows(label: str, rows: list[dict]) -> None:
    print(f"\n{label}")
    print("split  t     rub/topic  R 1:1  P 1:1  R many  P many  oracle R")
    for row in rows:
        fmt = lambda v: "  -  " if v is None else f"{v:.3f}"  # noqa: E731
        print(
            f"{row['split']:<5}  {row['threshold']!s:<5} {row.get('rubrics_per_topic', '-')!s:>9}  "
            f"{fmt(row.get('recall_1to1'))}  {fmt(row.get('precision_1to1'))}  {fmt(row['recall_many'])}  "
            f"{fmt(row['precision_many'])}  {fmt(row.get('oracle_recall'))}"
        )


def demo_world_scores(work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The demo world build (seed 0) with the same overrides: its own gold, one-to-one at 0.75."""
    from rubric_pipeline.build_config import BuildConfig
    from rubric_pipeline.pipeline import build_async

    config = BuildConfig(demo_world=True, resume=False, **overrides)
    stats = asyncio.run(build_async(config, work))
    return {"rubrics": stats["rubrics"], "questions": stats["questions"], **stats["scores"]}


def main(argv: list[str] | None = None) -> int:
    from rubric_pipeline.build_config import BuildConfig
    from rubric_pipeline.core.config import load_recipe, parse_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trec-dir", default=str(TREC_DIR), help="the TREC RAG 2024 sample folder")
    parser.add_argument("--work", default=str(ROOT / ".cache" / "bench" / "rubrics_real"))
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "rubrics_real.json"))
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "build-answers.yaml"))
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="extra build overrides")
    parser.add_argument(
        "--gemma-set",
        nargs="*",
        default=[],
        metavar="FIELD=JSON",
        help="overrides for the Gemma build only, on top of the recipe (e.g. min_topic_similarity=0)",
    )
    parser.add_argument("--gemma", action="store_true", help="also build with Gemma-3-270M on vLLM")
    parser.add_argument("--gemma-dir", default=str(ROOT / ".cache" / "models" / "gemma-3-270m"))
    parser.add_argument("--gemma-topics", type=int, default=None, help="Gemma: first N topics per split")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tuned = dict(load_recipe(args.recipe).get("build") or {})
    tuned.update(parse_settings(args.set))
    world = load_world(Path(args.trec_dir))
    work = Path(args.work)
    corpus, questions = write_inputs(world, work / "inputs")
    defaults = BuildConfig()
    sentences = corpus_sentences(world, defaults.chunk_words, defaults.overlap_words, defaults.chunk_by)
    oracle = oracle_similarity(world, sentences)
    results: dict[str, Any] = {"command": "python bench/rubrics_real.py " + " ".join(argv or sys.argv[1:])}
    results["world"] = {
        "documents": len(world.documents),
        "topics": {s: sum(v == s for v in world.split.values()) for s in ("dev", "test")},
        "nuggets": sum(len(g) for g in world.gold.values()),
        "oracle_sentences": len(sentences),
    }
    built = {}
    for name, values in {"offline_defaults": {}, "offline_tuned": tuned}.items():
        start = time.perf_counter()
        values = {"index_dir": str(work / "index"), **values}
        rubrics, stats = asyncio.run(run_build(build_config(corpus, questions, values), work / name))
        built[name] = rubrics
        rows = score_build(rubrics, world, oracle)
        results[name] = {
            "overrides": {k: v for k, v in values.items() if k != "index_dir"},
            "wall_s": round(time.perf_counter() - start, 1),
            "events": stats["events"],
            "rows": rows,
            "demo_world": demo_world_scores(work / f"demo_{name}", values | {"index_dir": None}),
        }
        print_rows(f"{name} {results[name]['overrides']}: {stats['events']}", rows)
        print(f"demo world: {results[name]['demo_world']}")
    output = Path(args.output)
    output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")  # kept if Gemma fails
    if args.gemma:
        sys.path.insert(0, str(ROOT))  # run as a script: make the ``bench`` folder importable
        from bench.rubrics_real_llm import gemma_build, summary

        results["gemma"] = asyncio.run(
            gemma_build(
                args, world, corpus, oracle, tuned | parse_settings(args.gemma_set), built["offline_tuned"]
            )
        )
        print_rows(summary(results["gemma"]), results["gemma"]["rows"])
        print_rows("offline tuned, same topics", results["gemma"]["offline_rows_same_topics"])
        output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
