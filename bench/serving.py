"""Serving benchmark: the reward gateway vs naive transformers and vs raw vLLM, measured in one run.

    flock /tmp/rv-heavy.lock .venv/bin/python bench/serving.py --rounds 3   # tiny model, ~9 min on 2 cores
    flock /tmp/rv-heavy.lock .venv/bin/python bench/serving.py --parts cache --engine-arg=--block-size=128

Figures (side by side, same model, same machine, same run; ``--parts`` picks a subset):
  1. rubric judgements/s through the gateway vs a naive loop of ``model.generate`` calls (goal >= 5x);
  2. gateway throughput vs the same windows sent straight to vLLM (overhead goal <= 5%), and vs a second
     gateway that judges each item's first window before the others (``--warm-prefix true``);
  3. prefix-cache hit rate from vLLM's /metrics on 10-rubric windows of the same responses, counting the
     windows after each response's first (goal >= 80% of prompt tokens), on synthetic answers and on
     TREC RAG 2024 dev answers, beside the share of those tokens the windows have in common (the ceiling);
  4. N concurrent clients for T seconds on 127.0.0.1: errors (by new/reused connection), connections
     reopened, p50/p99 latency, gateway RSS sampled on a thread.
The gateways run as their own processes (`rubric-verifier serve --engine-url`), as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from verifier.serve.launch import GatewayNotReady, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
TREC_DEV = ROOT.parent / "shared" / "data" / "trec_rag24" / "dev.jsonl"
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


async def run_pool(items: list[dict[str, Any]], concurrency: int, one) -> tuple[float, int, int, list[float]]:
    """Run ``one(item) -> (judged rubrics, errors)`` with ``concurrency`` workers:
    (seconds, judged, errors, per-item latencies)."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    totals = [0, 0]
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            started = time.perf_counter()
            judged, errors = await one(queue.get_nowait())
            latencies.append(time.perf_counter() - started)
            totals[0] += judged
            totals[1] += errors

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, totals[0], totals[1], sorted(latencies)


def gateway_call(client: httpx.AsyncClient, url: str):
    async def one(item: dict[str, Any]) -> tuple[int, int]:
        response = await client.post(f"{url}/v1/judge", json={"items": [item]})
        if response.status_code != 200:
            return 0, 1
        result = response.json()["results"][0]
        return (len(result["labels"]), 0) if result["reward"] is not None else (0, 1)

    return one


def direct_call(client: httpx.AsyncClient, base_url: str, model: str, window: int, warm_prefix: bool = False):
    """What the gateway sends for each window, posted straight to vLLM: every window of an item at once
    (the gateway's default), or with ``warm_prefix`` the first window alone and then the others."""
    from verifier.judge import prompt
    from verifier.judge.judges import default_max_tokens

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
        counts = []
        if warm_prefix and len(parts) > 1:
            counts.append(await window_call(item, rubrics[parts[0]]))
            parts = parts[1:] if counts[0] >= 0 else []
        counts += await asyncio.gather(*(window_call(item, rubrics[part]) for part in parts))
        return (sum(counts), 0) if min(counts) >= 0 else (0, 1)

    return one


# ---------------------------------------------------------------- measurements


async def throughput_rounds(
    args, gateways: dict[str, str], engine, client: httpx.AsyncClient
) -> dict[str, Any]:
    """Rounds of ``--items`` items at ``--concurrency``: the gateway, the same windows straight to vLLM,
    and (when started) the gateway sending every window of an item at once; order rotates per round."""
    contenders = {name: gateway_call(client, url) for name, url in gateways.items()}
    contenders["direct"] = direct_call(client, engine.base_url, engine.model_name, args.window)
    warmup = make_items(args.warmup_items, args.rubrics, "warmup")
    await run_pool(warmup, min(4, args.warmup_items), contenders["gateway"])  # first-request costs
    rounds = []
    for round_index in range(args.rounds):
        names = list(contenders)
        order = names[round_index % len(names) :] + names[: round_index % len(names)]  # the machine drifts
        row: dict[str, Any] = {}
        for name in order:
            before = vllm_counters(engine.url)
            items = make_items(args.items, args.rubrics, f"{name}-{round_index}")
            seconds, judged, errors, latencies = await run_pool(items, args.concurrency, contenders[name])
            spent = delta(vllm_counters(engine.url), before)
            row[name] = {
                "seconds": round(seconds, 3),
                "judgements": judged,
                "errors": errors,
                "judgements_per_s": round(judged / seconds, 2),
                "item_latency_p50_s": percentile(latencies, 0.5),
                "prefix_cache_hit_rate": spent["prefix_cache_hits"] / max(spent["prefix_cache_queries"], 1),
                "gen_tokens_per_request": spent["generation_tokens"] / max(spent["request_success"], 1),
            }
        row["overhead"] = 1 - row["gateway"]["judgements_per_s"] / row["direct"]["judgements_per_s"]
        logger.info("round %d: %s", round_index, {n: row[n]["judgements_per_s"] for n in contenders})
        rounds.append(row)
    summary = {
        f"{name}_{key}": statistics.median(r[name][key] for r in rounds)
        for name in contenders
        for key in ("judgements_per_s", "item_latency_p50_s", "prefix_cache_hit_rate")
    }
    return {
        "rounds": rounds,
        **summary,
        "overhead_median": statistics.median(r["overhead"] for r in rounds),
        # the naive loop generates as many tokens per window as vLLM did on the direct path (never timed out)
        "gen_tokens_per_window": statistics.mean(r["direct"]["gen_tokens_per_request"] for r in rounds),
    }


def trec_items(limit: int, window: int) -> list[dict[str, Any]]:
    """TREC RAG 2024 dev answers with more than one window of rubrics (real lengths; read at run time)."""
    from rubric_pipeline.trec import read_trec_labelled

    if not TREC_DEV.exists():
        return []
    examples = [e for e in read_trec_labelled(TREC_DEV) if len(e.rubrics) > window][:limit]
    return [
        {"question": e.question, "response": e.response, "rubrics": [r.text for r in e.rubrics]}
        for e in examples
    ]


def tagged(items: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """The same items under a new tag at the start of the question, so no pass reuses another's cache."""
    return [item | {"question": f"[{tag}] {item['question']}"} for item in items]


def prefix_ceiling(items: list[dict[str, Any]], window: int, tokenizer) -> float:
    """Share of the prompt tokens of windows 2+ that they have in common with window 1 (token-exact): the
    hit rate a cache with 1-token blocks would reach."""
    from verifier.judge import prompt

    def tokens(item: dict[str, Any], part: slice) -> list[int]:
        messages = prompt.render_messages(item["question"], item["response"], item["rubrics"][part])
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    shared = total = 0
    for item in items:
        first, *later = prompt_windows(item, window)
        head = tokens(item, first)
        for part in later:
            ids = tokens(item, part)
            common = next(
                (i for i, (a, b) in enumerate(zip(head, ids, strict=False)) if a != b),
                min(len(head), len(ids)),
            )
            shared, total = shared + common, total + len(ids)
    return shared / max(total, 1)


async def cache_set(args, items, gateways: dict[str, str], engine, client, tokenizer) -> dict[str, Any]:
    """Hit rates on one item set: the exact per-window split on the direct path (first window alone, then
    the rest, item by item: the best case for windows 2+), and the whole traffic of each gateway, whose
    rate on windows 2+ is derived by taking out the first windows' counts measured on the direct path."""
    direct = direct_call(client, engine.base_url, engine.model_name, args.window)
    first_q = first_h = rest_q = rest_h = 0.0
    for item in tagged(items, "p0"):  # tags of equal length: the passes differ in nothing else
        before = vllm_counters(engine.url)
        await direct(item | {"rubrics": item["rubrics"][: args.window]})
        middle = vllm_counters(engine.url)
        await direct(item | {"rubrics": item["rubrics"][args.window :]})
        after = vllm_counters(engine.url)
        first_q += middle["prefix_cache_queries"] - before["prefix_cache_queries"]
        first_h += middle["prefix_cache_hits"] - before["prefix_cache_hits"]
        rest_q += after["prefix_cache_queries"] - middle["prefix_cache_queries"]
        rest_h += after["prefix_cache_hits"] - middle["prefix_cache_hits"]
    out: dict[str, Any] = {
        "items": len(items),
        "windows": sum(len(prompt_windows(item, args.window)) for item in items),
        "prompt_tokens_per_later_window": round(
            rest_q / max(1, sum(len(prompt_windows(i, args.window)) - 1 for i in items)), 1
        ),
        "prefix_share_of_later_windows": prefix_ceiling(items, args.window, tokenizer),
        "direct_first_window_hit_rate": first_h / max(first_q, 1),
        "direct_later_windows_hit_rate": rest_h / max(rest_q, 1),
    }
    for index, (name, url) in enumerate(gateways.items(), start=1):
        before = vllm_counters(engine.url)
        await run_pool(tagged(items, f"p{index}"), args.concurrency, gateway_call(client, url))
        spent = delta(vllm_counters(engine.url), before)
        hits, queries = spent["prefix_cache_hits"], spent["prefix_cache_queries"]
        out[f"{name}_all_windows_hit_rate"] = hits / max(queries, 1)
        out[f"{name}_later_windows_hit_rate_derived"] = (hits - first_h) / max(queries - first_q, 1)
    return out


def prompt_windows(item: dict[str, Any], window: int) -> list[slice]:
    from verifier.judge import prompt

    return prompt.window_slices(len(item["rubrics"]), window)


async def prefix_cache(args, gateways: dict[str, str], engine, client: httpx.AsyncClient) -> dict[str, Any]:
    """Prefix-cache hit rates on synthetic answers (6 windows each) and on TREC dev answers."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    sets = {"synthetic": make_items(args.cache_items, 6 * args.window, "cache")}
    if trec := trec_items(args.trec_items, args.window):
        sets["trec_dev"] = trec
    return {
        name: await cache_set(args, items, gateways, engine, client, tokenizer)
        for name, items in sets.items()
    }


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``interval`` s on its own thread (the clients' loop is too busy)."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        super().__init__(name="rss-sampler", daemon=True)
        self.process, self.interval = psutil.Process(pid), interval
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.samples.append(self.process.memory_info().rss)


async def load_test(args, gateway_url: str, gateway_pid: int) -> dict[str, Any]:
    """``clients`` loops posting one item each, back to back, on one shared connection pool (like an RL
    job's reward workers). Errors are counted per kind and by whether the connection was new or reused;
    for reused connections the idle time since their previous response is recorded."""
    items = make_items(64, args.window, "load")
    latencies: list[float] = []
    errors: dict[str, int] = {}
    judged = [0]
    last_used: dict[int, float] = {}  # connection (network stream id) -> when its last response ended
    reopened: list[float] = []  # when a client that had a connection before had to open a new one
    idle_gaps: list[float] = []
    deadline = time.monotonic() + args.load_seconds
    limits = httpx.Limits(max_connections=args.clients + 8, max_keepalive_connections=args.clients + 8)

    async def client_loop(index: int, client: httpx.AsyncClient) -> None:
        turn = index
        while time.monotonic() < deadline:
            item = items[turn % len(items)]
            turn += 1
            events: list[str] = []

            async def trace(name: str, info: dict[str, Any], events: list[str] = events) -> None:
                events.append(name)

            started = time.perf_counter()
            try:
                response = await client.post(
                    f"{gateway_url}/v1/judge", json={"items": [item]}, extensions={"trace": trace}
                )
            except httpx.HTTPError as exc:
                fresh = any(name.startswith("connection.connect_tcp") for name in events)
                key = f"{type(exc).__name__} on a {'new' if fresh else 'reused'} connection"
                errors[key] = errors.get(key, 0) + 1
                logger.warning("%s: %r (trace: %s)", key, exc, events[-3:])
                continue
            if turn > index + 1 and any(name.startswith("connection.connect_tcp") for name in events):
                reopened.append(round(started - load_started, 1))
            stream = id(response.extensions.get("network_stream"))
            if stream in last_used:
                idle_gaps.append(started - last_used[stream])
            last_used[stream] = time.perf_counter()
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
            elif response.json()["results"][0]["reward"] is None:
                errors["unjudgeable"] = errors.get("unjudgeable", 0) + 1
            else:
                judged[0] += len(item["rubrics"])

    sampler = RssSampler(gateway_pid)
    idle_rss = sampler.process.memory_info().rss
    sampler.start()
    started = load_started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:
            await asyncio.gather(*(client_loop(i, client) for i in range(args.clients)))
    finally:
        sampler.done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    latencies.sort()
    idle_gaps.sort()
    return {
        "clients": args.clients,
        "seconds": round(seconds, 1),
        "requests": len(latencies),
        "errors": errors,
        "error_count": sum(errors.values()),
        "judgements_per_s": round(judged[0] / seconds, 1),
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p99_s": percentile(latencies, 0.99),
        "connections_opened": len(last_used),
        "connections_reopened": len(reopened),
        "reopened_at_s": reopened[:50],
        "reused_idle_gap_max_s": round(idle_gaps[-1], 3) if idle_gaps else None,
        "reused_idle_gap_p99_s": percentile(idle_gaps, 0.99),
        "gateway_rss_idle_mib": round(idle_rss / 2**20, 1),
        "gateway_rss_peak_mib": round(max(sampler.samples or [idle_rss]) / 2**20, 1),
        "gateway_rss_samples": len(sampler.samples),
    }


def percentile(ordered: list[float], q: float) -> float | None:
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 3) if ordered else None


def naive_generate(args, model_dir: str, gen_tokens: int) -> dict[str, Any]:
    """One window at a time through ``model.generate`` (greedy, fp32, one thread like the engine)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verifier.judge import prompt

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


def start_gateway(engine, port: int, extra: list[str], log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "verifier.cli", "--log-level", "WARNING", "serve",
               "--engine-url", engine.url, "--port", str(port), "--max-queue", "1024",
               "--max-concurrency", "256", *extra]  # fmt: skip
    with log_path.open("wb") as log:  # the child keeps its own handle
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, 60, log_path, interval_s=0.2)
    except GatewayNotReady:
        process.kill()
        raise
    return process


async def measure(args, engine, gateways: dict[str, tuple[str, int]]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    url, pid = gateways["gateway"]
    urls = {name: gateway_url for name, (gateway_url, _) in gateways.items()}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        if "throughput" in args.parts:
            figures["throughput"] = await throughput_rounds(args, urls, engine, client)
        if "cache" in args.parts:
            figures["prefix_cache"] = await prefix_cache(args, urls, engine, client)
    if "load" in args.parts:
        figures["load"] = await load_test(args, url, pid)
    return figures


PARTS = ("throughput", "cache", "load", "naive")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model dir (default: the tiny model, built if missing)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--items", type=int, default=48, help="items per throughput round")
    parser.add_argument("--rubrics", type=int, default=20, help="rubrics per item in the throughput rounds")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument(
        "--concurrency", type=int, default=16, help="items in flight in the throughput rounds"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup-items", type=int, default=8)
    parser.add_argument("--ready-timeout", type=float, default=240.0, help="seconds for vLLM to start")
    parser.add_argument(
        "--one-gateway", action="store_true", help="skip the first-window-first gateway (shorter runs)"
    )
    parser.add_argument("--cache-items", type=int, default=6, help="synthetic answers of 6 windows")
    parser.add_argument("--trec-items", type=int, default=24, help="TREC dev answers of 2+ windows")
    parser.add_argument("--naive-windows", type=int, default=16)
    parser.add_argument(
        "--naive-tokens", type=int, default=0, help="new tokens per naive window (0: measured)"
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        help="extra vLLM flag (repeatable), e.g. --engine-arg=--block-size=128",
    )
    parser.add_argument(
        "--gateway-arg", action="append", default=[], help="extra `rubric-verifier serve` flag (repeatable)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serving.json"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # stop vLLM on the way out
    args.parts = [part for part in args.parts.split(",") if part]
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from verifier.models import build_tiny_model, default_models_dir
    from verifier.serve.engine import EngineConfig, VLLMEngine, free_port

    args.model_dir = args.model or str(build_tiny_model(default_models_dir() / "tiny", seed=0))
    figures: dict[str, Any] = {}
    if set(args.parts) - {"naive"}:
        engine_config = EngineConfig(
            model=args.model_dir, extra_args=args.engine_arg, ready_timeout_s=args.ready_timeout
        )
        with VLLMEngine(engine_config) as engine:
            flags = {"gateway": args.gateway_arg}
            # the other policy, an item's first window alone, wherever items have several windows
            multi_window = "throughput" in args.parts and args.rubrics > args.window
            if not args.one_gateway and ("cache" in args.parts or multi_window):
                flags["gateway_first_window_first"] = [*args.gateway_arg, "--warm-prefix", "true"]
            processes, gateways, logs = [], {}, {}
            try:
                for name, extra in flags.items():
                    port = free_port()
                    logs[name] = Path(tempfile.gettempdir()) / f"rv-bench-{name}-{port}.log"
                    processes.append(start_gateway(engine, port, extra, logs[name]))
                    gateways[name] = (f"http://127.0.0.1:{port}", processes[-1].pid)
                figures = asyncio.run(measure(args, engine, gateways))
            finally:
                for process in processes:
                    process.terminate()
                    process.wait(timeout=30)
            # anything the gateways logged at WARNING or above (errors the clients may not see)
            figures["gateway_log_lines"] = {
                name: [line for line in path.read_text(errors="replace").splitlines() if line.strip()][-20:]
                for name, path in logs.items()
            }
            figures["engine_command"] = engine.command()
    if "naive" in args.parts:
        tokens = args.naive_tokens or figures.get("throughput", {}).get("gen_tokens_per_window", 54)
        figures["naive"] = naive_generate(args, args.model_dir, tokens)
    if "throughput" in figures and "naive" in figures:
        figures["ratios"] = {
            "gateway_vs_naive_generate": figures["throughput"]["gateway_judgements_per_s"]
            / figures["naive"]["judgements_per_s"],
            "gateway_overhead_vs_direct_vllm": figures["throughput"]["overhead_median"],
        }
    figures["setup"] = {
        "model": args.model_dir,
        "cpus": os.cpu_count(),
        "args": vars(args),
        "command": ["flock", "/tmp/rv-heavy.lock", ".venv/bin/python", *sys.argv],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(report(figures, args))


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    lines = []
    if "throughput" in figures and "naive" in figures:
        t, n = figures["throughput"], figures["naive"]
        lines.append(
            f"rubric judgements/s: gateway {t['gateway_judgements_per_s']:.1f} | naive generate loop "
            f"{n['judgements_per_s']:.1f} | ratio {figures['ratios']['gateway_vs_naive_generate']:.1f}x "
            "(goal >= 5x)"
        )
    elif "naive" in figures:
        lines.append(f"naive generate loop: {figures['naive']['judgements_per_s']:.1f} judgements/s")
    if "throughput" in figures:
        t = figures["throughput"]
        lines += [
            f"gateway vs direct vLLM: {t['gateway_judgements_per_s']:.1f} vs "
            f"{t['direct_judgements_per_s']:.1f} judgements/s | overhead "
            f"{100 * t['overhead_median']:.1f}% (median of {args.rounds} rounds; goal <= 5%)",
            *(
                f"  {name}: {t[f'{name}_judgements_per_s']:.1f} judgements/s, item p50 "
                f"{t[f'{name}_item_latency_p50_s']}s, prefix-cache hits "
                f"{100 * t[f'{name}_prefix_cache_hit_rate']:.1f}% of prompt tokens"
                for name in ("gateway", "gateway_first_window_first", "direct")
                if f"{name}_judgements_per_s" in t
            ),
        ]
    for name, c in figures.get("prefix_cache", {}).items():
        lines.append(
            f"prefix cache, {name} ({c['items']} answers, {c['windows']} windows, "
            f"{c['prompt_tokens_per_later_window']} prompt tokens per later window): windows 2+ hit "
            f"{100 * c['direct_later_windows_hit_rate']:.1f}% (direct, after the first window returned; "
            f"shared-prefix ceiling {100 * c['prefix_share_of_later_windows']:.1f}%) | via the gateway "
            f"{100 * c['gateway_later_windows_hit_rate_derived']:.1f}% all windows at once vs "
            f"{100 * c['gateway_first_window_first_later_windows_hit_rate_derived']:.1f}% first window first "
            "(derived)"
        )
    if "load" in figures:
        load = figures["load"]
        lines += [
            f"{load['clients']} clients x {load['seconds']}s: {load['requests']} requests, "
            f"{load['error_count']} errors {load['errors']}, p50 {load['latency_p50_s']}s, "
            f"p99 {load['latency_p99_s']}s, {load['judgements_per_s']} judgements/s; "
            f"{load['connections_opened']} connections ({load['connections_reopened']} opened after a "
            f"client's first request), longest idle before reuse "
            f"{load['reused_idle_gap_max_s']}s",
            f"gateway RSS: idle {load['gateway_rss_idle_mib']} MiB, peak {load['gateway_rss_peak_mib']} MiB "
            f"({load['gateway_rss_samples']} samples at 5/s)",
        ]
    return "\n".join([*lines, f"wrote {args.out}"])


if __name__ == "__main__":
    main()
