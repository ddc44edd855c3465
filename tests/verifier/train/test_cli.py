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
    import torch

    from verifier.train.rl import rl_config
    from verifier.train.sft import sft_config

    path = RECIPES / f"{recipe}.yaml"
    # a GPU recipe asks for bf16, which TRL's configs refuse on a CPU: override only that here
    cpu = {} if torch.cuda.is_available() or recipe != "qwen3-4b" else {"bf16": False}
    sft, rl = sft_config(path, **cpu), rl_config(path, **cpu)
    assert sft.model.model_name_or_path and rl.model.model_name_or_path
    train = rl.training
    batch = train.per_device_train_batch_size * train.gradient_accumulation_steps
    assert batch % train.num_generations == 0


def test_missing_data_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "sft", "--model", "some/dir"]) == 2
    assert "--data is required" in capsys.readouterr().err


def test_flags_take_trl_names_in_either_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "sft", "--recipe", str(RECIPES / "tiny-cpu.yaml"), "--model", "m/dir", "--dry-run"]
    argv += ["--per-device-train-batch-size", "2", "--lora_r", "8", "--use_peft", "false", "--seed", "3"]
    assert main(argv) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["model_name_or_path"] == "m/dir"  # --model: short for TRL's --model_name_or_path
    assert (config["per_device_train_batch_size"], config["lora_r"], config["use_peft"]) == (2, 8, False)
    assert config["seed"] == 3 and config["lora_alpha"] == 8  # lora_alpha: the recipe's


def test_recipe_values_are_typed_and_unknown_keys_named(tmp_path: Path) -> None:
    from verifier.train.sft import sft_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("sft:\n  learning_rate: 1e-5\n  max_steps: '7'\n  use_peft: 'no'\n  bf16: false\n")
    config = sft_config(recipe)
    assert config.training.learning_rate == 1e-5 and config.training.max_steps == 7  # YAML strings converted
    assert config.model.use_peft is False
    recipe.write_text("sft:\n  learnin_rate: 0.1\n")
    with pytest.raises(
        ValueError, match=r"section 'sft' of .*unknown option\(s\) \['learnin_rate'\].*learning_rate"
    ):
        sft_config(recipe)
    recipe.write_text("sft:\n  max_steps: many\n")
    with pytest.raises(ValueError, match=r"section 'sft'.*max_steps"):
        sft_config(recipe)


@pytest.mark.parametrize("native_bf16", [False, True])
def test_bf16_autocast_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, native_bf16: bool) -> None:
    import verifier.hardware
    from verifier.train.sft import sft_config

    monkeypatch.setattr(verifier.hardware, "cpu_has_native_bf16", lambda: native_bf16)
    config = sft_config(str(RECIPES / "tiny-cpu.yaml"))
    assert config.training.bf16 is native_bf16  # chosen at run time: a recipe runs on either CPU kind
    assert sft_config(str(RECIPES / "tiny-cpu.yaml"), bf16=False).training.bf16 is False
