"""Prompt templates of the build stages, kept as data files (``string.Template`` syntax, ``$name``).

``PROMPT_VERSION`` changes whenever a template's text changes, so datasets record exactly which prompts
produced them.
"""

from __future__ import annotations

from string import Template

from rubric_pipeline.core.prompts import PromptFiles

PROMPT_NAMES: tuple[str, ...] = (
    "rewrite",
    "extract",
    "merge",
    "importance",
    "rewrite_passage",
    "duplicate",
    "relevance",
)
FILES = PromptFiles(__name__, tuple(f"{name}.txt" for name in PROMPT_NAMES), prefix="build-1")


def load_prompt(name: str) -> Template:
    return FILES.template(f"{name}.txt")


def render_prompt(name: str, **values: object) -> str:
    """Fill a template; a missing value raises ``KeyError`` naming it."""
    return load_prompt(name).substitute({key: str(value) for key, value in values.items()}).strip()


PROMPT_VERSION: str = FILES.version
