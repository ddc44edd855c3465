"""Typed stage configs: one dataclass per stage, filled from a YAML recipe section and CLI flags.

Each field becomes a flag (``max_rubrics`` -> ``--max-rubrics``) whose help text is the field's
``metadata["help"]``. Precedence: dataclass default < recipe section < explicit flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from rubric_pipeline.core.errors import ConfigError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with CLI help text; mutable defaults are copied per instance."""
    if isinstance(default, list | dict):
        value = default
        factory = lambda: type(value)(value)  # noqa: E731
        return dataclasses.field(default_factory=factory, metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of dataclass ``cls``; unset flags stay absent from the namespace."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} (also settable in the recipe)")
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        annotation, optional = _unwrap_optional(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        shown = default.value if isinstance(default, Enum) else default
        help_text = f"{field.metadata.get('help', '')} (default: {shown!r})"
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
        origin = typing.get_origin(annotation)
        if annotation is bool:
            group.add_argument(flag, type=_parse_bool, metavar="BOOL", **kwargs)
        elif origin is list:
            (item_type,) = typing.get_args(annotation) or (str,)
            group.add_argument(flag, type=item_type, nargs="*", metavar=field.name.upper(), **kwargs)
        elif annotation in (int, float, str):
            group.add_argument(flag, type=annotation, metavar=field.name.upper(), **kwargs)
        elif origin is typing.Literal:
            group.add_argument(flag, choices=typing.get_args(annotation), **kwargs)
        elif isinstance(annotation, type) and issubclass(annotation, Enum):
            metavar = "|".join(member.value for member in annotation)
            group.add_argument(flag, type=annotation, choices=list(annotation), metavar=metavar, **kwargs)
        elif optional or annotation is Any:
            group.add_argument(flag, type=str, **kwargs)
        else:  # nested or exotic types are recipe-only
            continue


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``FIELD=JSON`` command-line items as a mapping of overrides (a value that is not JSON stays a
    string)."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected FIELD=JSON")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def load_recipe(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {where}invalid YAML ({problem})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of stage sections, got {type(data).__name__}")
    return data


def build_config(
    cls: type[T],
    recipe: str | Path | dict[str, Any] | None = None,
    section: str | None = None,
    args: argparse.Namespace | dict[str, Any] | None = None,
) -> T:
    """Instantiate ``cls`` from a recipe section, then apply explicit CLI overrides."""
    data = recipe if isinstance(recipe, dict) else load_recipe(recipe)
    values: dict[str, Any] = dict(data.get(section) or {}) if section else dict(data)
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"section {section!r} of {recipe}" if section else str(recipe)
        raise ConfigError(f"{where}: unknown option(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    where = f"section {section!r} of {recipe}" if section and not isinstance(recipe, dict) else "recipe"
    values = {
        key: _check_type(value, hints[key], f"{where}: option {key!r}") for key, value in values.items()
    }
    overrides = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    values.update({key: value for key, value in overrides.items() if key in known})
    return cls(**values)


def _check_type(value: Any, annotation: Any, what: str) -> Any:
    """A recipe value of a scalar field, checked (ints accepted for floats, numeric strings such as YAML's
    ``1e-5`` converted); other annotations pass through unchecked."""
    annotation, optional = _unwrap_optional(annotation)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{what} may not be empty")
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{what} must be one of {list(choices)}, got {value!r}")
        return value
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        try:
            return annotation(value)
        except ValueError:
            choices = [member.value for member in annotation]
            raise ValueError(f"{what} must be one of {choices}, got {value!r}") from None
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return _parse_bool(value)
            except argparse.ArgumentTypeError:
                pass
    elif annotation in (int, float):
        if isinstance(value, bool):
            pass
        elif isinstance(value, int) or (annotation is float and isinstance(value, float)):
            return annotation(value)
        elif isinstance(value, str):
            try:
                return annotation(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"{what} expects {annotation.__name__}, got {type(value).__name__} {value!r}")


def config_hash(*configs: Any) -> str:
    """Short stable hash of one or more dataclass configs, recorded in dataset provenance."""
    payload = [dataclasses.asdict(c) if dataclasses.is_dataclass(c) else c for c in configs]
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:12]
