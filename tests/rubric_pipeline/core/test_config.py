from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from enum import StrEnum

import pytest

from rubric_pipeline.core.config import (
    add_config_arguments,
    build_config,
    config_hash,
    option,
    parse_settings,
)
from rubric_pipeline.core.errors import ConfigError


@dataclass
class StageConfig:
    name: str = option("x", help="a name")
    size: int = option(3, help="a size")
    rate: float = option(0.5, help="a rate")
    flag: bool = option(False, help="a flag")
    items: list[str] = option(["a"], help="items")
    path: str | None = option(None, help="optional path")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, StageConfig)
    return parser.parse_args(argv)


def test_defaults_then_recipe_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage:\n  size: 7\n  name: from-recipe\n")
    config = build_config(StageConfig, recipe, "stage", parse(["--size", "9", "--flag", "true"]))
    assert config == StageConfig(name="from-recipe", size=9, flag=True)


def test_unset_flags_do_not_override_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage:\n  rate: 0.1\n  items: [p, q]\n")
    config = build_config(StageConfig, recipe, "stage", parse([]))
    assert config.rate == 0.1 and config.items == ["p", "q"] and config.size == 3


def test_list_and_optional_flags():
    config = build_config(StageConfig, None, None, parse(["--items", "u", "v", "--path", "/x"]))
    assert config.items == ["u", "v"] and config.path == "/x"


def test_mutable_defaults_are_not_shared():
    first, second = StageConfig(), StageConfig()
    first.items.append("z")
    assert second.items == ["a"]


def test_unknown_recipe_key_names_section_and_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage:\n  sise: 7\n")
    with pytest.raises(ValueError, match=r"section 'stage'.*'sise'"):
        build_config(StageConfig, recipe, "stage", None)


def test_missing_recipe_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        build_config(StageConfig, tmp_path / "nope.yaml", "stage", None)


def test_config_hash_changes_with_values():
    assert config_hash(StageConfig()) == config_hash(StageConfig())
    assert config_hash(StageConfig()) != config_hash(StageConfig(size=4))


def test_bad_bool_flag_is_rejected():
    with pytest.raises(SystemExit):
        parse(["--flag", "maybe"])


class Mode(StrEnum):
    FAST = "fast"
    SLOW = "slow"


@dataclass
class ModeConfig:
    mode: Mode = option(Mode.FAST, help="a mode")


def test_enum_fields_take_their_values_from_flags_and_recipes(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ModeConfig)
    assert build_config(ModeConfig, None, None, parser.parse_args(["--mode", "slow"])).mode is Mode.SLOW
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "medium"])
    assert "--mode" in capsys.readouterr().err
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage:\n  mode: slow\n")
    assert build_config(ModeConfig, recipe, "stage", None).mode is Mode.SLOW
    recipe.write_text("stage:\n  mode: medium\n")
    with pytest.raises(ValueError, match=r"'mode' must be one of \['fast', 'slow'\], got 'medium'"):
        build_config(ModeConfig, recipe, "stage", None)
    assert config_hash(ModeConfig(Mode.SLOW)) == config_hash({"mode": "slow"})


def test_values_are_json_and_a_bare_word_stays_a_string() -> None:
    settings = parse_settings(["k=10", 'lora_target_modules=["q_proj"]', "hints=words", "x=a=b"])
    assert settings == {"k": 10, "lora_target_modules": ["q_proj"], "hints": "words", "x": "a=b"}


@pytest.mark.parametrize("item", ["no-equals", "=3"])
def test_an_item_without_a_field_name_is_refused_by_name(item: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(item))):
        parse_settings([item])
