"""Every judge that runs here against NIST's TREC RAG 2024 nugget assignments (the shared sample).

Baselines are fitted on dev.jsonl only; every judge is scored on test.jsonl, which is read by path and
never trained or calibrated on. Judges: the majority-label floor, lexical overlap, MiniLM embedding
similarity, and Gemma-3-270M served by vLLM zero-shot through LLMJudge (constrained JSON output).

    flock /tmp/rv-heavy.lock .venv/bin/python bench/trec_judges.py

Prints one table per judge and a side-by-side summary; writes bench/results/trec_judges.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rubric_pipeline.trec import read_trec_labelled
from verifier.eval.evaluate import build_report, format_comparison, format_table
from verifier.judge.judges import judge_all

logger = logging.getLogger("bench.trec_judges")
ROOT = Path(__file__).resolve().parents[1]
TREC_DIR = ROOT.parent / "shared" / "data" / "trec_rag24"


async def score(judge: Any, test: list, concurrency: int, extra: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    judgements = await judge_all(judge, test, concurrency=concurrency)
    wall_s = time.perf_counter() - start
    report = build_report(test, judgements, judge=judge.name, wall_s=wall_s, extra=extra)
    print(format_table(report), "\n", flush=True)
    return report


async def run_baselines(dev: list, test: list, judges: list[str]) -> list[dict[str, Any]]:
    from verifier.judge.baselines import EmbeddingJudge, LexicalJudge, MajorityJudge

    factories = {"majority": MajorityJudge, "lexical": LexicalJudge, "embedding": EmbeddingJudge}
    reports = []
    for name in judges:
        judge = factories[name]()
        start = time.perf_counter()
        judge.fit(dev)
        fit_s = time.perf_counter() - start
        extra = {"params": judge.params(), "fit_s": fit_s, "fit_on": "dev.jsonl"}
        if hasattr(judge, "fit_macro_f1"):
            extra["dev_macro_f1"] = judge.fit_macro_f1
        reports.append(await score(judge, test, concurrency=4, extra=extra))
    return reports


async def run_llm(model_dir: Path, test: list, args: argparse.Namespace) -> dict[str, Any]:
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.judge.judges import LLMJudge
    from verifier.judge.prompt import PROMPT_VERSION
    from verifier.serve.engine import EngineConfig, VLLMEngine

    engine_config = EngineConfig(
        model=str(model_dir),
        max_model_len=args.max_model_len,
        kv_cache_gib=args.kv_cache_gib,
        cpu_threads=args.cpu_threads,
        log_path=str(ROOT / ".cache" / "bench" / "trec_judges_vllm.log"),
    )
    start = time.perf_counter()
    with VLLMEngine(engine_config) as engine:
        ready_s = time.perf_counter() - start
        config = LLMConfig(
            base_urls=[engine.base_url],
            model=engine.model_name,
            max_concurrency=args.llm_concurrency,
            timeout_s=600,
        )
        async with LLMClient(config) as client:
            judge = LLMJudge(client, window=args.window, name="gemma-3-270m (vLLM, zero-shot)")
            extra = {
                "model_dir": str(model_dir),
                "engine_ready_s": ready_s,
                "window": args.window,
                "prompt_version": PROMPT_VERSION,
                "max_model_len": args.max_model_len,
            }
            report = await score(judge, test, concurrency=args.llm_concurrency, extra=extra)
            report["llm_usage"] = vars(client.usage) if hasattr(client.usage, "__dict__") else client.usage
    return report


def main() -> None:
    from verifier.models import default_models_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", default=str(TREC_DIR / "dev.jsonl"))
    parser.add_argument("--test", default=str(TREC_DIR / "test.jsonl"))
    parser.add_argument("--judges", nargs="*", default=["majority", "lexical", "embedding", "gemma"])
    parser.add_argument("--gemma", default=str(default_models_dir() / "gemma-3-270m"))
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--kv-cache-gib", type=int, default=2)
    parser.add_argument("--cpu-threads", default="0-1")
    parser.add_argument("--llm-concurrency", type=int, default=16, help="items (and requests) in flight")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test records")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "trec_judges.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    dev, test = read_trec_labelled(args.dev), read_trec_labelled(args.test)
    if args.limit:
        test = test[: args.limit]
    if {ex.qid for ex in dev} & {ex.qid for ex in test}:
        raise SystemExit("dev and test share topics: refusing to fit on test")
    reports = asyncio.run(run_baselines(dev, test, [j for j in args.judges if j != "gemma"]))
    if "gemma" in args.judges:
        model_dir = Path(args.gemma)
        if (model_dir / "config.json").exists():
            reports.append(asyncio.run(run_llm(model_dir, test, args)))
        else:
            logger.warning(
                "Gemma-3-270M not built at %s: skipped (rubric-verifier models gemma-270m)", model_dir
            )
    print(format_comparison(reports))
    result = {
        "command": "flock /tmp/rv-heavy.lock .venv/bin/python bench/trec_judges.py",
        "test": {"records": len(test), "rubrics": sum(len(ex.rubrics) for ex in test)},
        "dev": {"records": len(dev), "rubrics": sum(len(ex.rubrics) for ex in dev)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "reports": reports,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
