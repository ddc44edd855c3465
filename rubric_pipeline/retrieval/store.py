"""The one on-disk layout every index uses: ``meta.json`` + an optional ``passages.jsonl`` + its own files.

``meta.json`` records the index kind, the passage count, the passages' fingerprint and the index's own
parameters; it is written last, so a folder whose write was interrupted has no meta and reads as "no index".
An index saved inside another (BM25 and dense inside a hybrid retriever) leaves the passage table to its
parent, so a million passages are stored, and loaded, once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rubric_pipeline.core.records import Passage
from rubric_pipeline.corpus import passages_fingerprint, read_passages, write_passages

META_FILE = "meta.json"
PASSAGES_FILE = "passages.jsonl"


def save_index(
    directory: str | Path,
    kind: str,
    passages: Sequence[Passage],
    write: Callable[[Path], None],
    *,
    with_passages: bool = True,
    fingerprint: str | None = None,
    **params: Any,
) -> Path:
    """Create ``directory``, let ``write(directory)`` store the index files, then the passages and meta."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).unlink(missing_ok=True)  # until rewritten, the folder holds no valid index
    write(directory)
    if with_passages:
        write_passages(directory / PASSAGES_FILE, passages)
    meta = {
        "kind": kind,
        "passages": len(passages),
        "fingerprint": fingerprint or passages_fingerprint(passages),
        "with_passages": with_passages,
        **params,
    }
    tmp = directory / f"{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, directory / META_FILE)
    return directory


def read_meta(directory: str | Path, kind: str | None = None) -> dict[str, Any] | None:
    """The meta of the index in ``directory`` (None when there is none); a wrong ``kind`` is an error."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        return None
    meta = json.loads(path.read_text(encoding="utf-8"))
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{directory}: holds a {meta.get('kind')!r} index, not a {kind!r} one")
    return meta


def load_index(
    directory: str | Path, kind: str, passages: Sequence[Passage] | None = None
) -> tuple[dict[str, Any], list[Passage]]:
    """``(meta, passages)`` of a saved index; ``passages`` must be given for one saved without its table."""
    directory = Path(directory)
    meta = read_meta(directory, kind)
    if meta is None:
        raise FileNotFoundError(f"no {kind} index at {directory} (missing {META_FILE})")
    if passages is None:
        if not meta.get("with_passages", True):
            raise ValueError(f"{directory}: this {kind} index was saved without passages; pass them")
        passages = read_passages(directory / PASSAGES_FILE)
    passages = list(passages)
    if len(passages) != meta["passages"]:
        raise ValueError(
            f"{directory}: the {kind} index holds {meta['passages']} passages, given {len(passages)}"
        )
    return meta, passages


def saved_fingerprint(directory: str | Path) -> str | None:
    """The passage fingerprint recorded at save time, or None when no index is there."""
    meta = read_meta(directory)
    return None if meta is None else meta.get("fingerprint")
