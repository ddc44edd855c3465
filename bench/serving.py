"""Serving benchmark: the reward gateway vs naive transformers and vs raw vLLM, measured in one run.

    flock /tmp/rv-heavy.lock .venv/bin/python bench/serving.py            # tiny model, ~4 min on 2 cores
    .venv/bin/python bench/serving.py --model .cache/models/verifier --load-seconds 60

Figures (side by side, same model, same machine, same run):
  1. rubric judgements/s through the gateway vs a naive loop of ``model.generate`` calls (goal >= 5x);
  2. gateway throughput vs the same windows sent straight to vLLM (overhead goal <= 5%);
  3. prefix-cache hit rate from vLLM's /metrics on 10-rubric windows of the same responses, counting the
     windows after each response's first (goal >= 80% of prompt tokens);
  4. N concurrent clients for T seconds on 127.0.0.1: errors, p50/p99 latency, gateway RSS.
The gateway runs as its own process (`rubric-verifier serve --engine-url`), as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench.serving")

WORDS = ("river", "harbour", "council", "archive", "bridge", "orchard", "ferry", "lantern", "quarry",
         "market", "tower", "canal", "mill", "charter", "railway", "observatory", "library")  # fmt: skip
NAMES = (
    "Varn",
    "Ostrel",
    "Tessa",
    "Ima",
    "Kolde",
    "Brask",
    "Hovin",
    "Merra",
    "Sulo",
    "Dantry",
    "Quell",
    "Pira",
)


def make_items(
    count: int, n_rubrics: int, tag: str, n_facts: int = 12, seed: int = 0
) -> list[dict[str, Any]]:
    """Fictional RAG-style answers (``n_facts`` sentences, ~25 words each) with rubrics; ``tag`` keeps every
    set's text unique so no run reuses another's cache."""
    rng = random.Random(f"{seed}-{tag}")
    items = []
    for index in range(count):
        city = rng.choice(NAMES)
        facts = [
            f"The {rng.choice(WORDS)} of {city} was built in {rng.randint(1700, 1990)} by "
            f"{rng.choice(NAMES)} {rng.choice(NAMES)}, who also designed the {rng.choice(WORDS)} near the "
            f"{rng.choice(WORDS)}."
            for _ in range(n_facts)
        ]
        response = f"[{tag}-{index}] " + " ".join(facts)
        rubrics = [
            f"States that the {rng.choice(WORDS)} of {city} dates from {rng.randint(1700, 1990)}."
            for _ in range(n_rubrics)
        ]
        question = f"What is known about the landmarks of {city}?"
        items.append({"question": question, "response": response, "rubrics": rubrics})
    return items


def vllm_counters(engine_url: str) -> dict[str, float]:
    text = httpx.get(f"{engine_url}/metrics", timeout=10).text
    names = (
        "prefix_cache_queries",
        "prefix_cache_hits",
        "request_success",
        "generation_tokens",
        "prompt_tokens",
    )
    return {
        name: sum(float(v) for v in re.findall(rf"^vllm:{name}_total(?:{{[^}}]*}})? (\S+)$", text, re.M))
        for name in names
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after}


# ---------------------------------------------------------------- the two HTTP paths


async def run_pool(items: list[dict[str, Any]], concurrency: int, one) -> tuple[float, int, int]:
    """Run ``one(item) -> (judged rubrics, errors)`` with ``concurrency`` workers: (s, judged, errors)."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    totals = [0, 0]

    async def worker() -> None:
        while not queue.empty():
            judged, errors = await one(queue.get_nowait())
            totals[0] += judged
            totals[1] += errors

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, totals[0], totals[1]


def gateway_call(client: httpx.AsyncClient, url: str):
    async def one(item: dict[str, Any]) -> tuple[int, int]:
        response = await client.post(f"{url}/v1/judge", json={"items": [item]})
        if response.status_code != 200:
            return 0, 1
        result = response.json()["results"][0]
        return (len(result["labels"]), 0) if result["reward"] is not None else (0, 1)

    return one


def direct_call(client: httpx.AsyncClient, base_url: str, model: str, window: int):
    """What LLMJudge sends for each window, posted straight to vLLM (windows of an item concurrently)."""
    from verifier import prompt
    from verifier.judges import default_max_tokens

    async def window_call(item: dict[str, Any], texts: list[str]) -> int:
        body = {
            "model": model,
            "messages": prompt.render_messages(item["question"], item["response"], texts),
            "max_tokens": default_max_tokens(len(texts)),
            "temperature": 0.0,
            "n": 1,
            "structured_outputs": {"json": prompt.label_schema(len(texts))},
        }
        response = await client.post(f"{base_url}/chat/completions", json=body)
        if response.status_code != 200:
            return -1
        try:
            return len(
                prompt.parse_labels(response.json()["choices"][0]["message"]["content"], len(texts)).labels
            )
        except prompt.ParseError:
            return -1

    async def one(item: dict[str, Any]) -> tuple[int, int]:
        rubrics = item["rubrics"]
        parts = prompt.window_slices(len(rubrics), window)
        counts = await asyncio.gather(*(window_call(item, rubrics[part]) for part in parts))
        return (sum(counts), 0) if min(counts) >= 0 else (0, 1)

    return one


# ---------------------------------------------------------------- measurements


async def throughput_rounds(args, gateway_url: str, engine, client: httpx.AsyncClient) -> dict[str, Any]:
    gateway = gateway_call(client, gateway_url)
    direct = direct_call(client, engine.base_url, engine.model_name, args.window)
    await run_pool(make_items(8, args.rubrics, "warmup"), 4, gateway)  # first-request costs out of the way
    rounds = []
    for round_index in range(args.rounds):
        order = [("gateway", gateway), ("direct", direct)]
        if round_index % 2:
            order.reverse()  # alternate who goes first: the machine is shared and drifts
        row: dict[str, Any] = {}
        for name, one in order:
            before = vllm_counters(engine.url)
            items = make_items(args.items, args.rubrics, f"{name}-{round_index}")
            seconds, judged, errors = await run_pool(items, args.concurrency, one)
            spent = delta(vllm_counters(engine.url), before)
            row[name] = {
                "seconds": round(seconds, 3),
                "judgements": judged,
                "errors": errors,
                "judgements_per_s": round(judged / seconds, 2),
                "gen_tokens_per_request": spent["generation_tokens"] / max(spent["request_success"], 1),
            }
        row["overhead"] = 1 - row["gateway"]["judgements_per_s"] / row["direct"]["judgements_per_s"]
        rates = (row["gateway"]["judgements_per_s"], row["direct"]["judgements_per_s"])
        logger.info("round %d: gateway %s/s, direct %s/s", round_index, *rates)
        rounds.append(row)
    return {
        "rounds": rounds,
        "gateway_judgements_per_s": statistics.median(r["gateway"]["judgements_per_s"] for r in rounds),
        "direct_judgements_per_s": statistics.median(r["direct"]["judgements_per_s"] for r in rounds),
        "overhead_median": statistics.median(r["overhead"] for r in rounds),
        "gen_tokens_per_window": statistics.mean(r["gateway"]["gen_tokens_per_request"] for r in rounds),
    }


async def prefix_cache(args, gateway_url: str, engine, client: httpx.AsyncClient) -> dict[str, Any]:
    """Hit rate on the windows after each response's first: (a) first window warmed, rest concurrent
    (straight to vLLM); (b) the gateway as it runs, every window of an item at once."""
    direct = direct_call(client, engine.base_url, engine.model_name, args.window)
    items = make_items(args.cache_items, 6 * args.window, "cache")
    first_q = first_h = rest_q = rest_h = 0.0
    for item in items:
        before = vllm_counters(engine.url)
        await direct(item | {"rubrics": item["rubrics"][: args.window]})
        middle = vllm_counters(engine.url)
        await direct(item | {"rubrics": item["rubrics"][args.window :]})
        after = vllm_counters(engine.url)
        first_q += middle["prefix_cache_queries"] - before["prefix_cache_queries"]
        first_h += middle["prefix_cache_hits"] - before["prefix_cache_hits"]
        rest_q += after["prefix_cache_queries"] - middle["prefix_cache_queries"]
        rest_h += after["prefix_cache_hits"] - middle["prefix_cache_hits"]
    before = vllm_counters(engine.url)
    await run_pool(
        make_items(args.cache_items, 6 * args.window, "cache-gw"), 1, gateway_call(client, gateway_url)
    )
    gw = delta(vllm_counters(engine.url), before)
    return {
        "windows_per_response": 6,
        "prompt_tokens_per_window": round(rest_q / max(1, 5 * len(items)), 1),
        "first_window_hit_rate": first_h / max(first_q, 1),
        "later_windows_hit_rate": rest_h / max(rest_q, 1),
        "gateway_all_windows_hit_rate": gw["prefix_cache_hits"] / max(gw["prefix_cache_queries"], 1),
    }


async def load_test(args, gateway_url: str, gateway_pid: int, engine) -> dict[str, Any]:
    import psutil

    items = make_items(64, args.window, "load")
    latencies: list[float] = []
    errors: dict[str, int] = {}
    judged = [0]
    rss: list[int] = []
    process = psutil.Process(gateway_pid)
    deadline = time.monotonic() + args.load_seconds
    limits = httpx.Limits(max_connections=args.clients + 8, max_keepalive_connections=args.clients + 8)

    async def client_loop(index: int, client: httpx.AsyncClient) -> None:
        turn = index
        while time.monotonic() < deadline:
            item = items[turn % len(items)]
            turn += 1
            started = time.perf_counter()
            try:
                response = await client.post(f"{gateway_url}/v1/judge", json={"items": [item]})
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
            elif response.json()["results"][0]["reward"] is None:
                errors["unjudgeable"] = errors.get("unjudgeable", 0) + 1
            else:
                judged[0] += len(item["rubrics"])

    async def sample_rss() -> None:
        while time.monotonic() < deadline:
            rss.append(process.memory_info().rss)
            await asyncio.sleep(1.0)

    idle_rss = process.memory_info().rss
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        await asyncio.gather(sample_rss(), *(client_loop(i, client) for i in range(args.clients)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": args.clients,
        "seconds": round(seconds, 1),
        "requests": len(latencies),
        "errors": errors,
        "error_count": sum(errors.values()),
        "judgements_per_s": round(judged[0] / seconds, 1),
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p99_s": percentile(latencies, 0.99),
        "gateway_rss_idle_mib": round(idle_rss / 2**20, 1),
        "gateway_rss_peak_mib": round(max(rss or [idle_rss]) / 2**20, 1),
    }


def percentile(ordered: list[float], q: float) -> float | None:
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 3) if ordered else None


def naive_generate(args, model_dir: str, gen_tokens: int) -> dict[str, Any]:
    """One window at a time through ``model.generate`` (greedy, fp32, one thread like the engine)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verifier import prompt

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    items = make_items(args.naive_windows + 1, args.window, "naive")
    new_tokens = max(1, round(float(gen_tokens)))
    started = time.perf_counter()
    with torch.inference_mode():
        for index, item in enumerate(items):
            if index == 1:  # the first call (warm-up) is not timed
                started = time.perf_counter()
            messages = prompt.render_messages(item["question"], item["response"], item["rubrics"])
            ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    seconds = time.perf_counter() - started
    return {
        "windows": len(items) - 1,
        "new_tokens_per_window": new_tokens,
        "seconds": round(seconds, 3),
        "judgements_per_s": round((len(items) - 1) * args.window / seconds, 2),
    }


# ---------------------------------------------------------------- driver


def start_gateway(engine, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "verifier.cli", "--log-level", "WARNING", "serve",
               "--engine-url", engine.url, "--port", str(port), "--max-queue", "1024",
               "--max-concurrency", "256"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("gateway did not start")


async def measure(args, engine, gateway_url: str, gateway_pid: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        throughput = await throughput_rounds(args, gateway_url, engine, client)
        cache = await prefix_cache(args, gateway_url, engine, client)
    load = await load_test(args, gateway_url, gateway_pid, engine)
    return {"throughput": throughput, "prefix_cache": cache, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model dir (default: the tiny model, built if missing)")
    parser.add_argument("--items", type=int, default=48, help="items per throughput round")
    parser.add_argument("--rubrics", type=int, default=20, help="rubrics per item in the throughput rounds")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument(
        "--concurrency", type=int, default=16, help="items in flight in the throughput rounds"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cache-items", type=int, default=6)
    parser.add_argument("--naive-windows", type=int, default=16)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        help="extra vLLM flag (repeatable), e.g. --engine-arg=--block-size=32",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serving.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from verifier.models import build_tiny_model, default_models_dir
    from verifier.serve.engine import EngineConfig, VLLMEngine, free_port

    model_dir = args.model or str(build_tiny_model(default_models_dir() / "tiny", seed=0))
    with VLLMEngine(EngineConfig(model=model_dir, extra_args=args.engine_arg)) as engine:
        port = free_port()
        gateway = start_gateway(engine, port)
        try:
            figures = asyncio.run(measure(args, engine, f"http://127.0.0.1:{port}", gateway.pid))
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
    figures["naive"] = naive_generate(args, model_dir, figures["throughput"]["gen_tokens_per_window"])
    t, n = figures["throughput"], figures["naive"]
    figures["ratios"] = {
        "gateway_vs_naive_generate": t["gateway_judgements_per_s"] / n["judgements_per_s"],
        "gateway_overhead_vs_direct_vllm": t["overhead_median"],
    }
    figures["setup"] = {"model": model_dir, "cpus": os.cpu_count(), "args": vars(args), "command": sys.argv}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(report(figures, args))


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    t, c, n, load = figures["throughput"], figures["prefix_cache"], figures["naive"], figures["load"]
    gw, direct = t["gateway_judgements_per_s"], t["direct_judgements_per_s"]
    return "\n".join(
        [
            f"rubric judgements/s: gateway {gw:.1f} | naive generate loop {n['judgements_per_s']:.1f} | "
            f"ratio {figures['ratios']['gateway_vs_naive_generate']:.1f}x (goal >= 5x)",
            f"gateway vs direct vLLM: {gw:.1f} vs {direct:.1f} judgements/s | overhead "
            f"{100 * t['overhead_median']:.1f}% (median of {args.rounds} rounds; goal <= 5%)",
            f"prefix cache hits, windows 2-6 of a response: {100 * c['later_windows_hit_rate']:.1f}% of "
            f"prompt tokens (goal >= 80%) | first window {100 * c['first_window_hit_rate']:.1f}% | "
            f"via the gateway, all windows at once: {100 * c['gateway_all_windows_hit_rate']:.1f}%",
            f"{load['clients']} clients x {load['seconds']}s: {load['requests']} requests, "
            f"{load['error_count']} errors {load['errors']}, p50 {load['latency_p50_s']}s, "
            f"p99 {load['latency_p99_s']}s, {load['judgements_per_s']} judgements/s",
            f"gateway RSS: idle {load['gateway_rss_idle_mib']} MiB, peak {load['gateway_rss_peak_mib']} MiB",
            f"wrote {args.out}",
        ]
    )


if __name__ == "__main__":
    main()
