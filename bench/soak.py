"""Soak: `rubric-verifier serve` (and the engine it starts) under steady load, the engine killed by SIGKILL.

Pass criteria: every request answered (HTTP 200 with a reward, or with reward None and a reason), none
lost (no transport error, no 5xx, no timeout), the engine restarted after each kill and judging again,
the gateway's RSS within 10% of its value after warm-up, and no vLLM process left after the gateway stops.

    flock /tmp/rv-heavy.lock .venv/bin/python bench/soak.py --duration-s 1800 --kills 2   # the full soak
    flock /tmp/rv-heavy.lock .venv/bin/python bench/soak.py --duration-s 180 --kills 1    # a short one

Writes bench/results/soak.json (or --output).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from verifier.serve.launch import GatewayNotReady, serve_command, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Which river flows through the city of Varn?"
RUBRICS = ["The response names the Sella river.", "It gives a year.", "It names a surveyor.", "It is short."]


def free_port() -> int:
    from verifier.serve.engine import free_port as pick

    return pick()


def vllm_server(gateway: psutil.Process) -> psutil.Process | None:
    for child in gateway.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
                return child
    return None


def vllm_left(port: int, groups: set[int]) -> list[int]:
    """Live processes of the engine's process groups (every one this soak saw), or naming its port."""
    left = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            in_group = os.getpgid(process.pid) in groups and process.status() != psutil.STATUS_ZOMBIE
            if in_group or f"--port {port}" in " ".join(process.info["cmdline"] or []):
                left.append(process.pid)
    return left


async def worker(client: httpx.AsyncClient, url: str, stop_at: float, tally: Counter, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < stop_at:
        n = rng.randint(1, len(RUBRICS))
        response = f"The Sella river flows through Varn ({rng.random():.6f}); mapped in 1821 by Ima Tork."
        item = {"question": QUESTION, "response": response, "rubrics": RUBRICS[:n]}
        try:
            answer = await client.post(f"{url}/v1/judge", json={"items": [item]})
        except httpx.HTTPError as exc:
            tally[f"lost:{type(exc).__name__}"] += 1
            continue
        if answer.status_code != 200:
            tally[f"http {answer.status_code}"] += 1
            continue
        result = answer.json()["results"][0]
        if result["reward"] is not None:
            tally["judged"] += 1
        elif result["reason"]:
            tally[f"unjudgeable:{result['reason']}"] += 1
        else:
            tally["lost:no reason"] += 1


async def restarted(client: httpx.AsyncClient, url: str, restarts: int) -> bool:
    """Whether /health is 200 with the engine restarted ``restarts`` times."""
    try:
        answer = await client.get(f"{url}/health", timeout=5)
    except httpx.HTTPError:
        return False
    detail = answer.json().get("engine_detail", {}).values()
    return answer.status_code == 200 and sum(entry["restarts"] for entry in detail) >= restarts


async def drive(args: argparse.Namespace, url: str, gateway: psutil.Process) -> dict[str, Any]:
    tally: Counter = Counter()
    start = time.monotonic()
    stop_at = start + args.duration_s
    kill_times = [start + args.duration_s * (i + 1) / (args.kills + 1) for i in range(args.kills)]
    rss: list[tuple[float, int]] = []
    kills: list[dict[str, Any]] = []
    groups: set[int] = set()
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=args.request_timeout_s, limits=limits) as client:
        workers = [
            asyncio.create_task(worker(client, url, stop_at, tally, seed)) for seed in range(args.concurrency)
        ]
        while time.monotonic() < stop_at:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            rss.append((now - start, gateway.memory_info().rss))
            if (server := vllm_server(gateway)) is not None:
                groups.add(os.getpgid(server.pid))
            if kill_times and now >= kill_times[0]:
                kill_times.pop(0)
                server = vllm_server(gateway)
                if server is not None:
                    os.kill(server.pid, signal.SIGKILL)
                    kills.append({"at_s": now - start, "pid": server.pid, "judged_before": tally["judged"]})
                    print(f"[{now - start:7.1f}s] killed vLLM pid {server.pid}", flush=True)
            for number, kill in enumerate(kills, start=1):
                if "restarted_s" not in kill and await restarted(client, url, number):
                    kill["restarted_s"], kill["judged_at_restart"] = (
                        now - start - kill["at_s"],
                        tally["judged"],
                    )
                    print(
                        f"[{now - start:7.1f}s] engine restarted after {kill['restarted_s']:.1f}s", flush=True
                    )
                resumed = "restarted_s" in kill and tally["judged"] > kill["judged_at_restart"]
                if resumed and "judging_again_s" not in kill:  # rewards again, after the restart
                    kill["judging_again_s"] = now - start - kill["at_s"]
        await asyncio.gather(*workers)
    warm = [value for t, value in rss if t >= args.warmup_s]
    baseline = warm[0] if warm else rss[-1][1]
    return {
        "tally": dict(tally),
        "engine_groups": sorted(groups),
        "requests": sum(tally.values()),
        "kills": kills,
        "rss_mib": {"after_warmup": baseline / 2**20, "max": max(warm or [baseline]) / 2**20,
                    "last": rss[-1][1] / 2**20},
        "rss_max_ratio": max(warm or [baseline]) / baseline,
        "rss_samples": [(round(t, 1), round(v / 2**20, 1)) for t, v in rss[:: max(1, len(rss) // 120)]],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models = Path(os.environ.get("RV_MODELS_DIR") or ROOT / ".cache" / "models")
    parser.add_argument("--model", default=str(models / "tiny"), help="default: the tiny test model")
    parser.add_argument("--duration-s", type=float, default=1800.0)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="clients sending requests back to back")
    parser.add_argument("--warmup-s", type=float, default=None, help="default: 10%% of the duration")
    parser.add_argument("--request-timeout-s", type=float, default=300.0)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = parser.parse_args()
    args.warmup_s = args.duration_s * 0.1 if args.warmup_s is None else args.warmup_s
    port, engine_port = free_port(), free_port()
    log = Path(tempfile.mkdtemp(prefix="rv-soak-")) / "serve.log"
    command = serve_command("--model", args.model, "--port", str(port), "--engine-port", str(engine_port),
                            "--health-interval-s", "0.5", "--max-restarts", str(args.kills + 2))  # fmt: skip
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=handle)
    url, health = f"http://127.0.0.1:{port}", {}
    try:
        try:
            wait_healthy(url, process, 300, log)
        except GatewayNotReady as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"gateway up on {url}; soak for {args.duration_s:g}s with {args.kills} kill(s)", flush=True)
        report = asyncio.run(drive(args, url, psutil.Process(process.pid)))
        health = httpx.get(f"{url}/health", timeout=10).json()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    time.sleep(2)
    left = vllm_left(engine_port, set(report["engine_groups"]))
    report |= {"gateway_exit": code, "health_at_end": health, "vllm_left": left,
               "duration_s": args.duration_s, "concurrency": args.concurrency, "log": str(log)}  # fmt: skip
    lost = {k: v for k, v in report["tally"].items() if not k.startswith(("judged", "unjudgeable:"))}
    checks = {
        "every request answered, none lost": not lost and report["requests"] > 0,
        "judging again after every kill": len(report["kills"]) == args.kills
        and all("judging_again_s" in k for k in report["kills"]),
        "gateway RSS within 10% after warm-up": report["rss_max_ratio"] <= 1.10,
        "no vLLM process left": not report["vllm_left"],
    }
    report["checks"] = checks
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("tally", "kills", "rss_mib", "rss_max_ratio")}, indent=2))
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"wrote {args.output}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
