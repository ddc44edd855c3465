"""Requests/s of the LLM client vs a raw concurrent httpx load, against one tiny-model vLLM server.

Both send identical chat bodies (max_tokens 16) from ``c`` concurrent workers; the two runs alternate
within each repetition so drift in the server (or the shared CPU) hits both alike. Reports medians.

    flock /tmp/rv-heavy.lock .venv/bin/python bench/client_saturation.py [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from rubric_pipeline.core.llm import LLMClient, LLMConfig
from verifier.serve.engine import EngineConfig, VLLMEngine

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("client_saturation")
MESSAGES = [{"role": "user", "content": "Is the sky blue? Answer briefly."}]


async def drive(send: Callable[[], Awaitable[None]], concurrency: int, requests: int) -> float:
    """``concurrency`` workers share ``requests`` calls of ``send``; returns requests/s."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await send()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start)


async def client_rate(engine: VLLMEngine, body: dict, concurrency: int, requests: int) -> float:
    config = LLMConfig(base_urls=[engine.base_url], model=engine.model_name, max_concurrency=concurrency)
    async with LLMClient(config) as client:

        async def send() -> None:
            await client.chat(MESSAGES, max_tokens=body["max_tokens"], temperature=body["temperature"])

        return await drive(send, concurrency, requests)


async def raw_rate(engine: VLLMEngine, body: dict, concurrency: int, requests: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        url = f"{engine.base_url}/chat/completions"

        async def send() -> None:
            response = await http.post(url, json=body)
            response.raise_for_status()

        return await drive(send, concurrency, requests)


async def measure(engine: VLLMEngine, levels: list[int], requests: int | None, repeats: int) -> dict:
    # exactly the body LLMClient.chat builds for these arguments
    body = {"model": engine.model_name, "messages": MESSAGES, "max_tokens": 16, "temperature": 0.0, "n": 1}
    await raw_rate(engine, body, 8, 32)  # warm-up: connections, prefix cache
    runs: dict[int, dict[str, list[float]]] = {c: {"client": [], "raw": []} for c in levels}
    for rep in range(repeats):
        for c in levels:
            order = [("client", client_rate), ("raw", raw_rate)]
            n = requests or max(96, 8 * c)
            for name, rate in order if rep % 2 == 0 else order[::-1]:
                runs[c][name].append(await rate(engine, body, c, n))
            logger.info("rep %d c=%d client %.1f raw %.1f", rep, c, runs[c]["client"][-1], runs[c]["raw"][-1])
    results = []
    for c in levels:
        client, raw = statistics.median(runs[c]["client"]), statistics.median(runs[c]["raw"])
        results.append(
            {
                "concurrency": c,
                "requests_per_run": requests or max(96, 8 * c),
                "client_rps": client,
                "raw_rps": raw,
                "ratio": client / raw,
                "runs": runs[c],
            }
        )
    return {"repeats": repeats, "max_tokens": 16, "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(REPO / ".cache" / "models" / "tiny"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--requests", type=int, default=None, help="requests per run (default: max(96, 8c))")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-threads", default=None, help="cores for vLLM, e.g. 0-1 (default: vLLM's)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "client_saturation.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request would load the CPU

    model_dir = Path(args.model_dir).resolve()
    if not (model_dir / "config.json").exists():
        from verifier.models import build_tiny_model

        build_tiny_model(model_dir, seed=0)
    engine_config = EngineConfig(model=str(model_dir), max_model_len=512, cpu_threads=args.cpu_threads)
    with VLLMEngine(engine_config) as engine:
        report = asyncio.run(measure(engine, args.concurrency, args.requests, args.repeats))

    report |= {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model_dir": str(model_dir),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"{'concurrency':>11} {'client req/s':>13} {'raw req/s':>10} {'client/raw':>10}")
    for row in report["results"]:
        c, client, raw, ratio = row["concurrency"], row["client_rps"], row["raw_rps"], row["ratio"]
        print(f"{c:>11} {client:>13.1f} {raw:>10.1f} {ratio:>10.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
