"""Train the TREC RAG 2024 verifier rows: one model per topic-grouped dev fold, then one on all of dev.

Each fold model never sees its fold's topics, so judging the fold with it gives out-of-fold dev predictions:
the only place recipes and calibrated thresholds are chosen (``bench/trec_rag24.py --cv-manifest``). The
final model is the one whose row reads test: trained on all of dev (``--final train``), or the weight
average of the fold models (``--final average``: the models the calibration is fitted on, served as one).
Every run is plain ``rubric-verifier`` commands (printed and recorded): ``augment`` of the training topics'
answers when the recipe has an ``augment`` section (master keys built from those topics only, mixed in at
the recipe's ``augment_rate``), then ``train sft``, or ``train average``; a model whose folder exists is
skipped, so an interrupted run resumes where it stopped. ``--seeds`` trains the folds once per seed and makes
each fold's model the weight average of its seeds' models; ``--average-of`` does the same with fold models
trained before (other manifests of one recipe), training nothing.

    flock /tmp/rv-heavy.lock .venv/bin/python bench/trec_train.py --recipe recipes/trec-dev.yaml
    .venv/bin/python bench/trec_rag24.py --cv-manifest runs/trec/manifest.json --name gemma-270m-hints
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from sklearn.model_selection import GroupKFold

logger = logging.getLogger("bench.trec_train")
ROOT = Path(__file__).resolve().parents[1]
TREC_DIR = next(
    (p / "shared" / "data" / "trec_rag24" for p in ROOT.parents[:2] if (p / "shared" / "data").is_dir()),
    ROOT.parent / "shared" / "data" / "trec_rag24",
)


def fold_topics(records: list[dict], n_folds: int) -> list[list[str]]:
    """The held-out topics (qids) of each fold, deterministic: sklearn's GroupKFold over the records."""
    qids = [record["qid"] for record in records]
    return [
        sorted({qids[i] for i in held_out})
        for _, held_out in GroupKFold(n_splits=n_folds).split(qids, groups=qids)
    ]


def run_cli(*argv: str) -> str:
    """One ``rubric-verifier`` command in its own process (its memory is returned when it ends)."""
    command = [sys.executable, "-m", "verifier.cli", *argv]
    logger.info("running: %s", shlex.join(command[1:]))
    subprocess.run(command, check=True, cwd=ROOT)
    return shlex.join(command[1:])


def augmented(recipe: str, data: Path, folder: Path) -> tuple[Path, str | None]:
    """``data`` with the recipe's master-key negatives added (its ``augment`` section), or ``data`` itself."""
    from rubric_pipeline.core.config import load_recipe

    if "augment" not in load_recipe(recipe):
        return data, None
    rows = folder / "train.jsonl"
    if rows.is_file():
        return rows, None
    return rows, run_cli("augment", "--recipe", recipe, "--input", str(data), "--output", str(folder))


def train(recipe: str, data: Path, output_dir: Path, extra: list[str]) -> dict:
    """Augment (per the recipe) and train one model on ``data``; skipped if its merged model exists (its
    ``run.json`` keeps how it was made)."""
    merged, record = output_dir / "merged", output_dir / "run.json"
    if (merged / "prompt.json").is_file():
        logger.info("done already: %s", merged)
        return json.loads(record.read_text()) if record.is_file() else {"model": str(merged)}
    data, augment_command = augmented(recipe, data, output_dir / "augmented")
    started = time.perf_counter()
    command = run_cli(
        "train", "sft", "--recipe", recipe, "--data", str(data), "--output_dir", str(output_dir), *extra
    )
    run = {"model": str(merged), "augment_command": augment_command, "command": command}
    run["train_s"] = round(time.perf_counter() - started, 1)
    record.write_text(json.dumps(run, indent=1) + "\n")
    return run


def averaged(members: list[Path], output_dir: Path) -> dict:
    """The weight average of ``members`` (``rubric-verifier train average``); skipped if it exists."""
    merged, record = output_dir / "merged", output_dir / "run.json"
    if (merged / "prompt.json").is_file():
        logger.info("done already: %s", merged)
        if record.is_file():
            return json.loads(record.read_text())
        members = json.loads((merged / "averaged_from.json").read_text())["members"]  # train average's record
        return {"model": str(merged), "members": members}
    output_dir.mkdir(parents=True, exist_ok=True)
    command = run_cli("train", "average", "--models", *map(str, members), "--output_dir", str(merged))
    run = {"model": str(merged), "members": [str(m) for m in members], "command": command}
    record.write_text(json.dumps(run, indent=1) + "\n")
    return run


def fold_averages(manifests: list[str], out: Path) -> dict:
    """A manifest whose fold models average the same folds of ``manifests`` (same held-out topics)."""
    sources = [json.loads(Path(m).read_text()) for m in manifests]
    manifest = {key: sources[0].get(key) for key in ("recipe", "dev", "extra")}
    manifest |= {"average_of": manifests, "folds": []}
    if len({len(source["folds"]) for source in sources}) != 1:
        raise SystemExit(f"--average-of: the manifests hold different numbers of folds: {manifests}")
    for k, folds in enumerate(zip(*(source["folds"] for source in sources), strict=True)):
        held_out = folds[0]["held_out_qids"]
        if any(fold["held_out_qids"] != held_out for fold in folds):
            raise SystemExit(f"--average-of: fold {k} holds out other topics in one of {manifests}")
        run = averaged([Path(fold["model"]) for fold in folds], out / f"fold{k}")
        manifest["folds"].append({"held_out_qids": held_out, **run})
    return manifest


def train_folds(
    recipe: str,
    dev: str,
    records: list[dict],
    n_folds: int,
    max_folds: int | None,
    out: Path,
    extra: list[str],
) -> dict:
    """One model per topic-grouped fold (trained without its held-out topics), listed in ``manifest.json``."""
    manifest: dict = {"recipe": recipe, "dev": dev, "extra": extra, "folds": []}
    for k, held_out in enumerate(fold_topics(records, n_folds)[:max_folds]):
        subset = out / f"fold{k}" / "train.jsonl"
        subset.parent.mkdir(parents=True, exist_ok=True)
        subset.write_text("".join(json.dumps(r) + "\n" for r in records if r["qid"] not in set(held_out)))
        run = train(recipe, subset, out / f"fold{k}", extra)
        manifest["folds"].append({"held_out_qids": held_out, **run})
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/trec-dev.yaml")
    parser.add_argument("--dev", default=str(TREC_DIR / "dev.jsonl"))
    parser.add_argument("--folds", type=int, default=3, help="topic-grouped dev folds (27 topics)")
    parser.add_argument("--out", default="runs/trec", help="fold models, data subsets and manifest.json")
    parser.add_argument("--skip-final", action="store_true", help="fold models only (recipe selection)")
    parser.add_argument(
        "--final", choices=["train", "average"], default="train",
        help="the model that reads test: trained on all of dev, or the weight average of the fold models",
    )  # fmt: skip
    parser.add_argument(
        "--average-of", nargs="+", default=None, metavar="MANIFEST",
        help="train nothing: fold k's model is the weight average of fold k's models in these manifests",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None,
        help="train the folds once per seed (OUT/seed<S>/, --seed S); fold k's model is their weight average",
    )  # fmt: skip
    parser.add_argument(
        "--max-folds", type=int, default=None, help="train only the first N folds (a pilot of a recipe)"
    )
    parser.add_argument("extra", nargs="*", help="more `train sft` flags, after --")
    args = parser.parse_args()
    if (args.average_of or args.seeds) and args.final == "train" and not args.skip_final:
        parser.error(
            "with --average-of or --seeds the fold models are averages: give --final average or --skip-final"
        )
    if args.average_of and args.seeds:
        parser.error("--average-of and --seeds both name the runs to average: give one")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in Path(args.dev).read_text().splitlines() if line.strip()]
    if args.seeds:  # one run of the folds per seed, each in its own folder, then their fold averages
        for seed in args.seeds:
            extra = [*args.extra, "--seed", str(seed)]
            train_folds(
                args.recipe, args.dev, records, args.folds, args.max_folds, out / f"seed{seed}", extra
            )
        args.average_of = [str(out / f"seed{seed}" / "manifest.json") for seed in args.seeds]
    if args.average_of:
        manifest = fold_averages(args.average_of, out)
        runs = range(len(args.average_of))  # run by run, as the manifests list their fold models
        members = [Path(fold["members"][i]) for i in runs for fold in manifest["folds"]]
    else:
        manifest = train_folds(args.recipe, args.dev, records, args.folds, args.max_folds, out, args.extra)
        members = [Path(fold["model"]) for fold in manifest["folds"]]
    if not args.skip_final and args.final == "average":
        manifest["final"] = averaged(members, out / "average")
    elif not args.skip_final:
        manifest["final"] = train(args.recipe, Path(args.dev), out / "all", args.extra)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
