"""Prompt templates of the build stages, kept as data files (``string.Template`` syntax, ``$name``).

``PROMPT_VERSION`` changes whenever a template's text changes, so datasets record exactly which prompts
produced them.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from string import Template

PROMPTS_DIR = Path(__file__).resolve().parent
PROMPT_NAMES: tuple[str, ...] = (
    "rewrite",
    "extract",
    "merge",
    "importance",
    "rewrite_passage",
    "duplicate",
    "relevance",
)


@cache
def load_prompt(name: str) -> Template:
    path = PROMPTS_DIR / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"prompt template not found: {path}")
    return Template(path.read_text(encoding="utf-8"))


def render_prompt(name: str, **values: object) -> str:
    """Fill a template; a missing value raises ``KeyError`` naming it."""
    return load_prompt(name).substitute({key: str(value) for key, value in values.items()}).strip()


def _version() -> str:
    digest = hashlib.sha256()
    for name in PROMPT_NAMES:
        digest.update((PROMPTS_DIR / f"{name}.txt").read_bytes())
    return f"build-1.{digest.hexdigest()[:8]}"


PROMPT_VERSION: str = _version()
