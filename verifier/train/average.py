"""``rubric-verifier train average``: one model whose weights are the mean of several fine-tunes.

Fine-tunes of one base (fold models of a topic-grouped CV, runs with other seeds) averaged weight by weight
("model soup") give one folder that one vLLM engine serves, where averaging their label probabilities would
take an engine per model. The members must share the architecture (``config.json``), the tensor names and
shapes, and the prompt card (``prompt.json``: a model trained on another prompt reads its windows
differently); anything else is refused with the member and the field named. Tensors are read one at a
time from the members' safetensors (sharded folders included), summed in float32 and written back in the
first member's dtype and shard layout; the first member's other files (tokenizer, chat template, prompt
card) are copied, and ``averaged_from.json`` records the members and weights. A member's
``calibration.json`` is not copied: thresholds fitted on one model's probabilities do not carry over.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from rubric_pipeline.core.errors import ConfigError

logger = logging.getLogger(__name__)

WEIGHTS_INDEX = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PROVENANCE = "averaged_from.json"
NOT_COPIED = {"calibration.json", PROVENANCE}
# config.json fields that may differ between members without changing what the weights mean
CONFIG_FREE = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache"}


def weight_files(model_dir: Path) -> dict[str, list[str]]:
    """Shard file name -> the tensor names it holds, from the index or the single safetensors file."""
    from safetensors import safe_open

    index = model_dir / WEIGHTS_INDEX
    if index.is_file():
        shards: dict[str, list[str]] = {}
        for name, shard in json.loads(index.read_text())["weight_map"].items():
            shards.setdefault(shard, []).append(name)
        return shards
    if (model_dir / SINGLE_FILE).is_file():
        with safe_open(model_dir / SINGLE_FILE, "pt") as handle:
            return {SINGLE_FILE: list(handle.keys())}
    raise ConfigError(f"{model_dir}: no {SINGLE_FILE} or {WEIGHTS_INDEX} (a merged model folder?)")


def _read_json(path: Path, required: bool = False) -> dict:
    if required and not path.is_file():
        raise ConfigError(f"{path.parent}: no {path.name} (a merged model folder?)")
    return json.loads(path.read_text()) if path.is_file() else {}


def check_members(model_dirs: Sequence[Path]) -> list[dict[str, list[str]]]:
    """Each member's shard layout (:func:`weight_files`), once every member agrees with the first on
    config, prompt card and tensor names (shapes are checked while averaging)."""
    if len(model_dirs) < 2:
        raise ConfigError("give at least two --models to average")
    first = model_dirs[0]
    layouts = [weight_files(first)]
    names = {name for shard in layouts[0].values() for name in shard}
    config = {k: v for k, v in _read_json(first / "config.json", True).items() if k not in CONFIG_FREE}
    card = _read_json(first / "prompt.json")
    for member in model_dirs[1:]:
        other = {k: v for k, v in _read_json(member / "config.json", True).items() if k not in CONFIG_FREE}
        differing = sorted(k for k in config.keys() | other.keys() if config.get(k) != other.get(k))
        if differing:
            raise ConfigError(f"{member}: config.json differs from {first} in {differing}")
        if _read_json(member / "prompt.json") != card:
            raise ConfigError(f"{member}: prompt.json differs from {first} (trained on another prompt)")
        layouts.append(weight_files(member))
        member_names = {name for shard in layouts[-1].values() for name in shard}
        if member_names != names:
            extra, missing = sorted(member_names - names), sorted(names - member_names)
            raise ConfigError(
                f"{member}: tensors differ from {first}: extra {extra[:3]}, missing {missing[:3]}"
            )
    return layouts


def average_models(
    model_dirs: Sequence[Path | str], output_dir: Path | str, weights: Sequence[float] | None = None
) -> Path:
    """Write the weighted mean of the members' weights (equal weights by default) to ``output_dir``."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tqdm import tqdm

    members = [Path(m) for m in model_dirs]
    weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
    if len(weights) != len(members) or sum(weights) <= 0 or min(weights) < 0:
        raise ConfigError(
            f"--weights: {len(members)} non-negative numbers with a positive sum, got {weights}"
        )
    share = [w / sum(weights) for w in weights]
    layouts = check_members(members)
    out = Path(output_dir)
    if out.resolve() in {m.resolve() for m in members}:
        raise ConfigError(f"{out}: the output folder is one of the members")
    out.mkdir(parents=True, exist_ok=True)
    where = [{name: shard for shard, names in layout.items() for name in names} for layout in layouts]
    with ExitStack() as stack:
        # safetensors files are memory-mapped: opening every shard of every member up front costs nothing
        handles = [
            {shard: stack.enter_context(safe_open(m / shard, "pt")) for shard in set(where[i].values())}
            for i, m in enumerate(members)
        ]
        total = sum(len(names) for names in layouts[0].values())
        with tqdm(total=total, desc="averaging tensors", unit="tensor") as progress:
            for shard, names in layouts[0].items():  # the first member's shard layout
                averaged = {}
                for name in names:
                    tensors = [handles[i][where[i][name]].get_tensor(name) for i in range(len(members))]
                    for member, tensor in zip(members[1:], tensors[1:], strict=True):
                        if tensor.shape != tensors[0].shape:
                            raise ConfigError(
                                f"{member}: tensor {name} has shape {tuple(tensor.shape)}, "
                                f"{members[0]} has {tuple(tensors[0].shape)}"
                            )
                    mean = sum(t.to(torch.float32) * w for t, w in zip(tensors, share, strict=True))
                    averaged[name] = mean.to(tensors[0].dtype).contiguous()
                    progress.update()
                save_file(averaged, str(out / shard), metadata={"format": "pt"})
    for path in members[0].iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name not in NOT_COPIED:
            shutil.copy2(path, out / path.name)
    provenance = {"members": [str(m) for m in members], "weights": share}
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n")
    logger.info("averaged %d models into %s", len(members), out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", required=True, help="merged model folders of one base")
    parser.add_argument("--output_dir", "--output-dir", required=True, help="folder of the averaged model")
    parser.add_argument(
        "--weights", nargs="+", type=float, default=None, help="one weight per model; equal when not given"
    )


def run(args: argparse.Namespace) -> int:
    out = average_models(args.models, args.output_dir, args.weights)
    print(f"average of {len(args.models)} models: {out}")
    return 0
