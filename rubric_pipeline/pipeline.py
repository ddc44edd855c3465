"""`rubric-verifier build`: corpus + questions -> rubric dataset.

Stages per batch of questions: rewrite -> retrieve -> extract -> merge (+ importance); the retrieval index is
built once and cached on disk. Passages come from the local corpus (``--corpus``), a SearXNG-compatible web
search API (``--web-search-url``), or both fused by RRF; web passages keep their URL and title in the
rubrics' sources. Every LLM call goes through one :class:`~rubric_pipeline.llm.LLMClient`
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
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rubric_pipeline.build_io import ProgressLog, read_gold, write_outputs
from rubric_pipeline.config import add_config_arguments, build_config, config_hash, option
from rubric_pipeline.prompts import PROMPT_VERSION
from rubric_pipeline.retrieval.hybrid import RetrievalConfig
from rubric_pipeline.schema import RubricSet, read_questions
from rubric_pipeline.scoring import MATCH_THRESHOLD
from rubric_pipeline.stages import STAGES, Builder, Timer

logger = logging.getLogger(__name__)

# fields that change how a run goes, not what it builds: left out of config_hash
RUN_ONLY_FIELDS = frozenset(
    {
        "llm_url",
        "max_concurrency",
        "timeout_s",
        "llm_trace",
        "batch_size",
        "resume",
        "limit",
        "index_dir",
        "gold",
        "web_concurrency",
    }
)


@dataclass
class BuildConfig(RetrievalConfig):
    """Settings of `rubric-verifier build` (recipe section ``build``; every field is also a flag)."""

    corpus: str | None = option(
        None,
        help="corpus JSONL ({id, text, title?, url?}) or a datasets folder (optional with --web-search-url)",
    )
    questions: str | None = option(None, help="questions JSONL ({qid, question})")
    gold: str | None = option(None, help="gold JSONL ({qid, nuggets, passages}) to score the build against")
    demo_world: bool = option(
        False, help="without --corpus: generate the demo world into OUTPUT/world and use it"
    )
    demo_seed: int = option(0, help="seed of the generated demo world")
    limit: int | None = option(None, help="build only the first N questions")
    # rewriting
    rewrite_depth: int = option(1, help="breadth-first rewriting depth (0: the question only)")
    rewrite_max_nodes: int = option(5, help="queries per question, the question included")
    rewrites_per_call: int = option(3, help="rewrites asked per LLM call (PRF: term blocks per node)")
    dedup_threshold: float = option(0.8, help="drop a query whose token Jaccard with a kept one is >= this")
    prf_docs: int = option(5, help="offline rewriting: feedback passages per query (RM3)")
    prf_terms: int = option(6, help="offline rewriting: expansion terms added per query")
    # retrieval per question
    passages_per_question: int = option(10, help="passages kept per question after fusing its queries (RRF)")
    # extraction
    nuggets_per_passage: int = option(3, help="at most this many nuggets per passage")
    min_words: int = option(5, help="shortest nugget kept, in words")
    max_words: int = option(35, help="longest nugget kept, in words")
    max_nugget_chars: int = option(
        200, help="JSON-schema bound on a generated nugget or query, in characters"
    )
    min_relative_coverage: float = option(
        0.5,
        help="skip extraction from passages holding less than this share of the idf weight of question "
        "terms found in the question's best passage (0: extract from every retrieved passage)",
    )
    # merge and importance
    merge_threshold: float = option(0.8, help="cluster nuggets whose mean MiniLM cosine is >= this")
    llm_merge: bool = option(True, help="with an LLM: rewrite multi-member clusters into one nugget")
    llm_importance: bool = option(True, help="with an LLM: label importance with it (else the offline rule)")
    vital_min_passages: int = option(
        2, help="offline rule: vital when this many distinct passages support it"
    )
    vital_top_rank: int = option(1, help="offline rule: vital when it comes from a passage ranked above this")
    max_rubrics: int = option(20, help="at most this many rubrics per question")
    # LLM
    llm_url: list[str] = option([], help="OpenAI-compatible base URL(s); none: offline backends everywhere")
    model: str = option("", help="model name served at --llm-url")
    llm_api: Literal["chat", "completions"] = option(
        "chat", help="'completions' for base models without a chat template"
    )
    max_tokens: int = option(256, help="max new tokens per rewrite/extraction call")
    max_concurrency: int = option(16, help="LLM requests in flight at once")
    timeout_s: float = option(120.0, help="per-request LLM timeout")
    seed: int = option(0, help="sampling seed sent with every LLM request")
    llm_trace: str | None = option(None, help="append every LLM call to this JSONL file")
    # run
    batch_size: int = option(8, help="questions that go through the stages together")
    resume: bool = option(True, help="skip questions already in OUTPUT/progress.jsonl (false: start over)")
    match_threshold: float = option(
        MATCH_THRESHOLD, help="scoring: MiniLM cosine at which a rubric matches a gold nugget (one-to-one)"
    )
    recall_k: int = option(10, help="scoring: retrieval recall cut-off")

    def __post_init__(self) -> None:
        at_least_one = (
            "chunk_words", "depth", "k", "embed_batch_size", "web_concurrency", "rewrite_max_nodes",
            "rewrites_per_call", "prf_docs", "prf_terms", "passages_per_question", "nuggets_per_passage",
            "min_words", "max_nugget_chars", "max_rubrics", "max_tokens", "max_concurrency", "batch_size",
            "recall_k", "vital_min_passages",
        )  # fmt: skip
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"build option {name} must be >= 1, got {getattr(self, name)}")
        for name in ("overlap_words", "rewrite_depth", "rrf_k", "vital_top_rank"):
            if getattr(self, name) < 0:
                raise ValueError(f"build option {name} must be >= 0, got {getattr(self, name)}")
        for name in ("dedup_threshold", "min_relative_coverage", "merge_threshold", "match_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"build option {name} must be within [0, 1], got {getattr(self, name)}")
        if self.overlap_words >= self.chunk_words:
            raise ValueError(
                f"overlap_words ({self.overlap_words}) must be < chunk_words ({self.chunk_words})"
            )
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must be <= max_words ({self.max_words})")
        if self.timeout_s <= 0:
            raise ValueError(f"build option timeout_s must be > 0, got {self.timeout_s}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"build option limit must be >= 1, got {self.limit}")
        if not self.bm25 and not self.dense:
            raise ValueError("enable at least one of --bm25 and --dense")
        if self.llm_url and not self.model:
            raise ValueError("--llm-url needs --model (the name the server serves)")

    @property
    def offline(self) -> bool:
        return not self.llm_url

    def retrieval(self) -> RetrievalConfig:
        return RetrievalConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RetrievalConfig)})

    def content_hash(self) -> str:
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY_FIELDS}
        return config_hash(values, PROMPT_VERSION)


def _prepare_inputs(config: BuildConfig, output: Path) -> BuildConfig:
    """Fill corpus/questions/gold from a generated demo world when asked; check the inputs exist."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file, not a folder")
    if config.corpus is None and config.demo_world:
        from rubric_pipeline.demo_world import generate_world

        world_dir = output / "world"
        generate_world(seed=config.demo_seed).write(world_dir)
        config = dataclasses.replace(
            config,
            corpus=str(world_dir / "corpus.jsonl"),
            questions=config.questions or str(world_dir / "questions.jsonl"),
            gold=config.gold or str(world_dir / "gold.jsonl"),
        )
    if config.questions is None or (config.corpus is None and not config.web_search_url):
        raise ValueError(
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

    from rubric_pipeline.corpus import load_corpus
    from rubric_pipeline.retrieval.federated import FederatedRetriever
    from rubric_pipeline.retrieval.hybrid import HybridRetriever
    from rubric_pipeline.retrieval.web import HTTPSearchBackend

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
            passages = load_corpus(config.corpus, config.chunk_words, config.overlap_words)
            retrieval = dataclasses.replace(
                config.retrieval(), index_dir=config.index_dir or str(output / "index")
            )
            local = HybridRetriever.from_config(passages, retrieval)
        timer.add("index", start)
        async with AsyncExitStack() as stack:
            web = None
            if config.web_search_url:
                backend = HTTPSearchBackend(config.web_search_url, max_concurrency=config.web_concurrency)
                web = await stack.enter_async_context(backend)
            retriever = FederatedRetriever(local, web, rrf_k=config.rrf_k)
            client = None
            if config.llm_url:
                from rubric_pipeline.llm import LLMClient, LLMConfig

                llm_config = LLMConfig(
                    base_urls=list(config.llm_url),
                    model=config.model,
                    max_concurrency=config.max_concurrency,
                    timeout_s=config.timeout_s,
                    trace_path=config.llm_trace,
                )
                client = await stack.enter_async_context(LLMClient(llm_config))
            builder = Builder(config, retriever, client, events, timer)
            bars = {
                stage: tqdm(total=len(pending), desc=f"{stage:>8}", unit="q", position=i)
                for i, stage in enumerate(STAGES[1:])
            }
            try:
                for begin in range(0, len(pending), config.batch_size):
                    batch = pending[begin : begin + config.batch_size]
                    for record in await builder.run_batch(batch, bars):
                        progress.append(record)
                        if on_question_done is not None:
                            on_question_done(record["rubric_set"]["qid"])
            finally:
                for bar in bars.values():
                    bar.close()
            usage = dataclasses.asdict(client.usage) if client is not None else None
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


def score_records(
    records: list[dict[str, Any]], gold: dict[str, dict[str, list[str]]], config: BuildConfig
) -> dict:
    """Retrieval recall@k (fused queries and the question alone) and rubric recall/precision vs gold."""
    from rubric_pipeline.scoring import recall_at_k, rubric_scores

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
    from rubric_pipeline.retrieval.web import WebSearchError

    config = build_config(BuildConfig, args.recipe, "build", args)
    try:
        stats = build(config, args.output)
    except WebSearchError as exc:  # finished questions stay in progress.jsonl: rerun to resume
        raise ValueError(f"{exc} (the questions built so far are kept; rerun to resume)") from None
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
