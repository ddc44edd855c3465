"""JSON Lines io shared by every reader and writer: records one per line, errors naming file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rubric_pipeline.core.errors import RecordError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)``; blank lines are skipped; bad JSON or text that is not UTF-8 raises
    :class:`RecordError`, a missing path or a folder ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: {'is a folder, not a JSONL file' if path.is_dir() else 'no such file'}"
        )
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RecordError(
                    path, line_number, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(path, line_number, f"malformed JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise RecordError(path, line_number, f"expected a JSON object, got {type(record).__name__}")
            yield line_number, record


def require(record: dict[str, Any], name: str, source: str | Path, where: int | str, kind: type = str) -> Any:
    """Fetch a required field, raising :class:`RecordError` naming the record when absent or mistyped."""
    if name not in record or record[name] is None:
        raise RecordError(source, where, "missing required field", name)
    value = record[name]
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, kind):
        raise RecordError(source, where, f"expected {kind.__name__}, got {type(value).__name__}", name)
    return value


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]], append: bool = False) -> int:
    """Write records one per line (flushed), creating parent folders; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        handle.flush()
    return count
