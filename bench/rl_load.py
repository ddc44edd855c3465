"""RL-style load on the reward gateway: N single-sample calls in flight at once, tiny model, one engine.

Two clients side by side in one run, against one gateway process (``rubric-verifier serve --engine-url``):
``verl``: N concurrent ``verifier.integrations.verl.compute_score`` calls in one process (verl's reward loop
awaits one per sample; the adapter's pooled client carries them); ``openrlhf``: N concurrent ``/get_reward``
requests, each on its own connection as OpenRLHF's executor opens one per sample. An error is anything but
an answer carrying a judged reward: an HTTP error, a gateway error, or an unjudgeable sample.

    flock /tmp/rv-heavy.lock timeout 900 .venv/bin/python bench/rl_load.py --calls 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from verifier.hardware import speed_flags
from verifier.integrations.openrlhf import rubrics_label
from verifier.integrations.verl import compute_score
from verifier.serve.engine import EngineConfig, VLLMEngine, free_port

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("rl_load")
QUESTION = "Which river flows through the city of Varn?"
RUBRICS = ["Names the Sella river.", {"text": "Gives a year.", "importance": "okay"}, "Mentions a surveyor."]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def verl_calls(url: str, n: int) -> tuple[list[float], Counter, float]:
    async def one(i: int) -> tuple[float, str | None]:
        started = time.perf_counter()
        result = await compute_score(
            "rubric_qa", f"The Sella river, answer {i}.", RUBRICS, {"question": QUESTION}, url=url
        )
        if result["gateway_error"]:
            return time.perf_counter() - started, "gateway_error"
        judged = result["judged"] + result["degenerate"] == 1.0
        return time.perf_counter() - started, None if judged else "unjudgeable"

    start = time.perf_counter()
    outcomes = await asyncio.gather(*(one(i) for i in range(n)))
    return [t for t, _ in outcomes], Counter(e for _, e in outcomes if e), time.perf_counter() - start


async def openrlhf_calls(url: str, n: int) -> tuple[list[float], Counter, float]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    label, prompt = rubrics_label(RUBRICS, question=QUESTION), f"Question: {QUESTION}\nAnswer: "
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(180.0, pool=None)) as http:

        async def one(i: int) -> tuple[float, str | None]:
            query = f"{prompt}The Sella river, answer {i}."
            body = {"query": [query], "prompts": [prompt], "labels": [label]}
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/get_reward", json=body)
            except httpx.HTTPError as exc:
                return time.perf_counter() - started, type(exc).__name__
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                return elapsed, f"HTTP {response.status_code}"
            logs = response.json()["extra_logs"]
            if logs["judged"] == [1.0]:
                return elapsed, None
            flags = [key for key, value in logs.items() if key.startswith("unjudgeable/") and value == [1.0]]
            return elapsed, flags[0] if flags else "unjudgeable"

        start = time.perf_counter()
        outcomes = await asyncio.gather(*(one(i) for i in range(n)))
    return [t for t, _ in outcomes], Counter(e for _, e in outcomes if e), time.perf_counter() - start


def start_gateway(engine: VLLMEngine, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "verifier.cli", "serve", "--engine-url", engine.url, "--port", str(port)]
    gateway = subprocess.Popen(command, env=os.environ | {"PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    gateway.terminate()
    raise RuntimeError("the gateway did not come up")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(REPO / ".cache" / "models" / "tiny"))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--clients", nargs="+", default=["verl", "openrlhf"], choices=["verl", "openrlhf"])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "rl_load.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    rows = []
    with VLLMEngine(EngineConfig(model=str(Path(args.model_dir).resolve()), max_model_len=2048)) as engine:
        port = free_port()
        gateway = start_gateway(engine, port)
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(verl_calls(url, 16))  # warm-up: connections, prefix cache
            clients = {"verl": verl_calls, "openrlhf": openrlhf_calls}
            for name in args.clients:
                latencies, error_kinds, wall = asyncio.run(clients[name](url, args.calls))
                errors = sum(error_kinds.values())
                rows.append(
                    {
                        "client": name,
                        "calls": args.calls,
                        "errors": errors,
                        "error_kinds": dict(error_kinds),
                        "p50_s": statistics.median(latencies),
                        "p99_s": percentile(latencies, 0.99),
                        "judgements_per_s": (args.calls - errors) / wall,
                        "wall_s": wall,
                    }
                )
                logger.info("%s", rows[-1])
        finally:
            gateway.terminate()  # its answers to clients that timed out are cancelled, so it stops at once
            try:
                gateway.wait(timeout=60)
            except subprocess.TimeoutExpired:
                gateway.kill()
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpus": os.cpu_count(),
        "cpu_flags": speed_flags(),
        "machine": platform.processor() or platform.machine(),
        "rubrics_per_call": len(RUBRICS),
        "results": rows,
    }
    print(f"{'client':>9} {'calls':>6} {'errors':>6} {'p50 s':>7} {'p99 s':>7} {'judgements/s':>12}")
    for r in rows:
        print(
            f"{r['client']:>9} {r['calls']:>6} {r['errors']:>6} {r['p50_s']:>7.2f} {r['p99_s']:>7.2f} "
            f"{r['judgements_per_s']:>12.1f}"
        )
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
