"""`rubric-verifier eval`: run any judge on a labelled set and report how it agrees with the gold labels.

Reported: rubric-level per-label precision/recall/F1, macro-F1, accuracy and confusion matrix; per-response
nugget scores (every aggregation mode of :mod:`verifier.judge.reward`) against the gold scores (MAE, Pearson,
Kendall tau); the master-key false-positive rate on ``augment:*`` examples, per family; unjudgeable items
(excluded from P/R/F1, counted and listed by reason, never scored 0); wall time and throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rubric_pipeline.core.config import add_config_arguments, build_config, option
from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.records import AUGMENT_PREFIX, LABELS, LabelledExample
from verifier.data.labelled_io import load_labelled
from verifier.eval.metrics import classification_report, score_agreement
from verifier.judge.judges import Judgement, judge_all
from verifier.judge.runtime import JudgeOptions, open_judge

logger = logging.getLogger(__name__)

AGGREGATIONS = ("weighted", "all", "vital", "strict_all", "strict_vital")
CREDITED = frozenset({"support", "partial_support"})
NOT_NEGATIVE = frozenset({"regroup"})


@dataclass
class EvalConfig(JudgeOptions):
    data: str = option(
        "", help="labelled set: LabelledExample jsonl, a datasets dir, or a TREC nuggetizer jsonl"
    )
    output: str | None = option(None, help="write the JSON report here")
    heldout_families: list[str] = option([], help="augment families kept out of training (FPR summary)")
    limit: int | None = option(None, help="evaluate only the first N examples")


# ---------------------------------------------------------------- loading


# ---------------------------------------------------------------- metrics


def augment_family(label_source: str) -> str | None:
    """The master-key family of an adversarial negative (``augment:<family>``), else None.

    ``augment:regroup`` rows are real responses with their real labels in new windows: they are scored
    with the label metrics, not as negatives.
    """
    if not label_source.startswith(AUGMENT_PREFIX):
        return None
    family = label_source[len(AUGMENT_PREFIX) :]
    return None if family in NOT_NEGATIVE else family


def _reason(error: str | None) -> str:
    text = (error or "unknown").split(";")[0]
    return text if len(text) <= 160 else text[:157] + "..."


def label_metrics(examples: Sequence[LabelledExample], judgements: Sequence[Judgement]) -> dict[str, Any]:
    """Rubric-level agreement over judged examples; unjudgeable ones are counted, not scored."""
    gold: list[str] = []
    pred: list[str] = []
    unjudgeable = [(ex, j) for ex, j in zip(examples, judgements, strict=True) if j.labels is None]
    for example, judgement in zip(examples, judgements, strict=True):
        if judgement.labels is not None:
            gold.extend(example.labels)
            pred.extend(judgement.labels)
    report = classification_report(gold, pred)
    report["examples"] = len(examples)
    report["judged_examples"] = len(examples) - len(unjudgeable)
    report["unjudgeable"] = {
        "examples": len(unjudgeable),
        "rubrics": sum(len(ex.rubrics) for ex, _ in unjudgeable),
        "reasons": dict(Counter(_reason(j.error) for _, j in unjudgeable).most_common()),
        "response_ids": [ex.response_id for ex, _ in unjudgeable][:50],
    }
    report["degenerate_examples"] = sum(1 for j in judgements if j.note == "degenerate")
    return report


def nugget_metrics(examples: Sequence[LabelledExample], judgements: Sequence[Judgement]) -> dict[str, Any]:
    """Per-response scores under every aggregation mode, predicted vs gold."""
    from verifier.judge.reward import aggregate

    result: dict[str, Any] = {}
    for mode in AGGREGATIONS:
        pred_scores, gold_scores, undefined = [], [], 0
        for example, judgement in zip(examples, judgements, strict=True):
            if judgement.labels is None:
                continue
            pred_score = aggregate(judgement.labels, example.rubrics, mode)
            gold_score = aggregate(example.labels, example.rubrics, mode)
            if pred_score is None or gold_score is None:
                undefined += 1  # e.g. the vital modes on a response whose rubrics are all "okay"
                continue
            pred_scores.append(pred_score)
            gold_scores.append(gold_score)
        result[mode] = score_agreement(pred_scores, gold_scores) | {"undefined": undefined}
    return result


def master_key_metrics(
    examples: Sequence[LabelledExample], judgements: Sequence[Judgement], heldout: Sequence[str] = ()
) -> dict[str, Any]:
    """False-positive rate (rubrics credited support/partial) on augment:* examples, per family."""
    families: dict[str, dict[str, int]] = {}
    for example, judgement in zip(examples, judgements, strict=True):
        family = augment_family(example.label_source)
        if family is None:
            continue
        stats = families.setdefault(
            family, {"examples": 0, "unjudgeable": 0, "rubrics": 0, "credited": 0, "credited_responses": 0}
        )
        stats["examples"] += 1
        if judgement.labels is None:
            stats["unjudgeable"] += 1
            continue
        credited = sum(1 for label in judgement.labels if label in CREDITED)
        stats["rubrics"] += len(judgement.labels)
        stats["credited"] += credited
        stats["credited_responses"] += int(credited > 0)
    per_family = {
        name: stats
        | {
            "fpr": stats["credited"] / stats["rubrics"] if stats["rubrics"] else None,
            "heldout": name in heldout,
        }
        for name, stats in sorted(families.items())
    }
    chosen = [name for name in per_family if name in heldout] if heldout else list(per_family)
    rubrics = sum(per_family[name]["rubrics"] for name in chosen)
    credited = sum(per_family[name]["credited"] for name in chosen)
    return {
        "families": per_family,
        "summary_over": "heldout" if heldout else "all",
        "fpr": credited / rubrics if rubrics else None,
    }


def build_report(
    examples: Sequence[LabelledExample],
    judgements: Sequence[Judgement],
    *,
    judge: str,
    wall_s: float,
    heldout_families: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if len(examples) != len(judgements):
        raise ValueError(f"{len(examples)} examples but {len(judgements)} judgements")
    pairs = list(zip(examples, judgements, strict=True))
    real = [(ex, j) for ex, j in pairs if augment_family(ex.label_source) is None]
    real_examples, real_judgements = [ex for ex, _ in real], [j for _, j in real]
    n_rubrics = sum(len(ex.rubrics) for ex in examples)
    return {
        "judge": judge,
        "labels": label_metrics(real_examples, real_judgements),
        "nugget_scores": nugget_metrics(real_examples, real_judgements),
        "master_key": master_key_metrics(examples, judgements, heldout_families),
        "timing": {
            "wall_s": wall_s,
            "examples": len(examples),
            "rubrics": n_rubrics,
            "examples_per_s": len(examples) / wall_s if wall_s > 0 else None,
            "rubrics_per_s": n_rubrics / wall_s if wall_s > 0 else None,
        },
        **(extra or {}),
    }


# ---------------------------------------------------------------- running a judge


async def evaluate_judge(
    options: JudgeOptions, examples: Sequence[LabelledExample], heldout_families: Sequence[str] = ()
) -> dict[str, Any]:
    """Open the judge the options describe, judge every example, and build the report."""
    async with open_judge(options) as judge:
        start = time.perf_counter()
        judgements = await judge_all(judge, examples, concurrency=options.concurrency)
        wall_s = time.perf_counter() - start
        extra: dict[str, Any] = {"judge_kind": options.judge}
        if hasattr(judge, "params"):
            extra["params"] = judge.params()
        client = getattr(judge, "client", None)
        if client is not None:
            extra["llm"] = {"model": judge.name, "usage": _as_dict(client.usage), "window": options.window}
    return build_report(
        examples, judgements, judge=judge.name, wall_s=wall_s, heldout_families=heldout_families, extra=extra
    )


def _as_dict(value: Any) -> Any:
    from dataclasses import is_dataclass

    return asdict(value) if is_dataclass(value) else (vars(value) if hasattr(value, "__dict__") else value)


# ---------------------------------------------------------------- tables


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(report: dict[str, Any]) -> str:
    labels, timing = report["labels"], report["timing"]
    unjudgeable = labels["unjudgeable"]
    lines = [
        f"judge {report['judge']}: {labels['examples']} responses ({unjudgeable['examples']} unjudgeable, "
        f"{labels['degenerate_examples']} degenerate), {labels['n']} rubrics scored, "
        f"wall {timing['wall_s']:.1f} s",
        f"{'label':<16}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}",
    ]
    for label in LABELS:
        stats = labels["per_label"][label]
        lines.append(
            f"{label:<16}{stats['precision']:>10.3f}{stats['recall']:>8.3f}{stats['f1']:>8.3f}{stats['support']:>9}"
        )
    lines.append(f"macro-F1 {labels['macro_f1']:.3f}   accuracy {labels['accuracy']:.3f}")
    lines.append("confusion (rows gold, cols predicted: " + ", ".join(LABELS) + ")")
    lines.extend("  " + " ".join(f"{count:>6}" for count in row) for row in labels["confusion"]["matrix"])
    lines.append(f"{'nugget score':<14}{'MAE':>7}{'pearson':>9}{'kendall':>9}{'pred':>7}{'gold':>7}{'n':>5}")
    for mode, stats in report["nugget_scores"].items():
        lines.append(
            f"{mode:<14}{_fmt(stats['mae']):>7}{_fmt(stats['pearson']):>9}{_fmt(stats['kendall_tau']):>9}"
            f"{_fmt(stats['mean_pred']):>7}{_fmt(stats['mean_gold']):>7}{stats['n']:>5}"
        )
    families = report["master_key"]["families"]
    if families:
        lines.append(
            f"master-key FPR ({report['master_key']['summary_over']}): {_fmt(report['master_key']['fpr'])}"
        )
        for name, stats in families.items():
            mark = " (held out)" if stats["heldout"] else ""
            lines.append(f"  {name:<28}{_fmt(stats['fpr']):>7}  {stats['examples']} responses{mark}")
    for reason, count in unjudgeable["reasons"].items():
        lines.append(f"unjudgeable x{count}: {reason}")
    return "\n".join(lines)


def format_comparison(reports: Sequence[dict[str, Any]]) -> str:
    """One row per judge: the headline figures side by side."""
    width = max([len("judge"), *(len(report["judge"]) for report in reports)]) + 2
    header = (
        f"{'judge':<{width}}{'macro-F1':>9}{'acc':>7}{'F1 sup':>8}{'F1 part':>8}{'F1 not':>8}"
        f"{'MAE all':>8}{'tau all':>8}{'tau vital':>10}{'unjudg':>7}{'wall s':>8}"
    )
    lines = [header]
    for report in reports:
        labels, nuggets = report["labels"], report["nugget_scores"]
        f1 = {label: labels["per_label"][label]["f1"] for label in LABELS}
        lines.append(
            f"{report['judge']:<{width}}{labels['macro_f1']:>9.3f}{labels['accuracy']:>7.3f}"
            f"{f1['support']:>8.3f}{f1['partial_support']:>8.3f}{f1['not_support']:>8.3f}"
            f"{_fmt(nuggets['all']['mae']):>8}{_fmt(nuggets['all']['kendall_tau']):>8}"
            f"{_fmt(nuggets['vital']['kendall_tau']):>10}{labels['unjudgeable']['examples']:>7}"
            f"{report['timing']['wall_s']:>8.1f}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default=None, help="YAML recipe; its `eval` section fills the options")
    add_config_arguments(parser, EvalConfig)


def run(args: argparse.Namespace) -> int:
    config = build_config(EvalConfig, args.recipe, "eval", args)
    if not config.data:
        raise ConfigError("--data is required (a labelled jsonl, a datasets dir, or a TREC jsonl)")
    examples = load_labelled(config.data)
    if config.limit is not None:
        examples = examples[: config.limit]
    report = asyncio.run(evaluate_judge(config, examples, config.heldout_families))
    report["data"] = config.data
    print(format_table(report))
    if config.output:
        Path(config.output).parent.mkdir(parents=True, exist_ok=True)
        Path(config.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        logger.info("report written to %s", config.output)
    return 0
