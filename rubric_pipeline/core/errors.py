"""The toolkit's own exceptions: one root class, so callers (and the CLI) can tell them from bugs.

``rubric-verifier`` prints a :class:`RubricVerifierError` (and a missing or unreadable file) as one line
and exits 2; any other exception is a bug in the toolkit and keeps its traceback. The subclasses live next
to the code that raises them (``LLMError`` in ``core/llm.py``, ``WebSearchError`` in
``retrieval/web.py``, ``EngineError`` in ``verifier/serve/engine.py``); ``ConfigError`` and ``RecordError``
are raised all over the toolkit, so they live here, with the translation of a pydantic validation error
into a one-line ``RecordError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError


class RubricVerifierError(Exception):
    """Root of every error the toolkit raises on purpose (bad input, bad config, a server that failed)."""


class ConfigError(RubricVerifierError, ValueError):
    """A bad recipe value, flag or combination of options; the message names the option."""


class RecordError(RubricVerifierError, ValueError):
    """A bad input record: the message names the file, the line (or record id) and the field.

    ``where`` is a 1-based line number, a record id, or 0/None for the file as a whole (e.g. empty).
    ``source`` may be None for a record that came from no file (an API body, a Python call).
    """

    def __init__(
        self,
        source: str | Path | None,
        where: int | str | None,
        problem: str,
        field_name: str | None = None,
    ):
        self.source = None if source is None else str(source)
        self.where, self.field_name, self.problem = where, field_name, problem
        parts = [self.source] if self.source else []
        if isinstance(where, str):
            parts.append(f"record {where!r}")
        elif where:
            parts.append(f"line {where}")
        location = ": ".join(parts)
        if field_name:
            location = f"{location}, field {field_name!r}" if location else f"field {field_name!r}"
        super().__init__(f"{location}: {problem}" if location else problem)


def _problem(error: Any) -> str:
    """One pydantic error in the words the file readers use."""
    kind, got = error["type"], type(error.get("input")).__name__
    if kind == "missing":
        return "missing required field"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if not error["loc"]:
            return f"a rubric is a string or an object with a string 'text', got {got}"
        return f"expected an object, got {got}"
    expected = {"string_type": "str", "float_type": "number", "list_type": "list"}.get(kind)
    if expected:
        return f"expected {expected}, got {got}"
    return f"{error['msg']}, got {error.get('input')!r}"


def validation_record_error(
    exc: ValidationError, source: str | Path | None, where: int | str | None, name: str | None
) -> RecordError:
    """The first error of a pydantic validation as a one-line :class:`RecordError`."""
    error = exc.errors()[0]
    path = name or ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    more = len(exc.errors()) - 1
    problem = _problem(error) + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
    return RecordError(source, where, problem, path or None)
