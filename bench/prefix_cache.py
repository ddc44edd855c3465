"""Prefix sharing of the judging prompt, measured on a real vLLM server with prefix caching on.

Every window of the TREC dev sample (10 rubrics each) is sent twice, in one run, to one server: rendered by
``verifier.judge.prompt`` (instructions, question, response first; rubric list last) and with the same text
reordered so the rubric list comes before the question and response. Reports vLLM's prefix-cache hit
rate (from /metrics), prompt tokens, wall time and requests/s for each, side by side, repeated ``--rounds``
times in alternating order. Each pass prepends a unique tag so no pass reuses another pass's cache.

    flock /tmp/rv-heavy.lock .venv/bin/python bench/prefix_cache.py [--model DIR] [--limit N]

Writes bench/results/prefix_cache.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx

from rubric_pipeline.core.llm import LLMClient, LLMConfig
from rubric_pipeline.trec import read_trec_labelled
from verifier.judge import prompt

ROOT = Path(__file__).resolve().parents[1]
TREC_DEV = ROOT.parent / "shared" / "data" / "trec_rag24" / "dev.jsonl"
ORDERS = ("invariant_first", "rubrics_first")


def windows(examples: list, order: str, tag: str) -> list[tuple[list[dict[str, str]], int]]:
    """(messages, n) for every window; ``rubrics_first`` moves the rubric list before question+response."""
    out = []
    for example in examples:
        texts = [rubric.text for rubric in example.rubrics]
        for part in prompt.window_slices(len(texts)):
            content = prompt.render_prompt(example.question, example.response, texts[part])
            if order == "rubrics_first":
                head, sep, rest = content.partition("Question:\n")
                body, tail_sep, tail = rest.partition("Rubrics:\n")
                content = head + tail_sep + tail + "\n\n" + sep + body.rstrip() + "\n"
            out.append(([{"role": "user", "content": f"[{tag}]\n{content}"}], len(texts[part])))
    return out


def cache_counters(url: str) -> tuple[float, float]:
    """(prefix-cache queries, hits) in tokens, from vLLM's Prometheus metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text

    def total(name: str) -> float:
        return sum(
            float(m.group(1)) for m in re.finditer(rf"^vllm:{name}_total{{[^}}]*}} (\S+)$", text, re.M)
        )

    return total("prefix_cache_queries"), total("prefix_cache_hits")


async def one_pass(client: LLMClient, url: str, batch: list, concurrency: int) -> dict[str, Any]:
    limit = asyncio.Semaphore(concurrency)
    before_tokens = client.usage.prompt_tokens
    queries0, hits0 = cache_counters(url)

    async def send(messages: list[dict[str, str]], n: int) -> None:
        async with limit:
            completion = await client.chat(messages, max_tokens=8 * n + 8, json_schema=prompt.label_schema(n))
            prompt.parse_labels(completion.text, n)  # constrained output must parse

    start = time.perf_counter()
    await asyncio.gather(*(send(messages, n) for messages, n in batch))
    wall_s = time.perf_counter() - start
    queries1, hits1 = cache_counters(url)
    return {
        "windows": len(batch),
        "prompt_tokens": client.usage.prompt_tokens - before_tokens,
        "cache_hit_rate": (hits1 - hits0) / max(queries1 - queries0, 1.0),
        "wall_s": wall_s,
        "windows_per_s": len(batch) / wall_s,
    }


async def bench(url: str, base_url: str, model: str, examples: list, rounds: int, concurrency: int) -> dict:
    config = LLMConfig(base_urls=[base_url], model=model, max_concurrency=concurrency, timeout_s=300)
    passes: dict[str, list[dict[str, Any]]] = {order: [] for order in ORDERS}
    async with LLMClient(config) as client:
        await one_pass(client, url, windows(examples[:2], ORDERS[0], "warm-up"), concurrency)
        for round_index in range(rounds):
            order_of_round = ORDERS if round_index % 2 == 0 else ORDERS[::-1]
            for order in order_of_round:
                batch = windows(examples, order, f"{order} round {round_index}")
                result = await one_pass(client, url, batch, concurrency)
                print(f"round {round_index} {order:>16}: {json.dumps(result)}", flush=True)
                passes[order].append(result)
    return passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None, help="model dir (default: the tiny model under RV_MODELS_DIR)"
    )
    parser.add_argument("--limit", type=int, default=0, help="use only the first N dev records (0: all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    from verifier.models import build_tiny_model, default_models_dir
    from verifier.serve.engine import EngineConfig, VLLMEngine

    model = args.model or str(build_tiny_model(default_models_dir() / "tiny", seed=0))
    examples = read_trec_labelled(TREC_DEV)
    examples = examples[: args.limit] if args.limit else examples
    with VLLMEngine(EngineConfig(model=model, max_model_len=2048)) as engine:
        passes = asyncio.run(
            bench(engine.url, engine.base_url, engine.model_name, examples, args.rounds, args.concurrency)
        )
    summary = {
        order: {
            key: sum(p[key] for p in runs) / len(runs)
            for key in ("cache_hit_rate", "wall_s", "windows_per_s")
        }
        for order, runs in passes.items()
    }
    first, other = summary["invariant_first"], summary["rubrics_first"]
    print(f"\n{'order':>16} | cache hit rate | wall s | windows/s")
    for order, row in summary.items():
        hit, wall, rate = row["cache_hit_rate"], row["wall_s"], row["windows_per_s"]
        print(f"{order:>16} | {hit:14.3f} | {wall:6.2f} | {rate:9.1f}")
    print(
        f"invariant_first / rubrics_first throughput: {first['windows_per_s'] / other['windows_per_s']:.2f}x"
    )
    out = {
        "command": "flock /tmp/rv-heavy.lock .venv/bin/python bench/prefix_cache.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v),
        "model": model,
        "prompt_version": prompt.PROMPT_VERSION,
        "records": len(examples),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "passes": passes,
        "summary": summary,
    }
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "prefix_cache.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
