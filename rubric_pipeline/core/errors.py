"""The toolkit's own exceptions: one root class, so callers (and the CLI) can tell them from bugs.

``rubric-verifier`` prints a :class:`RubricVerifierError` (and a missing or unreadable file) as one line
and exits 2; any other exception is a bug in the toolkit and keeps its traceback. The subclasses live next
to the code that raises them (``LLMError`` in ``core/llm.py``, ``WebSearchError`` in
``retrieval/web.py``, ``EngineError`` in ``verifier/serve/engine.py``); the two defined here are raised all
over the toolkit.
"""

from __future__ import annotations

from pathlib import Path


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
