"""Run verl's own reward path against a live gateway; run in the verl environment (.venv-verl).

    python verl_driver.py --gateway URL --model TINY_DIR --manager naive,remote --example examples/verl.sh

The config is verl's ``ppo_trainer`` composed by Hydra with the overrides of ``examples/verl.sh`` (its URL
pointed at ``--gateway``); the samples are tokenized by the tiny model's tokenizer into a DataProto as the
rollout leaves it; ``RewardLoopManager.compute_rm_score`` runs verl's reward-loop worker (a Ray actor), its
reward-function loader and reward manager, and stacks every returned key with ``np.array``; the
validation metrics are verl's ``process_validation_metrics`` over those keys. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

RUBRICS = ["Names the Sella river.", {"text": "Gives a year.", "importance": "okay"}, "Mentions a surveyor."]
OKAY_ONLY = [{"text": "Names the Sella river.", "importance": "okay"}]
QUESTION = "Which river flows through Varn?"
# (response, ground truth): judgeable with 3 and 1 rubrics, no vital rubric, degenerate, unjudgeable.
SAMPLES = [
    ("The Sella river, mapped in 1821 by a surveyor.", json.dumps(RUBRICS)),
    ("The Sella.", json.dumps(RUBRICS[:1])),
    ("It is the Sella river.", json.dumps(OKAY_ONLY)),
    ("...", json.dumps(RUBRICS)),
    ("An answer with words.", "[]"),
]


def overrides(example: Path, gateway: str, manager: str) -> list[str]:
    lines = re.findall(r"^\s*(\+?reward\.\S+)", example.read_text(), re.M)
    out = [line.replace("http://127.0.0.1:8080", gateway) for line in lines]
    if manager == "remote":
        out = [o.replace("name=compute_score", "name=compute_score_sync") for o in out]
    return out


def batch(tokenizer):
    from verl import DataProto

    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True)
        for _ in SAMPLES
    ]
    prompts = [p["input_ids"] if isinstance(p, dict) or hasattr(p, "keys") else p for p in prompts]
    responses = [
        tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for text, _ in SAMPLES
    ]
    width_p, width_r = max(map(len, prompts)), max(map(len, responses))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompt_ids = torch.tensor([[pad] * (width_p - len(p)) + p for p in prompts])  # left-padded, as rollout
    response_ids = torch.tensor([r + [pad] * (width_r - len(r)) for r in responses])
    mask = torch.tensor(
        [
            [0] * (width_p - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (width_r - len(r))
            for p, r in zip(prompts, responses, strict=True)
        ]
    )
    n = len(SAMPLES)
    return DataProto.from_dict(
        tensors={
            "prompts": prompt_ids,
            "responses": response_ids,
            "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
            "attention_mask": mask,
        },
        non_tensors={
            "data_source": np.array(["rubric_qa"] * n, dtype=object),
            "reward_model": np.array(
                [{"ground_truth": gt, "style": "model"} for _, gt in SAMPLES], dtype=object
            ),
            "extra_info": np.array([{"question": QUESTION, "index": i} for i in range(n)], dtype=object),
            "uid": np.array([f"u{i}" for i in range(n)], dtype=object),
        },
    )


def wait_until_unnamed(names: list[str], timeout_s: float = 30.0) -> None:
    import time

    import ray

    deadline = time.monotonic() + timeout_s
    for name in names:
        while time.monotonic() < deadline:
            try:
                ray.get_actor(name)
            except ValueError:
                break
            time.sleep(0.2)


def score_batch(args, manager: str, manager_cls, extract_reward) -> dict:
    """One reward manager's pass over the batch, and verl's validation metrics over what it stacked."""
    import ray
    from hydra import compose, initialize_config_module
    from transformers import AutoTokenizer
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = compose(
            "ppo_trainer",
            overrides=[
                *overrides(Path(args.example), args.gateway, manager),
                f"reward.reward_manager.name={manager}",
                "reward.num_workers=1",
                f"actor_rollout_ref.model.path={args.model}",
            ],
        )
    data = batch(AutoTokenizer.from_pretrained(args.model))
    loop_manager = manager_cls(config)
    try:
        out = loop_manager.compute_rm_score(data)
    finally:
        for worker in loop_manager.reward_loop_workers:  # named actors: free the names for the next pass
            ray.kill(worker)
        wait_until_unnamed([f"reward_loop_worker_{i}" for i in range(len(loop_manager.reward_loop_workers))])
    reward_tensor, extra = extract_reward(out)
    scores = reward_tensor.sum(-1).cpu().tolist()
    infos = {"reward": list(scores)} | {key: values.tolist() for key, values in extra.items()}
    # what RayPPOTrainer._validate hands to its metrics: the stacked keys as lists, one uid per sample
    uids = [f"u{i}" for i in range(len(scores))]
    metrics = process_validation_metrics(["rubric_qa"] * len(scores), uids, infos)["rubric_qa"]
    return {
        "keys": out.meta_info["reward_extra_keys"],
        "dtypes": {key: str(values.dtype) for key, values in extra.items()},
        "infos": infos,
        "metrics": {var: {m: float(v) for m, v in vals.items()} for var, vals in metrics.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--manager", default="naive,remote", help="comma-separated reward managers")
    parser.add_argument("--example", required=True)
    args = parser.parse_args()

    import ray
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager
    from verl.trainer.ppo.reward import extract_reward

    results = {}
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    try:
        for manager in args.manager.split(","):
            results[manager] = score_batch(args, manager, RewardLoopManager, extract_reward)
    finally:
        ray.shutdown()
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
