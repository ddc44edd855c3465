"""`rubric-verifier respond`: candidate responses for the questions, the step between rubrics and labels.

Each question is answered by every endpoint (``--endpoint MODEL@URL``, repeatable; one model at several URLs
is balanced by the one LLM client), in every context (``none``: the question alone; ``passages``: the top
``--passages`` passages retrieved from ``--corpus`` for it) and at every temperature, ``--samples`` times.
A response's id names what made it: ``<qid>:<model>:<context>:t<temperature>:s<sample>``. Every response is
appended to ``OUTPUT/responses.jsonl`` as soon as it is done, in the ``{qid, response_id, response}`` form
that `rubric-verifier label --responses` reads (plus the question and how it was made), so an interrupted
run resumes: ids already written are skipped. A failed call is logged, counted and retried on the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rubric_pipeline.core.config import add_config_arguments, build_config, option
from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.llm import LLMClient, LLMConfig, LLMError
from rubric_pipeline.core.records import Passage, iter_jsonl, read_questions, require, write_jsonl
from rubric_pipeline.corpus import load_corpus
from rubric_pipeline.retrieval.hybrid import HybridRetriever, RetrievalConfig
from verifier.data.teacher import load_rubric_sets

logger = logging.getLogger(__name__)

RESPONSES_FILE = "responses.jsonl"
CONTEXTS = ("none", "passages")
# Kept short and neutral: candidate answers of varied quality are what the labels are for.
PROMPT_ALONE = "Answer the question in one or two short paragraphs.\n\nQuestion: {question}"
PROMPT_PASSAGES = (
    "Answer the question in one or two short paragraphs, using the passages below where they help.\n\n"
    "{passages}\n\nQuestion: {question}"
)
COMPLETION_SUFFIX = "\n\nAnswer:"


@dataclass
class RespondConfig:
    """Settings of `rubric-verifier respond` (recipe section ``respond``; every field is also a flag)."""

    questions: str | None = option(None, help="questions: {qid, question} jsonl, or rubric sets (any form)")
    endpoint: list[str] = option([], help="MODEL@URL of OpenAI-compatible server(s), one or more")
    output: str = option("", help="output dir: responses.jsonl (the form `label --responses` reads)")
    contexts: list[str] = option(["none"], help="'none' (question alone) and/or 'passages' (retrieved)")
    corpus: str | None = option(None, help="corpus jsonl / datasets dir to retrieve passages from")
    passages: int = option(3, help="passages put in the prompt for context 'passages'")
    passage_chars: int = option(600, help="characters kept of each passage in the prompt")
    temperatures: list[float] = option([0.0, 0.7, 1.0], help="sampling temperatures")
    samples: int = option(1, help="responses per (endpoint, context, temperature)")
    max_tokens: int = option(256, help="length cap of a response")
    api: Literal["chat", "completions"] = option("chat", help="'completions' for base models")
    seed: int = option(0, help="base seed; sample s is sent with seed + s")
    max_concurrency: int = option(16, help="requests in flight at once, per endpoint")
    timeout_s: float = option(120.0, help="per-request timeout")
    limit: int | None = option(None, help="answer only the first N questions")

    def __post_init__(self) -> None:
        for context in self.contexts:
            if context not in CONTEXTS:
                raise ConfigError(f"unknown context {context!r}; expected one of {', '.join(CONTEXTS)}")
        if "passages" in self.contexts and not self.corpus:
            raise ConfigError("context 'passages' needs --corpus to retrieve from")
        for name in ("passages", "passage_chars", "samples", "max_tokens", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"respond option {name} must be >= 1, got {getattr(self, name)}")
        if any(t < 0 for t in self.temperatures) or not self.temperatures:
            raise ConfigError(f"temperatures must be a non-empty list of values >= 0: {self.temperatures}")
        for spec in self.endpoint:
            parse_endpoint(spec)


def parse_endpoint(spec: str) -> tuple[str, str]:
    """``MODEL@URL`` -> ``(model, url)``; the URL is an OpenAI-compatible base (``.../v1``)."""
    model, sep, url = spec.rpartition("@")
    if not sep or not model or not url.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint {spec!r}: expected MODEL@URL, e.g. qwen@http://127.0.0.1:8000/v1")
    return model, url


def load_question_list(path: str | Path) -> list[tuple[str, str]]:
    """``(qid, question)`` from a questions jsonl or from rubric sets (jsonl, TREC file, datasets dir)."""
    path = Path(path)
    first = next(iter_jsonl(path), None) if path.is_file() else None
    if first is not None and "rubrics" not in first[1] and "nuggets" not in first[1]:
        return read_questions(path)

    return [(qid, rubric_set.question) for qid, rubric_set in load_rubric_sets(path).items()]


def response_id(qid: str, model: str, context: str, temperature: float, sample: int) -> str:
    return f"{qid}:{model}:{context}:t{temperature:g}:s{sample}"


def read_written(path: Path) -> set[str]:
    """Response ids already in ``responses.jsonl`` (a truncated last line from a kill is an error there)."""
    if not path.exists():
        return set()
    return {require(record, "response_id", path, line) for line, record in iter_jsonl(path)}


def render(question: str, passages: list[Passage], passage_chars: int, api: str) -> str:
    if passages:
        blocks = "\n\n".join(
            f"[{i}] {p.title + ': ' if p.title else ''}{p.text[:passage_chars]}"
            for i, p in enumerate(passages, 1)
        )
        prompt = PROMPT_PASSAGES.format(passages=blocks, question=question)
    else:
        prompt = PROMPT_ALONE.format(question=question)
    return prompt + COMPLETION_SUFFIX if api == "completions" else prompt


def retrieve(config: RespondConfig, questions: list[tuple[str, str]]) -> dict[str, list[Passage]]:
    """The top ``config.passages`` passages per question (hybrid BM25 + dense over ``config.corpus``)."""
    retrieval = RetrievalConfig(index_dir=str(Path(config.output) / "index"))
    passages = load_corpus(
        config.corpus, retrieval.chunk_words, retrieval.overlap_words, chunk_by=retrieval.chunk_by
    )
    retriever = HybridRetriever.from_config(passages, retrieval, show_progress=False)
    hits = retriever.search([question for _, question in questions], config.passages)
    return {qid: [hit.passage for hit in group] for (qid, _), group in zip(questions, hits, strict=True)}


@dataclass(frozen=True)
class Job:
    qid: str
    question: str
    model: str
    context: str
    temperature: float
    sample: int

    @property
    def response_id(self) -> str:
        return response_id(self.qid, self.model, self.context, self.temperature, self.sample)


def plan(config: RespondConfig, questions: list[tuple[str, str]], written: set[str]) -> list[Job]:
    models = list(dict.fromkeys(parse_endpoint(spec)[0] for spec in config.endpoint))
    jobs = [
        Job(qid, question, model, context, temperature, sample)
        for qid, question in questions
        for model in models
        for context in config.contexts
        for temperature in config.temperatures
        for sample in range(config.samples)
    ]
    return [job for job in jobs if job.response_id not in written]


async def respond(config: RespondConfig) -> dict[str, int]:
    """Generate every pending response, appending each to ``responses.jsonl``; returns the run's counts."""
    from tqdm.auto import tqdm

    if not config.output:
        raise ConfigError("--output DIR is required")
    if not config.questions:
        raise ConfigError("--questions PATH is required")
    if not config.endpoint:
        raise ConfigError("give at least one --endpoint MODEL@URL")
    questions = load_question_list(config.questions)[: config.limit]
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESPONSES_FILE
    written = read_written(path)
    jobs = plan(config, questions, written)
    counts: Counter[str] = Counter(already_written=len(written), to_generate=len(jobs))
    if not jobs:
        return dict(counts)
    contexts = retrieve(config, questions) if "passages" in config.contexts else {}
    urls: dict[str, list[str]] = {}
    for model, url in map(parse_endpoint, config.endpoint):
        urls.setdefault(model, []).append(url)
    clients = {
        model: LLMClient(
            LLMConfig.for_endpoint(
                group,
                model,
                max_concurrency=config.max_concurrency,
                timeout_s=config.timeout_s,
            )
        )
        for model, group in urls.items()
    }
    bar = tqdm(total=len(jobs), desc="respond", unit="resp")

    async def one(job: Job) -> None:
        passages = contexts.get(job.qid, []) if job.context == "passages" else []
        prompt = render(job.question, passages, config.passage_chars, config.api)
        client = clients[job.model]
        kwargs: dict[str, Any] = {
            "max_tokens": config.max_tokens,
            "temperature": job.temperature,
            "seed": config.seed + job.sample,
        }
        try:
            if config.api == "chat":
                completion = await client.chat([{"role": "user", "content": prompt}], **kwargs)
            else:
                completion = await client.complete(prompt, **kwargs)
        except LLMError as exc:
            counts["failed"] += 1
            logger.warning("response %s failed (rerun to retry): %s", job.response_id, exc)
            return
        finally:
            bar.update(1)
        text = completion.text.strip()
        counts["empty" if not text else "written"] += 1
        record = {
            "qid": job.qid,
            "question": job.question,
            "response_id": job.response_id,
            "response": text,
            "model": job.model,
            "context": job.context,
            "passage_ids": [p.passage_id for p in passages],
            "temperature": job.temperature,
            "seed": config.seed + job.sample,
            "finish_reason": (completion.finish_reasons or [None])[0],
        }
        write_jsonl(path, [record], append=True)  # one line per response: a kill loses at most one

    block = 4 * config.max_concurrency * len(clients)  # coroutines alive at once; the clients cap requests
    async with AsyncExitStack() as stack:
        for client in clients.values():
            await stack.enter_async_context(client)
        try:
            for begin in range(0, len(jobs), block):
                await asyncio.gather(*(one(job) for job in jobs[begin : begin + block]))
        finally:
            bar.close()
    return dict(counts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default=None, help="YAML recipe; its `respond` section fills the options")
    add_config_arguments(parser, RespondConfig)


def run(args: argparse.Namespace) -> int:
    config = build_config(RespondConfig, args.recipe, "respond", args)
    counts = asyncio.run(respond(config))
    print(json.dumps(counts))
    if counts.get("failed"):
        logger.warning("%d responses failed: rerun the same command to retry them", counts["failed"])
        return 1
    return 0
