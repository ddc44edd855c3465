"""`rubric-verifier build`: corpus + questions -> rubric dataset.

Stages per batch of questions: rewrite -> retrieve -> extract -> merge (+ importance); the retrieval index is
built once and cached on disk. Passages come from the local corpus (``--corpus``), a SearXNG-compatible web
search API (``--web-search-url``), or both fused by RRF; web passages keep their URL and title in the
rubrics' sources. Every LLM call goes through one :class:`~rubric_pipeline.core.llm.LLMClient`
(bounded concurrency); without ``--llm-url`` every stage takes its offline path. Each finished question is
appended to ``OUTPUT/progress.jsonl`` and flushed, so a killed run restarted with the same output folder
skips what is done and ends with the same dataset. Outputs: ``dataset/`` (``save_to_disk``),
``rubrics.parquet``, ``rubrics.trec.jsonl`` (nuggetizer form) and ``stats.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rubric_pipeline.build_config import BuildConfig
from rubric_pipeline.build_io import ProgressLog, read_gold, write_outputs
from rubric_pipeline.core.config import add_config_arguments, build_config
from rubric_pipeline.core.errors import ConfigError, RubricVerifierError
from rubric_pipeline.core.records import RubricSet, read_questions
from rubric_pipeline.corpus import load_corpus
from rubric_pipeline.demo_world import generate_world
from rubric_pipeline.prompts import PROMPT_VERSION
from rubric_pipeline.ray_runner import run_on_ray
from rubric_pipeline.retrieval.hybrid import HybridRetriever
from rubric_pipeline.retrieval.web import WebSearchError
from rubric_pipeline.scoring import recall_at_k, rubric_scores
from rubric_pipeline.stages import STAGES, Timer, open_builder

logger = logging.getLogger(__name__)


def _prepare_inputs(config: BuildConfig, output: Path) -> BuildConfig:
    """Fill corpus/questions/gold from a generated demo world when asked; check the inputs exist."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file, not a folder")
    if config.corpus is None and config.demo_world:
        world_dir = output / "world"
        generate_world(seed=config.demo_seed).write(world_dir)
        config = dataclasses.replace(
            config,
            corpus=str(world_dir / "corpus.jsonl"),
            questions=config.questions or str(world_dir / "questions.jsonl"),
            gold=config.gold or str(world_dir / "gold.jsonl"),
        )
    if config.questions is None or (config.corpus is None and not config.web_search_url):
        raise ConfigError(
            "build needs --questions and --corpus and/or --web-search-url (or --demo-world true)"
        )
    return config


def retrieval_kind(config: BuildConfig) -> str:
    """``corpus``, ``web`` or ``corpus+web``: where the build's passages come from."""
    return "+".join(name for name, on in (("corpus", config.corpus), ("web", config.web_search_url)) if on)


async def build_async(
    config: BuildConfig, output: str | Path, on_question_done: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Build (or resume) the rubric dataset in ``output``; returns the stats also written to stats.json."""
    from tqdm.auto import tqdm

    output = Path(output)
    config = _prepare_inputs(config, output)
    wall_start, timer, events = time.perf_counter(), Timer(), Counter()
    questions = read_questions(config.questions)[: config.limit]
    gold = read_gold(config.gold) if config.gold else None  # bad gold fails now, not after the build
    output.mkdir(parents=True, exist_ok=True)
    progress = ProgressLog(output / "progress.jsonl", config.content_hash(), resume=config.resume)
    pending = [(qid, text) for qid, text in questions if qid not in progress.done]
    logger.info(
        "%d questions: %d already built, %d to build",
        len(questions),
        len(questions) - len(pending),
        len(pending),
    )
    usage = None
    if pending:
        start = time.perf_counter()
        local = None
        if config.corpus is not None:
            passages = load_corpus(
                config.corpus, config.chunk_words, config.overlap_words, chunk_by=config.chunk_by
            )
            config = dataclasses.replace(config, index_dir=config.index_dir or str(output / "index"))
            local = HybridRetriever.from_config(passages, config.retrieval())
        timer.add("index", start)
        bars = {
            stage: tqdm(total=len(pending), desc=f"{stage:>8}", unit="q", position=i)
            for i, stage in enumerate(STAGES[1:])
        }

        def finished(record: dict[str, Any]) -> None:
            progress.append(record)
            if on_question_done is not None:
                on_question_done(record["rubric_set"]["qid"])

        try:
            if config.runner == "ray":
                usage = run_on_ray(config, pending, finished, events, timer, bars)
            else:
                usage = await run_local(config, local, pending, finished, events, timer, bars)
        finally:
            for bar in bars.values():
                bar.close()
    records = [progress.done[qid] for qid, _ in questions]
    stats = {
        "questions": len(questions),
        "built_this_run": len(pending),
        "resumed": len(questions) - len(pending),
        "config_hash": config.content_hash(),
        "prompt_version": PROMPT_VERSION,
        "backend": "offline" if config.offline else f"llm:{config.llm_api}:{config.model}",
        "retrieval": retrieval_kind(config),
        "stage_seconds": {stage: round(seconds, 3) for stage, seconds in timer.seconds.items()},
        "llm_usage": usage,
        "events": dict(sorted(events.items())),
        "rubrics": sum(len(r["rubric_set"]["rubrics"]) for r in records),
        "vital": sum(x["importance"] == "vital" for r in records for x in r["rubric_set"]["rubrics"]),
        "queries": sum(len(r["rubric_set"]["queries"]) for r in records),
    }
    if gold is not None:
        stats["scores"] = score_records(records, gold, config)
    start = time.perf_counter()
    write_outputs(output, [RubricSet.from_dict(r["rubric_set"]) for r in records])
    stats["write_seconds"] = round(time.perf_counter() - start, 3)
    stats["wall_seconds"] = round(time.perf_counter() - wall_start, 3)
    (output / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


async def run_local(
    config: BuildConfig,
    local: HybridRetriever | None,
    pending: list[tuple[str, str]],
    finished: Callable[[dict[str, Any]], None],
    events: Counter,
    timer: Timer,
    bars: Mapping[str, Any],
) -> dict[str, int] | None:
    """The in-process runner: batches of ``config.batch_size`` questions in turn; returns the LLM usage."""
    async with open_builder(config, local, events, timer) as builder:
        for begin in range(0, len(pending), config.batch_size):
            for record in await builder.run_batch(pending[begin : begin + config.batch_size], bars):
                finished(record)
        client = builder.client
        return dataclasses.asdict(client.usage) if client is not None else None


def score_records(
    records: list[dict[str, Any]], gold: dict[str, dict[str, list[str]]], config: BuildConfig
) -> dict:
    """Retrieval recall@k (fused queries and the question alone) and rubric recall/precision vs gold."""
    qids = {r["rubric_set"]["qid"] for r in records}
    gold_passages = {qid: g["passages"] for qid, g in gold.items() if qid in qids}
    gold_nuggets = {qid: g["nuggets"] for qid, g in gold.items() if qid in qids}
    k = config.recall_k
    return {
        f"recall@{k}": recall_at_k(
            {r["rubric_set"]["qid"]: r["retrieved"] for r in records}, gold_passages, k
        ),
        f"recall@{k}_question_only": recall_at_k(
            {r["rubric_set"]["qid"]: r["question_retrieved"] for r in records}, gold_passages, k
        ),
        **rubric_scores(
            {r["rubric_set"]["qid"]: [x["text"] for x in r["rubric_set"]["rubrics"]] for r in records},
            gold_nuggets,
            config.match_threshold,
        ),
    }


def build(
    config: BuildConfig, output: str | Path, on_question_done: Callable[[str], None] | None = None
) -> dict:
    """Synchronous wrapper of :func:`build_async`."""
    return asyncio.run(build_async(config, output, on_question_done))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", help="YAML recipe; its `build` section fills the options below")
    parser.add_argument(
        "--output", required=True, help="output folder (also holds progress.jsonl for resuming)"
    )
    add_config_arguments(parser, BuildConfig)


def run(args: argparse.Namespace) -> int:
    config = build_config(BuildConfig, args.recipe, "build", args)
    try:
        stats = build(config, args.output)
    except WebSearchError as exc:  # finished questions stay in progress.jsonl: rerun to resume
        raise RubricVerifierError(f"{exc} (the questions built so far are kept; rerun to resume)") from None
    print(format_stats(stats, args.output))
    return 0


def format_stats(stats: dict[str, Any], output: str | Path) -> str:
    lines = [
        f"built {stats['questions']} questions ({stats['resumed']} resumed) -> {output}: "
        f"{stats['rubrics']} rubrics ({stats['vital']} vital), backend {stats['backend']}, "
        f"retrieval {stats['retrieval']}",
        "stage wall time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stats["stage_seconds"].items()),
    ]
    if stats.get("llm_usage"):
        usage = stats["llm_usage"]
        lines.append(
            f"LLM: {usage['requests']} requests, {usage['prompt_tokens']} prompt + "
            f"{usage['completion_tokens']} completion tokens, {usage['failures']} failures"
        )
    if scores := stats.get("scores"):
        lines.append(
            "scores: "
            + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())
        )
    return "\n".join(lines)
