"""The LLM half of bench/rubrics_real.py: a build with Gemma-3-270M on vLLM and an LLM nugget matcher.

The matcher follows nuggetizer's evaluation in spirit (an LLM decides whether a statement carries a nugget)
while staying cheap on a CPU: for each gold nugget only its ``top`` closest rubrics (MiniLM cosine) are
asked about, one yes/no question each, constrained to the two words. A nugget is matched when some rubric
gets "yes"; a rubric is matched when it gets "yes" for some nugget (rubrics never asked count as unmatched).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

MATCH_PROMPT = (
    "Does the statement state the fact? Answer yes or no.\n\n"
    "Fact: Velmora was founded in 1342.\nStatement: Salt traders founded Velmora in 1342.\nAnswer: yes\n\n"
    "Fact: Velmora was founded in 1342.\nStatement: Velmora has a glass harbor.\nAnswer: no\n\n"
    "Fact: {nugget}\nStatement: {rubric}\nAnswer:"
)


async def llm_match(
    client,
    rubrics: dict[str, list[str]],
    gold: dict[str, list[str]],
    top: int = 3,
    events: Counter | None = None,
) -> dict[str, dict[str, int]]:
    """Per topic ``{nuggets_hit, rubrics_hit}`` from yes/no LLM judgements (a failed call counts as no)."""
    from rubric_pipeline.core.llm import LLMError
    from rubric_pipeline.merge import embed

    events = events if events is not None else Counter()
    pairs: list[tuple[str, int, int]] = []
    for qid, nuggets in gold.items():
        made = rubrics.get(qid, [])
        if not made:
            continue
        similarity = embed(made) @ embed(nuggets).T
        for j in range(len(nuggets)):
            pairs.extend((qid, int(i), j) for i in np.argsort(-similarity[:, j])[:top])

    async def ask(qid: str, i: int, j: int) -> bool:
        prompt = MATCH_PROMPT.format(nugget=gold[qid][j].strip(), rubric=rubrics[qid][i])
        try:
            completion = await client.complete(prompt, max_tokens=2, temperature=0.0, choice=[" yes", " no"])
        except LLMError:
            events["match.llm_failures"] += 1
            return False
        return completion.text.strip().lower() == "yes"

    answers = await asyncio.gather(*(ask(*pair) for pair in pairs))  # the client caps requests in flight
    hits: dict[str, dict[str, set]] = {qid: {"n": set(), "r": set()} for qid in gold}
    for (qid, i, j), yes in zip(pairs, answers, strict=True):
        if yes:
            hits[qid]["n"].add(j)
            hits[qid]["r"].add(i)
    events["match.llm_calls"] += len(pairs)
    return {qid: {"nuggets_hit": len(h["n"]), "rubrics_hit": len(h["r"])} for qid, h in hits.items()}


def subset(world, per_split: int | None):
    """The first ``per_split`` dev and test topics (all when None), as a smaller World."""
    from bench.rubrics_real import World

    keep = []
    for split in ("dev", "test"):
        keep += [q for q, s in world.split.items() if s == split][:per_split]
    return World(
        world.documents,
        {q: world.questions[q] for q in keep},
        {q: world.gold[q] for q in keep},
        {q: world.split[q] for q in keep},
    )


async def gemma_build(
    args, world, corpus: Path, oracle: dict[str, float], overrides: dict, offline: dict
) -> dict:
    """Build with Gemma-3-270M (completions API) on the first ``args.gemma_topics`` topics of each split;
    score it by cosine and, for it and the offline build, by the LLM matcher."""
    from bench.rubrics_real import build_config, run_build, score_build, write_inputs
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.serve.engine import EngineConfig, VLLMEngine

    small = subset(world, args.gemma_topics)
    _, questions = write_inputs(small, Path(args.work) / "gemma_inputs")
    engine_config = EngineConfig(
        model=args.gemma_dir, max_model_len=2048, log_path=str(Path(args.work) / "gemma_vllm.log")
    )
    start = time.perf_counter()
    with VLLMEngine(engine_config) as engine:
        ready_s = time.perf_counter() - start
        values = {
            **overrides,
            "llm_url": [engine.base_url],
            "model": engine.model_name,
            "llm_api": "completions",
            "max_concurrency": 16,
            "timeout_s": 600.0,
        }
        config = build_config(corpus, questions, values)
        rubrics, stats = await run_build(config, Path(args.work) / "gemma")
        build_s = time.perf_counter() - start - ready_s
        events: Counter = Counter()
        llm = LLMConfig(
            base_urls=[engine.base_url], model=engine.model_name, max_concurrency=16, timeout_s=600
        )
        async with LLMClient(llm) as client:
            gemma_hits = await llm_match(client, rubrics, small.gold, events=events)
            offline_small = {q: offline[q] for q in small.questions}
            offline_hits = await llm_match(client, offline_small, small.gold, events=events)
    return {
        "overrides": overrides,
        "topics": {s: sum(v == s for v in small.split.values()) for s in ("dev", "test")},
        "engine_ready_s": round(ready_s, 1),
        "build_s": round(build_s, 1),
        "llm_usage": stats["llm_usage"],
        "events": stats["events"] | dict(events),
        "rows": score_build(rubrics, small, oracle, gemma_hits),
        "offline_rows_same_topics": score_build(offline_small, small, oracle, offline_hits),
    }


def summary(result: dict[str, Any]) -> str:
    return f"gemma: {result['topics']} topics, build {result['build_s']} s, events {result['events']}"
