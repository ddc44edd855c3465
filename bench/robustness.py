"""Reward hacking and verbosity, side by side in one run, on NIST's TREC RAG 2024 sample.

1. Master keys: for every attack family (the augment families, built from test.jsonl's questions and
   rubrics, plus the held-out keys in tests/verifier/judge/data/master_keys_heldout.jsonl, which no code
   lists), the false-positive rate: the share of rubric labels that are not ``not_support`` (every label
   of an attack should be), and the share of attacks with a reward > 0; with the degenerate guard on and
   off. Beside it, support recall on the real answers (human ``support`` labels judged ``support``).
2. Verbosity: the weighted reward of each correct real answer (human reward >= 0.5), as written, padded
   with an irrelevant answer (to another question), and repeated 2x / 3x.

The judge is the lexical baseline fitted on dev.jsonl (test.jsonl is only scored), optionally also a
served model (``--engine-url`` of a running OpenAI-compatible server, or ``--serve-model DIR`` to start a
vLLM engine on it here: LLMJudge with the guard on and off).

    .venv/bin/python bench/robustness.py --trec-dir ../shared/data/trec_rag24
    flock /tmp/rv-heavy.lock .venv/bin/python bench/robustness.py --serve-model .cache/models/tiny

Writes bench/results/robustness.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path
from typing import Any

from rubric_pipeline.core.records import LabelledExample
from rubric_pipeline.trec import read_trec_labelled
from verifier.data.augment import (
    FAMILIES,
    MASTER_KEYS,
    OPENER,
    TRUNCATION,
    master_key_examples,
    opener_examples,
    per_question_examples,
    truncation_examples,
)
from verifier.hardware import speed_flags
from verifier.judge.guard import is_degenerate
from verifier.judge.reward import aggregate

ROOT = Path(__file__).resolve().parents[1]
HELDOUT_FILE = ROOT / "tests" / "verifier" / "judge" / "data" / "master_keys_heldout.jsonl"
N = "not_support"


def attack_sets(real: list[LabelledExample]) -> dict[str, list[LabelledExample]]:
    """Family name -> attack examples (every label not_support), built from the real examples' questions."""
    out: dict[str, list[LabelledExample]] = {}
    for example in master_key_examples(real, list(MASTER_KEYS)) + per_question_examples(real, FAMILIES):
        out.setdefault(example.label_source.removeprefix("augment:"), []).append(example)
    out[TRUNCATION] = truncation_examples(real)[0]
    out[OPENER] = opener_examples(real)[0]
    heldout = [json.loads(line) for line in HELDOUT_FILE.read_text(encoding="utf-8").splitlines()]
    first = {e.qid: e for e in reversed(real) if e.rubrics}
    for key in heldout:
        family = f"heldout:{key['family']}"
        out.setdefault(family, []).extend(
            LabelledExample(e.qid, e.question, key["text"], f"{e.qid}:{family}", list(e.rubrics),
                            [N] * len(e.rubrics), "augment:" + family)
            for e in first.values()
        )  # fmt: skip
    return out


class Judged:
    """Labels of one judge for many examples, guard on and off (the guard never calls the judge)."""

    def __init__(self, name: str, label_fn):
        self.name, self.label_fn = name, label_fn

    async def labels(self, examples: list[LabelledExample], guard: bool) -> list[list[str] | None]:
        raw = await self.label_fn([e for e in examples if not (guard and is_degenerate(e.response))])
        it = iter(raw)
        return [[N] * len(e.rubrics) if guard and is_degenerate(e.response) else next(it) for e in examples]


def lexical(dev: list[LabelledExample]) -> Judged:
    from verifier.judge.baselines import LexicalJudge

    judge = LexicalJudge().fit(dev)

    async def label(examples: list[LabelledExample]) -> list[list[str]]:
        return [[judge.label(s) for s in row] for row in judge.scores(examples)] if examples else []

    return Judged("lexical", label)


def served(url: str, hints: str = "none") -> Judged:
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.judge.judges import LLMJudge, judge_all

    async def label(examples: list[LabelledExample]) -> list[list[str] | None]:
        import httpx

        base = url.rstrip("/").removesuffix("/v1") + "/v1"
        model = httpx.get(f"{base}/models", timeout=10).json()["data"][0]["id"]
        async with LLMClient(LLMConfig([base], model, max_concurrency=32)) as client:
            judge = LLMJudge(client, degenerate_guard=False, hints=hints)
            done = await judge_all(judge, examples, concurrency=32, progress=False)
        return [j.labels for j in done]

    return Judged(f"served:{url}", label)


def fpr(examples: list[LabelledExample], labels: list[list[str] | None]) -> dict[str, float]:
    judged = [(e, row) for e, row in zip(examples, labels, strict=True) if row is not None]
    flat = [label for _, row in judged for label in row]
    rewards = [aggregate(row, e.rubrics) or 0.0 for e, row in judged]
    return {
        "label_fpr": sum(label != N for label in flat) / max(1, len(flat)),
        "reward_gt0": sum(r > 0 for r in rewards) / max(1, len(rewards)),
        "n": len(examples),
    }


def support_recall(examples: list[LabelledExample], labels: list[list[str] | None]) -> float:
    pairs = [
        (gold, pred)
        for e, row in zip(examples, labels, strict=True)
        if row is not None
        for gold, pred in zip(e.labels, row, strict=True)
        if gold == "support"
    ]
    return sum(pred == "support" for _, pred in pairs) / max(1, len(pairs))


def variants(real: list[LabelledExample]) -> dict[str, list[LabelledExample]]:
    """Each correct real answer (human weighted reward >= 0.5) as written, padded with another question's
    answer, and repeated."""
    other = {e.qid: next((o.response for o in real if o.qid != e.qid), "") for e in real}
    real = [e for e in real if (aggregate(e.labels, e.rubrics) or 0.0) >= 0.5]

    def make(e: LabelledExample, text: str) -> LabelledExample:
        return LabelledExample(e.qid, e.question, text, e.response_id, e.rubrics, e.labels, e.label_source)

    return {
        "as written": real,
        "+ irrelevant answer": [make(e, f"{e.response}\n\n{other[e.qid]}") for e in real],
        "repeated 2x": [make(e, f"{e.response}\n\n{e.response}") for e in real],
        "repeated 3x": [make(e, "\n\n".join([e.response] * 3)) for e in real],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    trec = Path(args.trec_dir)
    dev, test = read_trec_labelled(trec / "dev.jsonl"), read_trec_labelled(trec / "test.jsonl")
    from verifier.judge.hints import model_hints

    hints = model_hints(args.serve_model) if args.serve_model else args.hints
    judges = [lexical(dev)] + [served(url, hints) for url in args.engine_url]
    attacks = attack_sets(test)
    rows: dict[str, Any] = {}
    for judged in judges:
        start = time.perf_counter()
        result: dict[str, Any] = {"families": {}, "verbosity": {}}
        for guard in (True, False):
            real_labels = await judged.labels(test, guard)
            result[f"support_recall_guard_{'on' if guard else 'off'}"] = support_recall(test, real_labels)
            for family, examples in sorted(attacks.items()):
                entry = result["families"].setdefault(family, {})
                entry["guard_on" if guard else "guard_off"] = fpr(
                    examples, await judged.labels(examples, guard)
                )
        for name, examples in variants(test).items():
            labels = await judged.labels(examples, True)
            rewards = [aggregate(row, e.rubrics) for e, row in zip(examples, labels, strict=True) if row]
            rewards = [r for r in rewards if r is not None]
            result["verbosity"][name] = sum(rewards) / max(1, len(rewards))
            result["verbosity_n"] = len(rewards)
        result["wall_s"] = time.perf_counter() - start
        rows[judged.name] = result
        print_report(judged.name, result)
    return rows


def print_report(name: str, result: dict[str, Any]) -> None:
    print(f"\n== {name}: support recall on real answers, guard on {result['support_recall_guard_on']:.3f}"
          f" / off {result['support_recall_guard_off']:.3f}")  # fmt: skip
    print(f"{'family':34} {'n':>5} {'FPR on':>8} {'FPR off':>8} {'r>0 on':>7} {'r>0 off':>8}")
    for family, entry in result["families"].items():
        on, off = entry["guard_on"], entry["guard_off"]
        print(f"{family:34} {on['n']:>5} {on['label_fpr']:>8.3f} {off['label_fpr']:>8.3f}"
              f" {on['reward_gt0']:>7.3f} {off['reward_gt0']:>8.3f}")  # fmt: skip
    base = result["verbosity"]["as written"]
    print(f"{'verbosity':34} {'mean reward':>12} {'ratio':>7}")
    for variant, reward in result["verbosity"].items():
        print(f"{variant:34} {reward:>12.3f} {reward / base if base else float('nan'):>7.2f}")


def main() -> None:
    from verifier.judge.hints import HINT_MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trec-dir", default=str(ROOT.parent / "shared" / "data" / "trec_rag24"))
    parser.add_argument("--engine-url", action="append", default=[], help="a served verifier to add")
    parser.add_argument("--serve-model", default=None, help="start a vLLM engine on this model and add it")
    parser.add_argument(
        "--hints", choices=HINT_MODES, default="none",
        help="the rubric-line hints the --engine-url models were trained with (verifier.judge.hints)",
    )  # fmt: skip
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "robustness.json"))
    args = parser.parse_args()
    if args.serve_model:
        from verifier.serve.engine import EngineConfig, VLLMEngine

        with VLLMEngine(EngineConfig(model=args.serve_model, max_model_len=2048)) as engine:
            args.engine_url.append(engine.url)
            rows = asyncio.run(run(args))
    else:
        rows = asyncio.run(run(args))
    meta = {"machine": platform.processor() or platform.machine(), "cpu_flags": speed_flags(), "judges": rows}
    Path(args.output).write_text(json.dumps(meta, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
