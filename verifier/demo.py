"""`rubric-verifier demo`: every stage of the toolkit on the embedded demo world, end to end.

Each step runs the real subcommand (in-process, the same argv a user would type) and the summary reads the
files those commands wrote. Serving runs `rubric-verifier serve` as a real subprocess and calls its gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rubric_pipeline.core.config import add_config_arguments, build_config, option
from rubric_pipeline.core.errors import RubricVerifierError
from rubric_pipeline.core.llm import LLMClient, LLMConfig
from rubric_pipeline.core.records import LabelledExample, iter_jsonl, write_jsonl
from rubric_pipeline.demo_world import generate_world
from verifier.cli import main
from verifier.demo_summary import render_summary, served_complete
from verifier.eval.metrics import macro_f1
from verifier.judge.calibration import fit_calibration
from verifier.judge.hints import Hints, model_hints
from verifier.judge.judges import LLMJudge
from verifier.models import default_models_dir
from verifier.serve.engine import EngineConfig, VLLMEngine, free_port
from verifier.serve.launch import serve_command, wait_healthy
from verifier.train.data import split_by_question

logger = logging.getLogger(__name__)

WORLD_FILES = ("corpus.jsonl", "questions.jsonl", "gold.jsonl", "responses.jsonl")


@dataclass
class DemoConfig:
    output: str = option("runs/demo", help="folder for everything the demo writes")
    world: str = option(
        "",
        help="demo world folder (corpus, questions, gold, responses); empty: generate the seed-0 world "
        "(the files of the repository's data/demo) into OUTPUT/world",
    )
    gemma_model: str = option("", help="Gemma-3-270M folder; default RV_MODELS_DIR/gemma-3-270m")
    llm_build_questions: int = option(3, help="questions built with Gemma (the offline build does all)")
    llm_build_passages: int = option(3, help="passages per question sent to Gemma for nugget extraction")
    heldout_fraction: float = option(0.25, help="fraction of questions held out from training")
    heldout_families: list[str] = option(["multilingual"], help="master-key families kept out of training")
    eval_real_examples: int = option(20, help="held-out responses judged in each evaluation")
    eval_keys_per_family: int = option(4, help="master-key negatives per family judged in each evaluation")
    train: bool = option(True, help="run stage 1 SFT (off: stop after zero-shot evaluation)")
    calibrate: bool = option(
        True,
        help="fit label thresholds on training questions' responses, ship them as calibration.json in the "
        "trained model folder, and also score through /v1/judge with calibrated labels",
    )
    calibration_examples: int = option(40, help="training-split responses judged to fit the calibration")
    engine_max_model_len: int = option(2048, help="context length of the demo engines")
    engine_cpu_threads: str | None = option(None, help="cores the demo engines use, e.g. '0-1'")
    seed: int = option(0, help="seed for the split")


class Demo:
    """Runs the steps in order, timing each, and collects one summary."""

    def __init__(self, config: DemoConfig, recipe: str | None):
        self.config, self.recipe = config, recipe
        self.out = Path(config.output)
        self.world = Path(config.world) if config.world else self.out / "world"
        self.steps: list[tuple[str, float]] = []
        self.summary: dict[str, Any] = {}

    def step(self, name: str, action: Callable[[], Any]) -> Any:
        print(f"\n=== {name}", flush=True)
        start = time.perf_counter()
        result = action()
        self.steps.append((name, time.perf_counter() - start))
        return result

    def cli(self, *argv: str) -> None:
        code = main([str(arg) for arg in argv])
        if code != 0:
            raise RubricVerifierError(f"`rubric-verifier {' '.join(map(str, argv))}` exited with {code}")

    def recipe_args(self) -> list[str]:
        return ["--recipe", self.recipe] if self.recipe else []

    # ------------------------------------------------------------------ steps

    def write_world(self) -> Path:
        """The given world folder, or the seed-0 demo world generated (once) into OUTPUT/world: the demo
        needs nothing from a source checkout."""
        if not self.config.world and not all((self.world / name).is_file() for name in WORLD_FILES):
            generate_world(seed=0).write(self.world)
        missing = [name for name in WORLD_FILES if not (self.world / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.world}: not a demo world folder (no {', '.join(missing)})")
        return self.world

    def build(self, name: str, *extra: str) -> dict[str, Any]:
        target = self.out / name
        world = self.world
        self.cli(
            "build", *self.recipe_args(), "--output", target, "--corpus", world / "corpus.jsonl",
            "--questions", world / "questions.jsonl", "--gold", world / "gold.jsonl",
            "--index-dir", self.out / "index", *extra,
        )  # fmt: skip
        return json.loads((target / "stats.json").read_text())

    def split_responses(self) -> tuple[Path, Path]:
        path = self.world / "responses.jsonl"
        examples = [LabelledExample.from_dict(record) for _, record in iter_jsonl(path)]
        train, heldout = split_by_question(examples, self.config.heldout_fraction, self.config.seed)
        labels = self.out / "labels"
        write_jsonl(labels / "train.jsonl", [e.to_dict() for e in train])
        write_jsonl(labels / "heldout.jsonl", [e.to_dict() for e in heldout])
        self.summary["split"] = {
            "train_examples": len(train),
            "heldout_examples": len(heldout),
            "heldout_questions": len({e.qid for e in heldout}),
        }
        return labels / "train.jsonl", labels / "heldout.jsonl"

    def augment(self, source: Path, name: str) -> Path:
        target = self.out / name
        self.cli(
            "augment", *self.recipe_args(), "--input", source, "--output", target,
            "--heldout-families", *self.config.heldout_families,
        )  # fmt: skip
        return target

    def heldout_eval_set(self, heldout: Path, augmented: Path) -> Path:
        """Held-out questions' real responses plus master keys of every family (held-out ones included)."""
        from datasets import load_from_disk

        rows = [record for _, record in iter_jsonl(heldout)][: self.config.eval_real_examples]
        per_family: dict[str, int] = {}
        for split in load_from_disk(str(augmented)).values():
            for row in split:
                family = row["label_source"].removeprefix("augment:")
                if not row["label_source"].startswith("augment:") or family == "regroup":
                    continue
                if per_family.get(family, 0) < self.config.eval_keys_per_family:
                    per_family[family] = per_family.get(family, 0) + 1
                    rows.append(row)
        path = self.out / "labels" / "heldout_eval.jsonl"
        write_jsonl(path, rows)
        return path

    def evaluate(
        self, name: str, data: Path, base_url: str, model: str, hints: Hints = "none"
    ) -> dict[str, Any]:
        report = self.out / "eval" / f"{name}.json"
        # The guard is off so the master-key rate measures the model itself, not the gateway's guard.
        self.cli(
            "eval", "--judge", "llm", "--llm-url", base_url, "--model", model, "--data", data,
            "--output", report, "--heldout-families", *self.config.heldout_families,
            "--degenerate-guard", "false", "--timeout-s", "600", "--hints", hints,
        )  # fmt: skip
        return json.loads(report.read_text())

    def train_sft(self, train_aug: Path) -> Path:
        train_rows = self.out / "labels" / "train_augmented.jsonl"
        from datasets import load_from_disk

        write_jsonl(train_rows, (row for row in load_from_disk(str(train_aug))["train"]))
        target = self.out / "sft"
        self.cli("train", "sft", *self.recipe_args(), "--model", self.gemma_dir(), "--data", train_rows,
                 "--output-dir", target)  # fmt: skip
        return target / "merged"

    def gemma_dir(self) -> str:
        if self.config.gemma_model:
            return self.config.gemma_model
        return str(default_models_dir() / "gemma-3-270m")

    def serve_evaluate_and_score(self, model_dir: Path, eval_set: Path) -> None:
        """Start `rubric-verifier serve` as users do; evaluate via its engine, then score via the gateway."""
        if self.config.calibrate:  # before serving: the gateway loads calibration.json at start-up
            engine = self.engine(str(model_dir), "engine-calibrate.log")
            with self.step("start vLLM with the trained verifier", engine.start):
                self.summary["calibration"] = self.step(
                    "calibrate label thresholds on training questions",
                    lambda: self.calibrate(model_dir, engine.base_url, engine.model_name),
                )

        port, engine_port = free_port(), free_port()
        log = (self.out / "serve.log").open("w")
        command = serve_command(
            *("--model", str(model_dir), "--port", str(port), "--engine-port", str(engine_port)),
            *("--served-model-name", "verifier", "--max-model-len", str(self.config.engine_max_model_len)),
        )
        if self.config.engine_cpu_threads:
            command += ["--cpu-threads", self.config.engine_cpu_threads]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        gateway = f"http://127.0.0.1:{port}"
        try:
            self.step(
                "start `rubric-verifier serve` (vLLM + gateway)",
                lambda: wait_healthy(gateway, process, 300, self.out / "serve.log"),
            )
            engine_url = f"http://127.0.0.1:{engine_port}/v1"
            self.summary["eval_sft"] = self.step(
                "evaluate the trained verifier on held-out questions",
                lambda: self.evaluate("gemma-sft", eval_set, engine_url, "verifier", model_hints(model_dir)),
            )
            self.summary["served"] = self.step("score through /v1/judge", lambda: self.score(gateway))
            self.summary["served_complete"] = served_complete(self.summary["served"])
            if self.config.calibrate:
                self.summary["served_calibrated"] = self.step(
                    "score through /v1/judge, calibrated", lambda: self.score(gateway, calibrated=True)
                )
                self.summary["served_complete_calibrated"] = served_complete(
                    self.summary["served_calibrated"]
                )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()

    def calibrate(self, model_dir: Path, base_url: str, model: str) -> dict[str, Any]:
        """Fit ``bias`` calibration on real responses of training questions (never the held-out ones)."""
        rows = [LabelledExample.from_dict(r) for _, r in iter_jsonl(self.out / "labels" / "train.jsonl")]
        examples = rows[: self.config.calibration_examples]

        async def judge_all_with_probs() -> list[Any]:
            config = LLMConfig(base_urls=[base_url], model=model, timeout_s=600)
            async with LLMClient(config) as client:
                judge = LLMJudge(client, degenerate_guard=False, hints=model_hints(model_dir))
                return await asyncio.gather(
                    *(judge.judge(e.question, e.response, list(e.rubrics), with_probs=True) for e in examples)
                )

        probs, gold, unjudgeable = [], [], 0
        for example, judgement in zip(examples, asyncio.run(judge_all_with_probs()), strict=True):
            if judgement.probs is None:
                unjudgeable += 1
                continue
            probs += judgement.probs
            gold += example.labels
        if not gold:
            raise RuntimeError(f"calibration: none of {len(examples)} training responses could be judged")
        calibration = fit_calibration(
            probs, gold, "bias", fitted_on=f"demo training split ({len(gold)} rubrics)"
        )
        calibration.save(model_dir)
        argmax = [max(p, key=p.get) for p in probs]
        return {
            "params": calibration.params,
            "fit_macro_f1": calibration.fit_macro_f1,
            "argmax_macro_f1": macro_f1(gold, argmax),
            "rubrics": len(gold),
            "unjudgeable_examples": unjudgeable,
        }

    def score(self, gateway: str, calibrated: bool = False) -> list[dict[str, Any]]:
        items = self.scoring_items()
        body: dict[str, Any] = {
            "items": [{k: item[k] for k in ("question", "response", "rubrics")} for item in items]
        }
        if calibrated:
            body["calibrated"] = True
        response = httpx.post(f"{gateway}/v1/judge", json=body, timeout=600)
        response.raise_for_status()
        results = response.json()["results"]
        return [item | {"result": result} for item, result in zip(items, results, strict=True)]

    def scoring_items(self) -> list[dict[str, Any]]:
        """Every complete answer of a held-out question (never trained on), then master keys."""
        heldout = [LabelledExample.from_dict(r) for _, r in iter_jsonl(self.out / "labels" / "heldout.jsonl")]
        picked = [e for e in heldout if e.response_id.endswith("-complete")] or heldout[:2]
        base = picked[0]
        rubrics = [rubric.text for rubric in base.rubrics]
        items = [
            {"kind": example.response_id, "question": example.question, "response": example.response,
             "rubrics": [rubric.text for rubric in example.rubrics], "gold": list(example.labels)}
            for example in picked
        ]  # fmt: skip
        for key in (":", "Let's solve this problem step by step.", "Respuesta"):
            items.append({"kind": f"master key {key!r}", "question": base.question, "response": key,
                          "rubrics": rubrics})  # fmt: skip
        return items

    # ------------------------------------------------------------------ run

    def engine(self, model: str, log_name: str):
        log_path = str(self.out / log_name)
        config = EngineConfig(
            model=model,
            max_model_len=self.config.engine_max_model_len,
            cpu_threads=self.config.engine_cpu_threads,
            log_path=log_path,
        )
        return VLLMEngine(config)

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        self.step("write the demo world", self.write_world)
        self.summary["build_offline"] = self.step(
            "build rubrics, offline backends", lambda: self.build("rubrics-offline")
        )
        train, heldout = self.step("split demo responses by question", self.split_responses)
        heldout_aug = self.step(
            "augment held-out responses", lambda: self.augment(heldout, "heldout-augmented")
        )
        eval_set = self.heldout_eval_set(heldout, heldout_aug)

        gemma = self.engine(self.gemma_dir(), "engine-gemma.log")
        with self.step("start vLLM with Gemma-3-270M", gemma.start):
            self.summary["build_gemma"] = self.step(
                "build rubrics with Gemma-3-270M",
                lambda: self.build(
                    "rubrics-gemma", "--llm-url", gemma.base_url, "--model", gemma.model_name,
                    "--limit", self.config.llm_build_questions,
                    "--passages-per-question", self.config.llm_build_passages,
                    "--max-concurrency", "8", "--timeout-s", "600",
                ),
            )  # fmt: skip
            self.summary["eval_zero_shot"] = self.step(
                "evaluate Gemma-3-270M zero-shot on held-out questions",
                lambda: self.evaluate("gemma-zero-shot", eval_set, gemma.base_url, gemma.model_name),
            )
        if self.config.train:
            train_aug = self.step(
                "augment training responses", lambda: self.augment(train, "train-augmented")
            )
            merged = self.step("stage 1: SFT (LoRA) on Gemma-3-270M", lambda: self.train_sft(train_aug))
            self.serve_evaluate_and_score(merged, eval_set)
        self.summary["steps"] = self.steps
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str))
        print(render_summary(self.summary))
        return self.summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default=None, help="YAML recipe; its `demo` section fills the options "
                        "and its other sections configure each stage")  # fmt: skip
    add_config_arguments(parser, DemoConfig)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = build_config(DemoConfig, args.recipe, "demo", args)
    Demo(config, args.recipe).run()
    return 0
