"""The multi-GPU launch configs in recipes/accelerate/ load with accelerate's own loader, every key means
something to `accelerate launch`, and the values build accelerate's DeepSpeed / FSDP plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[3] / "recipes" / "accelerate"
LAUNCHER_ONLY = {"deepspeed_multinode_launcher"}  # read by the launcher, not by the plugin
FSDP_RENAMED = {"version": "fsdp_version", "offload_params": "cpu_offload"}  # launch key -> plugin field


def _load(name: str):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(CONFIGS / name))  # raises on unknown top-level keys


def _launch_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return set(vars(launch_command_parser().parse_args(["train.py"])))


def _deepspeed_plugin(config):
    from accelerate.utils import DeepSpeedPlugin

    values = {k: v for k, v in config.deepspeed_config.items() if k not in LAUNCHER_ONLY}
    return DeepSpeedPlugin(**values)


@pytest.mark.parametrize("name", sorted(path.name for path in CONFIGS.glob("*.yaml")))
def test_config_loads_and_every_key_is_a_launch_option(name: str) -> None:
    config = _load(name)
    assert config.num_processes == 8 and config.num_machines == 1 and config.mixed_precision == "bf16"
    nested = {**(config.deepspeed_config or {}), **(config.fsdp_config or {})}
    assert nested, f"{name}: neither a deepspeed_config nor an fsdp_config"
    assert set(nested) <= _launch_options(), set(nested) - _launch_options()


@pytest.mark.parametrize(("name", "stage"), [("zero2.yaml", 2), ("zero3.yaml", 3)])
def test_deepspeed_configs_build_accelerates_plugin(name: str, stage: int) -> None:
    config = _load(name)
    assert config.distributed_type.value == "DEEPSPEED"
    zero = _deepspeed_plugin(config).deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == "none" and zero["offload_param"]["device"] == "none"
    if stage == 3:  # the merged model vLLM serves needs the gathered 16-bit weights on save
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_deepspeed_configs_pass_deepspeeds_schema() -> None:
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (GPU-only dependency)")
    from deepspeed.runtime.config import DeepSpeedConfig

    for name in ("zero2.yaml", "zero3.yaml"):
        ds = _deepspeed_plugin(_load(name)).deepspeed_config
        filled = {key: (1 if value == "auto" else value) for key, value in ds.items()}
        filled["train_batch_size"] = (
            filled["train_micro_batch_size_per_gpu"] * filled["gradient_accumulation_steps"]
        )
        DeepSpeedConfig(filled, world_size=1)


def test_fsdp2_config_builds_accelerates_plugin() -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin

    config = _load("fsdp2.yaml")
    assert config.distributed_type.value == "FSDP"
    values = {key.removeprefix("fsdp_"): value for key, value in config.fsdp_config.items()}
    values = {FSDP_RENAMED.get(key, key): value for key, value in values.items()}
    values["auto_wrap_policy"] = values["auto_wrap_policy"].lower()
    plugin = FullyShardedDataParallelPlugin(**values)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "FULL_STATE_DICT" and plugin.cpu_ram_efficient_loading is True
    assert plugin.activation_checkpointing is False  # the recipe's activation_checkpointing does it
