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


def _grpo_weights_change(tiny_model_dir: Path, tmp_path: Path, dynamic_sampling: bool) -> tuple[bool, list]:
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
