"""The build stages for one batch of questions: rewrite -> retrieve -> extract -> merge (+ importance).

:class:`Builder` holds the retriever (local corpus and/or web, a
:class:`~rubric_pipeline.retrieval.federated.FederatedRetriever`), the optional LLM client and the counters;
each stage is one method over the whole batch, so the LLM calls and web searches of a batch run
concurrently through the one client and the one search backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from rubric_pipeline.build_config import BuildConfig
from rubric_pipeline.core.llm import LLMClient, LLMConfig
from rubric_pipeline.core.records import Passage, RubricSet
from rubric_pipeline.corpus import index_text
from rubric_pipeline.extract import (
    Candidate,
    extract_offline,
    extract_with_llm,
    idf_weights,
    question_anchors,
    question_coverage,
)
from rubric_pipeline.merge import (
    embed,
    group_candidates,
    llm_importance,
    llm_merge,
    offline_importance,
    to_rubrics,
)
from rubric_pipeline.prompts import PROMPT_VERSION
from rubric_pipeline.retrieval.federated import FederatedRetriever
from rubric_pipeline.retrieval.fusion import rrf
from rubric_pipeline.retrieval.hybrid import HybridRetriever
from rubric_pipeline.retrieval.web import HTTPSearchBackend
from rubric_pipeline.rewrite import expand_offline, expand_with_llm
from rubric_pipeline.rewrite_tree import TreeSettings, expand_tree

logger = logging.getLogger(__name__)

STAGES = ("index", "rewrite", "retrieve", "extract", "merge")


def agreeing_documents(group: Sequence[Candidate], vectors: np.ndarray, similarity: float) -> np.ndarray:
    """Per candidate: how many other documents hold a candidate saying the same (cosine >= similarity)."""
    docs = np.array([candidate.doc_id for candidate in group])
    same = (vectors @ vectors.T >= similarity) & (docs[:, None] != docs[None, :])
    return np.array([len(set(docs[row])) for row in same])


@dataclass
class Timer:
    seconds: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, stage: str, start: float) -> None:
        self.seconds[stage] += time.perf_counter() - start


class Builder:
    """Runs the stages for batches of questions with one retriever and (optionally) one LLM client."""

    def __init__(
        self, config: BuildConfig, retriever: FederatedRetriever, client, events: Counter, timer: Timer
    ) -> None:
        self.config, self.retriever, self.client, self.events, self.timer = (
            config,
            retriever,
            client,
            events,
            timer,
        )
        self.llm_kwargs = {"api": config.llm_api, "seed": config.seed, "events": events}
        # idf over the local corpus; with the web alone, over each question's retrieved passages
        self.idf = idf_weights(index_text(p) for p in retriever.passages)

    async def rewrite(self, questions: Sequence[tuple[str, str]]) -> list[list[str]]:
        cfg, start = self.config, time.perf_counter()
        tree = {
            "depth": cfg.rewrite_depth,
            "max_nodes": cfg.rewrite_max_nodes,
            "per_call": cfg.rewrites_per_call,
            "dedup_threshold": cfg.dedup_threshold,
        }
        if self.client is None:
            expansions = (
                expand_offline(question, self._feedback, n_terms=cfg.prf_terms, **tree)
                for _, question in questions
            )
        else:
            llm = {"max_chars": cfg.max_nugget_chars, "max_tokens": cfg.max_tokens, **self.llm_kwargs}
            expansions = (expand_with_llm(self.client, question, **tree, **llm) for _, question in questions)
        nodes = await asyncio.gather(*expansions)  # one coroutine per question: bounded by batch_size
        self.timer.add("rewrite", start)
        return [[node.query for node in expansion] for expansion in nodes]

    async def tree(self, questions: Sequence[tuple[str, str]]) -> tuple[list[list[str]], list]:
        """Rewrite and retrieve in one: each question's query -> passage -> query tree (LLM path)."""
        cfg, start = self.config, time.perf_counter()
        settings = TreeSettings(
            max_depth=cfg.tree_max_depth,
            max_nodes=cfg.tree_max_nodes,
            per_passage=cfg.tree_per_passage,
            dedup_threshold=cfg.dedup_threshold,
            llm_dedup=cfg.llm_query_dedup,
            relevance_filter=cfg.llm_passage_filter,
            max_chars=cfg.max_nugget_chars,
            max_tokens=cfg.max_tokens,
        )

        async def search(query: str) -> list[Passage]:
            (hits,) = await self.retriever.search([query], cfg.k)
            return [hit.passage for hit in hits]

        trees = await asyncio.gather(
            *(
                expand_tree(self.client, question, search, settings, **self.llm_kwargs)
                for _, question in questions
            )
        )
        queries, retrieved = [], []
        for nodes in trees:
            passages = [node for node in nodes if not node.is_query]
            queries.append([node.query for node in nodes if node.is_query])
            retrieved.append(
                (
                    [node.passage for node in passages],
                    {node.passage.passage_id: node.query for node in passages},
                    [node.passage.passage_id for node in passages if node.parent == 0],
                )
            )
        self.events["tree.nodes"] += sum(len(nodes) for nodes in trees)
        self.timer.add("rewrite", start)
        return queries, retrieved

    async def _feedback(self, query: str) -> list[tuple[str, float]]:
        return await self.retriever.feedback(query, self.config.prf_docs)

    async def retrieve(self, queries: list[list[str]]) -> list[tuple[list, dict[str, str], list[str]]]:
        """Per question: fused passages (best first), the best query per passage, the question's own top-k."""
        start = time.perf_counter()
        flat = [query for group in queries for query in group]
        results = await self.retriever.search(flat, self.config.k)
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

        async def one(q_index: int, passage: Passage) -> list[str]:
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
                    question,
                    group,
                    passage,
                    term_weights=weights[q_index],
                    anchors=anchors[q_index],
                    clauses=cfg.clauses,
                    sentence_anchor=cfg.sentence_anchor,
                    **bounds,
                )
            return nuggets

        jobs, anchors, weights = [], [], []
        for q_index, (passages, _, _) in enumerate(retrieved):
            question, texts = questions[q_index][1], [index_text(p) for p in passages]
            weights.append(self.idf or idf_weights(texts))
            anchors.append(question_anchors(question, texts, weights[-1]))
            keep = [True] * len(passages)
            if passages:  # drop passages that barely touch the question (look-alikes, background)
                coverage = [question_coverage(question, text, weights[-1]) for text in texts]
                keep = [c > 0 and c >= cfg.min_relative_coverage * max(coverage) for c in coverage]
                self.events["extract.passages_skipped"] += keep.count(False)
            jobs.extend((q_index, rank, p) for rank, p in enumerate(passages) if keep[rank])
        # one batch: at most batch_size * passages_per_question coroutines; the client caps requests
        answers = await asyncio.gather(*(one(q, passage) for q, _, passage in jobs))
        candidates: list[list[Candidate]] = [[] for _ in questions]
        for (q_index, rank, passage), nuggets in zip(jobs, answers, strict=True):
            query = retrieved[q_index][1][passage.passage_id]
            candidates[q_index].extend(
                Candidate(text, passage.passage_id, passage.doc_id, query, rank, passage.url, passage.title)
                for text in nuggets
            )
        self.events["extract.candidates"] += sum(len(group) for group in candidates)
        self.timer.add("extract", start)
        return candidates

    async def merge(self, questions: Sequence[tuple[str, str]], candidates: list[list[Candidate]]) -> list:
        cfg, start = self.config, time.perf_counter()
        nuggets = [c.text for group in candidates for c in group]
        vectors = embed(nuggets, cfg.dense_model) if nuggets else None  # none found: no encoder to load
        if nuggets and (
            cfg.min_question_similarity or cfg.min_topic_similarity or cfg.min_agreeing_documents
        ):
            candidates, vectors = self._on_topic(questions, candidates, vectors)
        clusters, offset = [], 0
        for group in candidates:
            if not group:
                clusters.append([])
                continue
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
            if not items:  # kept in the dataset (an empty rubric set), but counted and said
                self.events["merge.questions_without_rubrics"] += 1
                logger.warning("question %s: no nugget was found in its retrieved passages", qid)
        self.timer.add("merge", start)
        return rubrics

    def _on_topic(self, questions: Sequence[tuple[str, str]], candidates: list[list[Candidate]], vectors):
        """Drop candidates whose MiniLM cosine with their question is below ``min_question_similarity``,
        with the centroid of the question's candidates (what its passages say most) below
        ``min_topic_similarity``, or that fewer than ``min_agreeing_documents`` other documents also state:
        on real answers the strongest offline signals of a statement that answers the question."""
        cfg = self.config
        question_vectors = embed([text for _, text in questions], cfg.dense_model)
        kept_groups, kept_rows, offset = [], [], 0
        for q_index, group in enumerate(candidates):
            block = vectors[offset : offset + len(group)]
            keep = block @ question_vectors[q_index] >= cfg.min_question_similarity
            if len(group) and cfg.min_topic_similarity > 0:
                centroid = block.mean(axis=0)
                keep &= (
                    block @ (centroid / max(float(np.linalg.norm(centroid)), 1e-12))
                    >= cfg.min_topic_similarity
                )
            if len(group) and cfg.min_agreeing_documents > 0:
                keep &= (
                    agreeing_documents(group, block, cfg.agreement_similarity) >= cfg.min_agreeing_documents
                )
            rows = [offset + i for i in np.flatnonzero(keep)]
            kept_groups.append([group[row - offset] for row in rows])
            kept_rows.extend(rows)
            offset += len(group)
        self.events["merge.off_topic_dropped"] += len(vectors) - len(kept_rows)
        return kept_groups, vectors[kept_rows]

    def _merge_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        bounds = {"min_words": cfg.min_words, "max_words": cfg.max_words, "max_chars": cfg.max_nugget_chars}
        return bounds | self.llm_kwargs

    async def run_batch(
        self, questions: Sequence[tuple[str, str]], bars: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """All stages for one batch; ``bars`` (stage -> tqdm) advance as each stage finishes the batch."""

        def done(stage: str) -> None:
            if bars is not None:
                bars[stage].update(len(questions))

        if self.client is not None and self.config.rewrite_tree:
            queries, retrieved = await self.tree(questions)
            done("rewrite")
        else:
            queries = await self.rewrite(questions)
            done("rewrite")
            retrieved = await self.retrieve(queries)
        done("retrieve")
        candidates = await self.extract(questions, queries, retrieved)
        done("extract")
        rubrics = await self.merge(questions, candidates)
        done("merge")
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


@contextlib.asynccontextmanager
async def open_builder(
    config: BuildConfig, local: HybridRetriever | None, events: Counter, timer: Timer
) -> AsyncIterator[Builder]:
    """A :class:`Builder` with the web backend and the LLM client ``config`` asks for, closed on exit."""
    async with AsyncExitStack() as stack:
        web = None
        if config.web_search_url:
            backend = HTTPSearchBackend(config.web_search_url, max_concurrency=config.web_concurrency)
            web = await stack.enter_async_context(backend)
        client = None
        if config.llm_url:
            llm_config = LLMConfig.for_endpoint(
                config.llm_url,
                config.model,
                max_concurrency=config.max_concurrency,
                timeout_s=config.timeout_s,
                trace_path=config.llm_trace,
            )
            client = await stack.enter_async_context(LLMClient(llm_config))
        yield Builder(config, FederatedRetriever(local, web, rrf_k=config.rrf_k), client, events, timer)
