"""`rubric-verifier train average`: the weight mean of fine-tunes, and the members it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rubric_pipeline.core.errors import ConfigError
from verifier.cli import main
from verifier.train.average import average_models


def shifted_copy(source: Path, target: Path, shift: float, card: dict | None = None) -> Path:
    """A copy of ``source`` with every floating tensor moved by ``shift`` (a stand-in for a fine-tune)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    save_file(
        {k: v + shift if v.is_floating_point() else v for k, v in tensors.items()},
        target / "model.safetensors",
    )
    (target / "prompt.json").write_text(
        json.dumps(card or {"prompt_version": "judge-test", "hints": "words"})
    )
    return target


def test_average_is_the_weighted_mean_and_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    a = shifted_copy(tiny_model_dir, tmp_path / "a", 0.0)
    b = shifted_copy(tiny_model_dir, tmp_path / "b", 0.25)
    (a / "calibration.json").write_text("{}")
    out = tmp_path / "soup"
    assert (
        main(
            ["train", "average", "--models", str(a), str(b), "--output_dir", str(out), "--weights", "3", "1"]
        )
        == 0
    )

    members = [load_file(a / "model.safetensors"), load_file(b / "model.safetensors")]
    averaged = load_file(out / "model.safetensors")
    assert averaged.keys() == members[0].keys()
    for name, tensor in averaged.items():
        expected = (members[0][name].float() * 0.75 + members[1][name].float() * 0.25).to(tensor.dtype)
        assert tensor.dtype == members[0][name].dtype
        assert (tensor == expected).all(), name
    assert json.loads((out / "prompt.json").read_text()) == json.loads((a / "prompt.json").read_text())
    assert not (out / "calibration.json").exists()  # thresholds of one member do not fit the average
    assert json.loads((out / "averaged_from.json").read_text())["weights"] == [0.75, 0.25]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.to_dict()["hidden_size"] == json.loads((a / "config.json").read_text())["hidden_size"]


def test_a_model_averaged_with_itself_is_unchanged(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a = shifted_copy(tiny_model_dir, tmp_path / "a", 0.0)
    out = average_models([a, a], tmp_path / "soup")
    original, averaged = load_file(a / "model.safetensors"), load_file(out / "model.safetensors")
    assert all((averaged[k] == v).all() for k, v in original.items())


def test_members_that_do_not_match_are_refused_by_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    a = shifted_copy(tiny_model_dir, tmp_path / "a", 0.0)
    other_prompt = shifted_copy(tiny_model_dir, tmp_path / "other-prompt", 0.1, {"prompt_version": "judge-x"})
    with pytest.raises(ConfigError, match=r"other-prompt: prompt\.json differs"):
        average_models([a, other_prompt], tmp_path / "out1")

    wider = shifted_copy(tiny_model_dir, tmp_path / "wider", 0.0)
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": config["hidden_size"] * 2}))
    with pytest.raises(ConfigError, match=r"wider: config.json differs .* \['hidden_size'\]"):
        average_models([a, wider], tmp_path / "out2")

    with pytest.raises(ConfigError, match="at least two"):
        average_models([a], tmp_path / "out3")
    with pytest.raises(ConfigError, match=r"no config\.json"):
        average_models([a, tmp_path], tmp_path / "out4")
    with pytest.raises(ConfigError, match="one of the members"):
        average_models([a, a], a)
    with pytest.raises(ConfigError, match="--weights"):
        average_models([a, a], tmp_path / "out5", weights=[1.0])
