"""`rubric-verifier train sft|rl`: recipes and flags fill the stage configs (runs are tested elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifier.cli import main

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


@pytest.mark.parametrize("stage", ["sft", "rl"])
def test_recipe_then_flags(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", stage, "--recipe", str(RECIPES / "tiny-cpu.yaml"), "--learning-rate", "0.1", "--dry-run"]
    assert main(argv) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["learning_rate"] == 0.1  # flag beats recipe
    assert config["window_max"] == (3 if stage == "sft" else 2)  # from the recipe
    assert config["max_steps"] == (4 if stage == "sft" else 2)


@pytest.mark.parametrize("recipe", ["tiny-cpu", "demo", "qwen3-4b"])
def test_every_recipe_has_valid_training_sections(recipe: str) -> None:
    from rubric_pipeline.core.config import build_config
    from verifier.train.rl import RLStageConfig
    from verifier.train.sft import SFTStageConfig

    sft = build_config(SFTStageConfig, RECIPES / f"{recipe}.yaml", "sft")
    rl = build_config(RLStageConfig, RECIPES / f"{recipe}.yaml", "rl")
    assert sft.model and rl.model
    assert (rl.per_device_train_batch_size * rl.gradient_accumulation_steps) % rl.num_generations == 0


def test_missing_data_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "sft", "--model", "some/dir"]) == 2
    assert "--data is required" in capsys.readouterr().err
