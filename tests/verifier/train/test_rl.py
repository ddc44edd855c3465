"""Stage 2: the reward callable on hand-computed cases, and GRPO steps on the tiny model (real TRL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.train.rl import LabelReward, rl_config

TEACHER = ["support", "not_support", "partial_support", "support"]


def _msg(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_reward_callable_on_hand_computed_cases() -> None:
    reward = LabelReward()
    completions = [
        _msg('<reasoning>All checked.</reasoning>\n["support", "not_support", "partial_support", "support"]'),
        _msg('["support", "not_support", "partial_support", "support"]'),  # no reasoning tag: 1 - 0.2
        _msg('["support", "not_support", "partial_support"]'),  # wrong count
        _msg("- support\n- not_support\n- partial_support\n- support"),  # yaml, json requested
        _msg('["support", "support", "partial_support", "support"]'),  # one label wrong
        "not labels at all",
    ]
    rewards = reward(
        prompts=[[{"role": "user", "content": "p"}]] * 6,
        completions=completions,
        teacher_labels=[TEACHER] * 6,
        output_format=["json"] * 6,
        completion_ids=[[0]] * 6,
        trainer_state=None,
    )
    # one label wrong: classes support (P=2/3,R=1 -> F1 0.8), not_support (F1 0), partial (F1 1) -> 0.6
    expected = [1.0, 0.8, 0.0, 0.35 + 0.35, 0.35 * 0.6 + 0.1, 0.0]
    assert rewards == pytest.approx(expected)
    assert reward.__name__ == "rubric_label_reward"  # TRL names the logged column after it
    assert reward([], [_msg('["support"]')], teacher_labels=[None]) == [None]  # no reference: skipped, not 0


def test_grpo_config_checks_generation_batch() -> None:
    with pytest.raises(ValueError, match="divisible"):
        rl_config(output_dir="/tmp/x", per_device_train_batch_size=6, num_generations=4)
    config = rl_config(output_dir="/tmp/x", per_device_train_batch_size=4, num_generations=4).training
    assert config.generation_batch_size == 4 and config.epsilon_high == 0.28 and config.loss_type == "dapo"


def test_grpo_steps_record_rewards(tiny_model_dir: Path, tmp_path: Path) -> None:
    from rubric_pipeline.core.records import write_jsonl
    from rubric_pipeline.demo_world import generate_world, make_responses
    from verifier.train.rl import run_rl

    data = tmp_path / "labelled.jsonl"
    write_jsonl(data, (e.to_dict() for e in make_responses(generate_world(seed=0), seed=0)[:20]))
    config = rl_config(
        model_name_or_path=str(tiny_model_dir),
        data=str(data),
        output_dir=str(tmp_path / "rl"),
        window_min=1,
        window_max=2,
        output_formats=["json", "comma"],
        max_train_windows=8,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        max_steps=2,
        learning_rate=1e-3,
        temperature=1.0,
    )
    result = run_rl(config)
    logged = [entry for entry in result.log_history if "reward" in entry]
    assert result.global_step == 2 and len(logged) == 2
    assert all(0.0 <= entry["reward"] <= 1.0 for entry in logged)
    assert any("rubric_label_reward" in key for key in logged[0])
    assert (Path(result.model_dir) / "model.safetensors").is_file()


def test_reward_follows_search_gen_v_on_its_edge_cases() -> None:
    from verifier.judge.prompt import format_labels
    from verifier.train.rl_reward import macro_f1, reasoning_credit, rl_reward

    teacher = ["support", "not_support", "partial_support"]
    rotated = ["not_support", "partial_support", "support"]  # every label wrong: F1 0 on all three
    assert rl_reward(format_labels(rotated, "json", "checked"), teacher, "json") == 0.0  # not 0.2 + 0.1
    # a label absent from both sides counts 1: one wrong of one -> support 0, not_support 0, partial 1
    assert macro_f1(["not_support"], ["support"]) == pytest.approx(1 / 3)
    assert rl_reward('["not_support"]', ["support"], "json") == pytest.approx(0.35 / 3 + 0.1)
    # reasoning credit: 1 for a non-empty block before the labels, 0.5 when empty, 0 when repeated
    assert reasoning_credit('<reasoning>why</reasoning>["support"]') == 1.0
    assert reasoning_credit('<reasoning> </reasoning>["support"]') == 0.5
    assert reasoning_credit("<reasoning>why</reasoning>") == 0.5
    assert rl_reward('<reasoning> </reasoning>["support"]', ["support"], "json") == pytest.approx(0.9)
    assert rl_reward('<reasoning>a</reasoning><reasoning>b</reasoning>["support"]', ["support"]) == 0.0


def test_drop_flat_groups_masks_only_groups_without_spread() -> None:
    import torch

    from verifier.train.dynamic_sampling import drop_flat_groups

    # rows 0, 2: prompt A (advantages differ); rows 1, 3: prompt B (flat); shuffled as TRL does
    inputs = {
        "prompt_ids": torch.tensor([[0, 5, 6], [7, 8, 9], [0, 5, 6], [7, 8, 9]]),
        "prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1]]),
        "completion_mask": torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]]),
        "advantages": torch.tensor([0.7, 0.0, -0.7, 0.0]),
        "num_items_in_batch": torch.tensor(20.0),  # the generation batch: more than this micro-batch
    }
    out, kept, seen = drop_flat_groups(inputs)
    assert (kept, seen) == (1, 2)
    assert out["completion_mask"].tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert float(out["num_items_in_batch"]) == pytest.approx(20.0 * 3 / 9)  # kept share of the tokens
    assert inputs["completion_mask"].sum() == 9  # the caller's batch is left as it was


def _grpo_weights_change(
    tiny_model_dir: Path, tmp_path: Path, dynamic_sampling: bool, max_num_gen_batches: int = 1
) -> tuple[bool, list]:
    import torch
    from safetensors.torch import load_file

    from rubric_pipeline.core.records import write_jsonl
    from rubric_pipeline.demo_world import generate_world, make_responses
    from verifier.train.rl import run_rl

    data = tmp_path / "labelled.jsonl"
    write_jsonl(data, (e.to_dict() for e in make_responses(generate_world(seed=0), seed=0)[:8]))
    out = tmp_path / f"rl-{dynamic_sampling}"
    config = rl_config(
        model_name_or_path=str(tiny_model_dir), data=str(data), output_dir=str(out), max_train_windows=2,
        per_device_train_batch_size=2, num_generations=2, max_completion_length=8, max_steps=1,
        learning_rate=1e-2, entropy_coef=0.5, dynamic_sampling=dynamic_sampling, window_max=2,
        max_num_gen_batches=max_num_gen_batches,
    )  # fmt: skip
    result = run_rl(config)
    before, after = (
        load_file(str(tiny_model_dir / "model.safetensors")),
        load_file(str(out / "merged" / "model.safetensors")),
    )
    changed = any(not torch.equal(before[name], after[name]) for name in before if name in after)
    return changed, result.log_history


def test_dynamic_sampling_leaves_flat_groups_out_of_the_update(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The random tiny model never writes a parsable label list: every reward is 0, every group flat.
    With TRL's entropy bonus on, plain GRPO still moves the weights; with the filter nothing is left."""
    changed, history = _grpo_weights_change(tiny_model_dir, tmp_path, dynamic_sampling=False)
    assert changed and all(entry.get("reward", 0.0) == 0.0 for entry in history)
    changed, history = _grpo_weights_change(tiny_model_dir, tmp_path, dynamic_sampling=True)
    assert not changed
    assert [entry["dynamic_sampling/kept_groups"] for entry in history if "loss" in entry] == [0.0]


def test_refill_needs_the_filter_and_a_positive_count() -> None:
    from rubric_pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="needs dynamic_sampling"):
        rl_config(output_dir="/tmp/x", max_num_gen_batches=2)
    with pytest.raises(ConfigError, match="at least 1"):
        rl_config(output_dir="/tmp/x", dynamic_sampling=True, max_num_gen_batches=0)
    assert (
        rl_config(
            output_dir="/tmp/x", dynamic_sampling=True, max_num_gen_batches=5
        ).options.max_num_gen_batches
        == 5
    )


def _spread_reward(completions, completion_ids, kind, **kwargs) -> list[float]:
    """0 for every completion of a "flat" row, else a value of its tokens (random tokens differ)."""
    return [0.0 if k == "flat" else (sum(ids) % 97) / 97 for ids, k in zip(completion_ids, kind, strict=True)]


def _refill_step(tiny_model_dir: Path, tmp_path: Path, max_num_gen_batches: int) -> tuple[bool, dict]:
    """One GRPO step on 2 groups whose prompts (rows 0, 1: TRL's order with shuffle off) are flat; rows 2-3
    are flat too, rows 4-7 get reward spread. Returns whether the weights changed, and the step's log."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verifier.train.data import to_dataset
    from verifier.train.dynamic_sampling import DynamicSamplingGRPOTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": f"Question {i}: label the rubric."}],
            "kind": "flat" if i < 4 else "spread",
        }
        for i in range(8)
    ]
    args = rl_config(
        output_dir=str(tmp_path / f"refill-{max_num_gen_batches}"), per_device_train_batch_size=4,
        num_generations=2, max_completion_length=8, max_steps=1, learning_rate=1e-2, temperature=1.0,
        shuffle_dataset=False,
    ).training  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainer = DynamicSamplingGRPOTrainer(
        model=model, reward_funcs=[_spread_reward], args=args, train_dataset=to_dataset(rows),
        processing_class=AutoTokenizer.from_pretrained(str(tiny_model_dir)),
        max_num_gen_batches=max_num_gen_batches,
    )  # fmt: skip
    trainer.train()
    changed = any(not torch.equal(before[name], param) for name, param in model.named_parameters())
    (step,) = [entry for entry in trainer.state.log_history if "loss" in entry]
    return changed, step


def test_refill_replaces_flat_groups_with_new_prompts_groups_and_trains(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Filter only: both groups of the batch are flat, nothing is left to train on. With the refill, new
    prompts are drawn until both slots hold a group with spread; TRL's own reward and advantage see them."""
    changed, step = _refill_step(tiny_model_dir, tmp_path, max_num_gen_batches=1)
    assert not changed
    assert step["frac_reward_zero_std"] == 1.0 and step["dynamic_sampling/kept_groups"] == 0.0
    assert "dynamic_sampling/gen_batches" not in step  # TRL's own generation: no rollout_func
    changed, step = _refill_step(tiny_model_dir, tmp_path, max_num_gen_batches=5)
    assert changed
    assert step["frac_reward_zero_std"] == 0.0 and step["dynamic_sampling/kept_groups"] == 1.0
    assert step["dynamic_sampling/refilled_groups"] == 1.0 and 2 <= step["dynamic_sampling/gen_batches"] <= 5
    assert step["reward"] > 0.0  # scored by TRL against the refilled rows' own "kind" column


def test_refill_stops_after_max_num_gen_batches(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The random tiny model never earns a label reward: every group stays flat, so the refill (via run_rl)
    draws exactly max_num_gen_batches generation batches, keeps the flat groups and the filter drops them."""
    changed, history = _grpo_weights_change(
        tiny_model_dir, tmp_path, dynamic_sampling=True, max_num_gen_batches=3
    )
    (step,) = [entry for entry in history if "loss" in entry]
    assert not changed
    assert step["dynamic_sampling/gen_batches"] == 3.0 and step["dynamic_sampling/refilled_groups"] == 0.0
    assert step["dynamic_sampling/kept_groups"] == 0.0
