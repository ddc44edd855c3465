"""TREC RAG 2024 test judged through the reward gateway: `rubric-verifier serve --model DIR`, `/v1/judge`.

``bench/trec_rag24.py`` judges through the verifier's contract (``LLMJudge`` on a vLLM engine) and applies
the calibration in the bench. This script takes the deployment a user would run instead: the gateway on
the model folder, whose ``calibration.json`` (written by ``trec_rag24.py --save-calibration``) decides the
labels of ``"calibrated": true`` requests. Every test answer is posted with its NIST nuggets as rubrics;
the labels that come back are scored with the same metrics, topic bootstrap and paired difference to the
lexical judge (fitted on dev) as the results table, and compared label by label with the bench's own
decisions from its judgement cache when that exists.

    flock /tmp/rv-heavy.lock .venv/bin/python bench/trec_served.py --model runs/x/average/merged --window 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: ``bench`` importable
from bench.trec_rag24 import (
    CACHE,
    TREC_DIR,
    cache_path,
    flat,
    labels_of,
    labels_probs,
    model_key,
    project_relative,
    test_figures,
    word_recalls,
)
from rubric_pipeline.trec import read_trec_labelled
from verifier.judge.calibration import Calibration, find_calibration
from verifier.serve.engine import free_port
from verifier.serve.launch import serve_command, wait_healthy

logger = logging.getLogger("bench.trec_served")
ROOT = Path(__file__).resolve().parents[1]


def start_gateway(args: argparse.Namespace, port: int, log_path: Path) -> subprocess.Popen:
    command = serve_command(
        *("--model", args.model, "--port", str(port), "--window", str(args.window)),
        *("--max-model-len", str(args.max_model_len), "--kv-cache-gib", str(args.kv_cache_gib)),
        *("--cpu-threads", args.cpu_threads, "--item-timeout-s", "1800", "--engine-timeout-s", "900"),
    )
    logger.info("starting: %s", " ".join(command[1:]))
    with log_path.open("wb") as log:  # the child keeps its own handle
        return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


async def judge_via_gateway(url: str, test: list, batch: int, concurrency: int) -> list[dict]:
    """One result per test answer from ``/v1/judge`` (``calibrated`` labels and their probabilities)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def post(client: httpx.AsyncClient, part: list) -> list[dict]:
        items = [
            {
                "question": ex.question,
                "response": ex.response,
                "rubrics": [r.model_dump() for r in ex.rubrics],
            }
            for ex in part
        ]
        async with semaphore:
            response = await client.post(
                f"{url}/v1/judge", json={"items": items, "calibrated": True, "return_probs": True}
            )
        response.raise_for_status()
        results = response.json()["results"]
        return [{"response_id": ex.response_id, **r} for ex, r in zip(part, results, strict=True)]

    async with httpx.AsyncClient(timeout=3600) as client:
        parts = [test[i : i + batch] for i in range(0, len(test), batch)]
        return [r for rs in await asyncio.gather(*(post(client, p) for p in parts)) for r in rs]


def bench_labels(model_dir: Path, window: int, test: list, calibration: Calibration) -> list[str] | None:
    """The labels ``trec_rag24.py`` decides for this model from its cached test judgements, if cached."""
    path = cache_path(model_dir, window, "test")
    if not path.is_file():
        return None
    judged = [json.loads(line) for line in path.read_text().splitlines()]
    _, probs, _ = labels_probs(test, judged)
    return calibration.labels(probs, word_recalls(test))


def main() -> None:
    from verifier.judge.baselines import LexicalJudge

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder holding calibration.json")
    parser.add_argument("--name", default=None, help="row name (default: the model folder)")
    parser.add_argument("--dev", default=str(TREC_DIR / "dev.jsonl"), help="fits the lexical reference")
    parser.add_argument("--test", default=str(TREC_DIR / "test.jsonl"))
    parser.add_argument("--window", type=int, default=10, help="rubrics per engine request")
    parser.add_argument("--batch", type=int, default=4, help="answers per /v1/judge request")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--kv-cache-gib", type=int, default=2)
    parser.add_argument("--cpu-threads", default="0-1")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "trec_served.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model_dir = Path(args.model)
    calibration = find_calibration(str(model_dir))
    if calibration is None:
        raise SystemExit(
            f"{model_dir}: no calibration.json (bench/trec_rag24.py --save-calibration writes it)"
        )
    dev, test = read_trec_labelled(args.dev), read_trec_labelled(args.test)
    gold, topics = flat(test)
    lexical = asyncio.run(labels_of(LexicalJudge().fit(dev), test))

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    CACHE.mkdir(parents=True, exist_ok=True)
    log_path = CACHE / f"{model_key(model_dir)}-gateway.log"
    gateway = start_gateway(args, port, log_path)
    try:
        wait_healthy(url, gateway, 600, log_path, interval_s=2)
        started = time.perf_counter()
        results = asyncio.run(judge_via_gateway(url, test, args.batch, args.concurrency))
        wall_s = time.perf_counter() - started
    finally:
        gateway.terminate()
        gateway.wait(timeout=120)
    labels, _, unjudgeable = labels_probs(test, results)
    figures = test_figures(gold, labels, topics, lexical)
    reference = bench_labels(model_dir, args.window, test, calibration)
    row = {
        "judge": args.name or model_dir.name,
        "model_dir": project_relative(model_dir),
        "calibration": {"method": calibration.method, "params": calibration.params},
        "window": args.window,
        **figures,
        "unjudgeable_rubrics": unjudgeable,
        "degenerate_answers": sum(r["reason"] == "degenerate" for r in results),
        "same_labels_as_bench": (
            None
            if reference is None
            else round(sum(a == b for a, b in zip(labels, reference, strict=True)) / len(labels), 4)
        ),
        "wall_s": round(wall_s, 1),
        "command": "flock /tmp/rv-heavy.lock .venv/bin/python " + " ".join(sys.argv),
    }
    paired = row["vs_lexical"]
    print(
        f"{row['judge']}: served test macro-F1 {row['macro_f1']:.3f} {row['macro_f1_ci']}, vs lexical "
        f"{paired['macro_f1_diff']:+.3f} {paired['diff_ci']} (ahead {paired['share_ahead']:.0%}); "
        f"labels equal to the bench's: {row['same_labels_as_bench']}; {wall_s:.0f} s"
    )
    output = Path(args.output)
    rows = json.loads(output.read_text()) if output.exists() else []
    rows = [r for r in rows if r["judge"] != row["judge"]] + [row]
    output.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
