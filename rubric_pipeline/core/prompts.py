"""Prompt templates kept as package data files, and the version hash that records which texts were used.

Templates use :class:`string.Template` syntax (``$name``); JSON files hold small tables of instruction
texts. A :class:`PromptFiles` names the files of one package folder in a fixed order; its ``version`` is
``<prefix>.<first 8 hex digits of sha256 over those files>``, so it changes whenever any of their texts
does and datasets and reports can say exactly which prompts produced them.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from importlib import resources
from importlib.resources.abc import Traversable
from string import Template
from typing import Any


class PromptFiles:
    """The prompt files ``names`` of package ``package``, read once each (``importlib.resources``, so an
    installed wheel works the same as a checkout)."""

    def __init__(self, package: str, names: tuple[str, ...], prefix: str):
        self.package, self.names, self.prefix = package, names, prefix
        self._texts: dict[str, str] = {}
        self._parsed: dict[str, Any] = {}  # templates and JSON tables: the judge renders one per window

    def path(self, name: str) -> Traversable:
        path = resources.files(self.package) / name
        if not path.is_file():
            raise FileNotFoundError(f"prompt template not found: {path}")
        return path

    def text(self, name: str) -> str:
        if name not in self._texts:
            self._texts[name] = self.path(name).read_text(encoding="utf-8")
        return self._texts[name]

    def template(self, name: str) -> Template:
        if name not in self._parsed:
            self._parsed[name] = Template(self.text(name))
        return self._parsed[name]

    def data(self, name: str) -> Any:
        """A JSON file's content (shared: do not modify it)."""
        if name not in self._parsed:
            self._parsed[name] = json.loads(self.text(name))
        return self._parsed[name]

    @cached_property
    def version(self) -> str:
        digest = hashlib.sha256()
        for name in self.names:
            digest.update(self.path(name).read_bytes())
        return f"{self.prefix}.{digest.hexdigest()[:8]}"
