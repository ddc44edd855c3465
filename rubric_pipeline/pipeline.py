"""`rubric-verifier build`: corpus + questions -> rubric dataset.

Stages per batch of questions: rewrite -> retrieve -> extract -> merge (+ importance); the retrieval index is
built once and cached on disk. Every LLM call goes through one :class:`~rubric_pipeline.llm.LLMClient`
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
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rubric_pipeline.build_io import ProgressLog, read_gold, write_outputs
from rubric_pipeline.config import add_config_arguments, build_config, config_hash, option
from rubric_pipeline.corpus import index_text
from rubric_pipeline.extract import (
    Candidate,
    extract_offline,
    extract_with_llm,
    idf_weights,
    question_anchors,
    question_coverage,
)
from rubric_pipeline.merge import group_candidates, llm_importance, llm_merge, offline_importance, to_rubrics
from rubric_pipeline.prompts import PROMPT_VERSION
from rubric_pipeline.retrieval.fusion import rrf
from rubric_pipeline.retrieval.hybrid import RetrievalConfig
from rubric_pipeline.rewrite import expand_offline, expand_with_llm
from rubric_pipeline.schema import RubricSet, read_questions
from rubric_pipeline.scoring import MATCH_THRESHOLD

logger = logging.getLogger(__name__)

STAGES = ("index", "rewrite", "retrieve", "extract", "merge")
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
    }
)


@dataclass
class BuildConfig(RetrievalConfig):
    """Settings of `rubric-verifier build` (recipe section ``build``; every field is also a flag)."""

    corpus: str | None = option(None, help="corpus JSONL ({id, text, title?, url?}) or a datasets folder")
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

    @property
    def offline(self) -> bool:
        return not self.llm_url

    def retrieval(self) -> RetrievalConfig:
        return RetrievalConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RetrievalConfig)})

    def content_hash(self) -> str:
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY_FIELDS}
        return config_hash(values, PROMPT_VERSION)


@dataclass
class Timer:
    seconds: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, stage: str, start: float) -> None:
        self.seconds[stage] += time.perf_counter() - start


class Builder:
    """Runs the stages for batches of questions with one retriever and (optionally) one LLM client."""

    def __init__(self, config: BuildConfig, retriever, client, events: Counter, timer: Timer) -> None:
        self.config, self.retriever, self.client, self.events, self.timer = (
            config,
            retriever,
            client,
            events,
            timer,
        )
        self.llm_kwargs = {"api": config.llm_api, "seed": config.seed, "events": events}
        self.idf = idf_weights(index_text(p) for p in retriever.passages)

    async def rewrite(self, questions: Sequence[tuple[str, str]]) -> list[list[str]]:
        cfg, start = self.config, time.perf_counter()
        if self.client is None:
            nodes = [
                expand_offline(
                    question,
                    self._feedback,
                    depth=cfg.rewrite_depth,
                    max_nodes=cfg.rewrite_max_nodes,
                    per_call=cfg.rewrites_per_call,
                    n_terms=cfg.prf_terms,
                    dedup_threshold=cfg.dedup_threshold,
                )
                for _, question in questions
            ]
        else:  # one coroutine per question of the batch: bounded by batch_size
            nodes = await asyncio.gather(
                *(
                    expand_with_llm(
                        self.client,
                        question,
                        depth=cfg.rewrite_depth,
                        max_nodes=cfg.rewrite_max_nodes,
                        per_call=cfg.rewrites_per_call,
                        dedup_threshold=cfg.dedup_threshold,
                        max_chars=cfg.max_nugget_chars,
                        max_tokens=cfg.max_tokens,
                        **self.llm_kwargs,
                    )
                    for _, question in questions
                )
            )
        self.timer.add("rewrite", start)
        return [[node.query for node in tree] for tree in nodes]

    def _feedback(self, query: str) -> list[tuple[str, float]]:
        searcher = self.retriever.bm25 or self.retriever
        (hits,) = searcher.search([query], self.config.prf_docs)
        return [(hit.passage.text, hit.score) for hit in hits]

    def retrieve(self, queries: list[list[str]]) -> list[tuple[list, dict[str, str], list[str]]]:
        """Per question: fused passages (best first), the best query per passage, the question's own top-k."""
        start = time.perf_counter()
        flat = [query for group in queries for query in group]
        results = self.retriever.search(flat, self.config.k)
        out, offset = [], 0
        for group in queries:
            lists = results[offset : offset + len(group)]
            offset += len(group)
            by_id, best_query, best_rank = {}, {}, {}
            for query, hits in zip(group, lists, strict=True):
                for hit in hits:
                    by_id[hit.passage_id] = hit.passage
                    if hit.rank < best_rank.get(hit.passage_id, 1 << 30):
                        best_rank[hit.passage_id], best_query[hit.passage_id] = hit.rank, query
            fused = rrf([[hit.passage_id for hit in hits] for hits in lists])
            passages = [by_id[pid] for pid, _ in fused[: self.config.passages_per_question]]
            out.append((passages, best_query, [hit.passage_id for hit in lists[0]]))
        self.timer.add("retrieve", start)
        return out

    async def extract(
        self, questions: Sequence[tuple[str, str]], queries: list[list[str]], retrieved: list
    ) -> list[list[Candidate]]:
        cfg, start = self.config, time.perf_counter()
        bounds = {
            "max_nuggets": cfg.nuggets_per_passage,
            "min_words": cfg.min_words,
            "max_words": cfg.max_words,
        }

        async def one(q_index: int, passage) -> list[str]:
            question, group = questions[q_index][1], queries[q_index]
            nuggets = None
            if self.client is not None:
                nuggets = await extract_with_llm(
                    self.client,
                    question,
                    group,
                    passage,
                    max_chars=cfg.max_nugget_chars,
                    max_tokens=cfg.max_tokens,
                    **bounds,
                    **self.llm_kwargs,
                )
                if nuggets is None:  # failed call: fall back for this passage, counted, never silent
                    self.events["extract.fallbacks"] += 1
            if nuggets is None:
                nuggets = extract_offline(
                    question, group, passage, term_weights=self.idf, anchors=anchors[q_index], **bounds
                )
            return nuggets

        jobs, anchors = [], []
        for q_index, (passages, _, _) in enumerate(retrieved):
            question = questions[q_index][1]
            anchors.append(question_anchors(question, (index_text(p) for p in passages), self.idf))
            keep = [True] * len(passages)
            if passages:  # drop passages that barely touch the question (look-alikes, background)
                coverage = [question_coverage(question, index_text(p), self.idf) for p in passages]
                keep = [c > 0 and c >= cfg.min_relative_coverage * max(coverage) for c in coverage]
                self.events["extract.passages_skipped"] += keep.count(False)
            jobs.extend((q_index, rank, p) for rank, p in enumerate(passages) if keep[rank])
        # one batch: at most batch_size * passages_per_question coroutines; the client caps requests
        answers = await asyncio.gather(*(one(q, passage) for q, _, passage in jobs))
        candidates: list[list[Candidate]] = [[] for _ in questions]
        for (q_index, rank, passage), nuggets in zip(jobs, answers, strict=True):
            query = retrieved[q_index][1][passage.passage_id]
            candidates[q_index].extend(
                Candidate(text, passage.passage_id, passage.doc_id, query, rank) for text in nuggets
            )
        self.events["extract.candidates"] += sum(len(group) for group in candidates)
        self.timer.add("extract", start)
        return candidates

    async def merge(self, questions: Sequence[tuple[str, str]], candidates: list[list[Candidate]]) -> list:
        from rubric_pipeline.merge import embed

        cfg, start = self.config, time.perf_counter()
        vectors = embed([c.text for group in candidates for c in group], cfg.dense_model)
        clusters, offset = [], 0
        for group in candidates:
            clusters.append(
                group_candidates(group, vectors[offset : offset + len(group)], cfg.merge_threshold)
            )
            offset += len(group)
        pairs = [(q, item) for q, items in enumerate(clusters) for item in items]
        if self.client is not None and cfg.llm_merge:
            texts = await asyncio.gather(
                *(llm_merge(self.client, questions[q][1], item, **self._merge_kwargs()) for q, item in pairs)
            )
            for (_, item), text in zip(pairs, texts, strict=True):
                item.text = text
        importances = [
            offline_importance(item, cfg.vital_min_passages, cfg.vital_top_rank) for _, item in pairs
        ]
        if self.client is not None and cfg.llm_importance:
            answers = await asyncio.gather(
                *(
                    llm_importance(self.client, questions[q][1], item.text, **self.llm_kwargs)
                    for q, item in pairs
                )
            )
            importances = [answer or rule for answer, rule in zip(answers, importances, strict=True)]
        rubrics, index = [], 0
        for (qid, _), items in zip(questions, clusters, strict=True):
            rubrics.append(to_rubrics(qid, items, importances[index : index + len(items)], cfg.max_rubrics))
            index += len(items)
        self.timer.add("merge", start)
        return rubrics

    def _merge_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        bounds = {"min_words": cfg.min_words, "max_words": cfg.max_words, "max_chars": cfg.max_nugget_chars}
        return bounds | self.llm_kwargs

    async def run_batch(self, questions: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        queries = await self.rewrite(questions)
        retrieved = self.retrieve(queries)
        candidates = await self.extract(questions, queries, retrieved)
        rubrics = await self.merge(questions, candidates)
        meta = {
            "model": self.config.model if self.client is not None else "offline",
            "prompt_version": PROMPT_VERSION,
            "config_hash": self.config.content_hash(),
            "backend": "offline" if self.client is None else f"llm:{self.config.llm_api}",
        }
        return [
            {
                "rubric_set": RubricSet(qid, question, group, rubric_list, dict(meta)).to_dict(),
                "retrieved": [p.passage_id for p in passages],
                "question_retrieved": own,
            }
            for (qid, question), group, (passages, _, own), rubric_list in zip(
                questions, queries, retrieved, rubrics, strict=True
            )
        ]


def _prepare_inputs(config: BuildConfig, output: Path) -> BuildConfig:
    """Fill corpus/questions/gold from a generated demo world when asked; check the inputs exist."""
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
    if config.corpus is None or config.questions is None:
        raise ValueError("build needs --corpus and --questions (or --demo-world true)")
    return config


async def build_async(
    config: BuildConfig, output: str | Path, on_question_done: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Build (or resume) the rubric dataset in ``output``; returns the stats also written to stats.json."""
    from tqdm.auto import tqdm

    from rubric_pipeline.corpus import load_corpus
    from rubric_pipeline.retrieval.hybrid import HybridRetriever

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    config = _prepare_inputs(config, output)
    wall_start, timer, events = time.perf_counter(), Timer(), Counter()
    questions = read_questions(config.questions)[: config.limit]
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
        passages = load_corpus(config.corpus, config.chunk_words, config.overlap_words)
        retrieval = dataclasses.replace(
            config.retrieval(), index_dir=config.index_dir or str(output / "index")
        )
        retriever = HybridRetriever.from_config(passages, retrieval)
        timer.add("index", start)
        async with AsyncExitStack() as stack:
            client = None
            if config.llm_url:
                from rubric_pipeline.llm import LLMClient, LLMConfig

                if not config.model:
                    raise ValueError("--llm-url needs --model (the name the server serves)")
                llm_config = LLMConfig(
                    base_urls=list(config.llm_url),
                    model=config.model,
                    max_concurrency=config.max_concurrency,
                    timeout_s=config.timeout_s,
                    trace_path=config.llm_trace,
                )
                client = await stack.enter_async_context(LLMClient(llm_config))
            builder = Builder(config, retriever, client, events, timer)
            with tqdm(total=len(pending), desc="build (questions)", unit="q") as bar:
                for begin in range(0, len(pending), config.batch_size):
                    batch = pending[begin : begin + config.batch_size]
                    for record in await builder.run_batch(batch):
                        progress.append(record)
                        bar.update(1)
                        if on_question_done is not None:
                            on_question_done(record["rubric_set"]["qid"])
            usage = dataclasses.asdict(client.usage) if client is not None else None
    records = [progress.done[qid] for qid, _ in questions]
    stats = {
        "questions": len(questions),
        "built_this_run": len(pending),
        "resumed": len(questions) - len(pending),
        "config_hash": config.content_hash(),
        "prompt_version": PROMPT_VERSION,
        "backend": "offline" if config.offline else f"llm:{config.llm_api}:{config.model}",
        "stage_seconds": {stage: round(seconds, 3) for stage, seconds in timer.seconds.items()},
        "llm_usage": usage,
        "events": dict(sorted(events.items())),
        "rubrics": sum(len(r["rubric_set"]["rubrics"]) for r in records),
        "vital": sum(x["importance"] == "vital" for r in records for x in r["rubric_set"]["rubrics"]),
        "queries": sum(len(r["rubric_set"]["queries"]) for r in records),
    }
    if config.gold:
        stats["scores"] = score_records(records, read_gold(config.gold), config)
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
    config = build_config(BuildConfig, args.recipe, "build", args)
    stats = build(config, args.output)
    print(format_stats(stats, args.output))
    return 0


def format_stats(stats: dict[str, Any], output: str | Path) -> str:
    lines = [
        f"built {stats['questions']} questions ({stats['resumed']} resumed) -> {output}: "
        f"{stats['rubrics']} rubrics ({stats['vital']} vital), backend {stats['backend']}",
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
