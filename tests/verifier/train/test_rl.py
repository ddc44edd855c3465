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
