"""Read a corpus (JSONL or a Hugging Face dataset saved to disk) and chunk it into passages.

A document ``{id, text, title?, url?}`` becomes one passage per window of at most ``chunk_words`` words,
windows overlapping by up to ``overlap_words``; ``passage_id`` is ``f"{doc_id}#{chunk_index}"``, so ids are
stable for a given document and chunking setting. By default (``chunk_by="sentences"``) a window holds whole
sentences as the document wrote them, line breaks included, so no passage starts or ends mid-sentence;
``chunk_by="words"`` cuts plain word windows. A document that fits one window keeps its text as written.

Field aliases cover common real corpora: ``docid``/``doc_id``/``_id`` for ``id`` and ``contents``
(Pyserini) / ``segment`` (MS MARCO v2.1 segmented, TREC RAG) for ``text``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.records import Passage, RecordError, iter_jsonl, write_jsonl
from rubric_pipeline.core.text import split_sentences

logger = logging.getLogger(__name__)

ID_FIELDS = ("id", "docid", "doc_id", "_id")
TEXT_FIELDS = ("text", "contents", "segment")
DEFAULT_CHUNK_WORDS = 200
DEFAULT_OVERLAP_WORDS = 40
Chunking = Literal["sentences", "words"]
DEFAULT_CHUNK_BY: Chunking = "sentences"


def _check_window(size: int, overlap: int) -> None:
    if size < 1:
        raise ConfigError(f"chunk size must be >= 1 word, got {size}")
    if not 0 <= overlap < size:
        raise ConfigError(f"overlap must be in [0, chunk size={size}), got {overlap}")


def split_windows(
    text: str, size: int = DEFAULT_CHUNK_WORDS, overlap: int = DEFAULT_OVERLAP_WORDS
) -> list[str]:
    """Split ``text`` into windows of ``size`` words overlapping by ``overlap``; the last ends the text."""
    _check_window(size, overlap)
    words = text.split()
    if len(words) <= size:
        return [text.strip()]
    stride = size - overlap
    chunks = []
    start = 0
    while True:
        chunks.append(" ".join(words[start : start + size]))
        if start + size >= len(words):
            return chunks
        start += stride


def _sentence_units(text: str, size: int) -> list[tuple[int, int, int]]:
    """(start, end, words) character spans of the sentences of ``text``, in order; a sentence longer than
    ``size`` words comes as consecutive pieces of ``size`` words. Empty when a sentence cannot be located
    in the text (the caller then falls back to word windows)."""
    units, position = [], 0
    for sentence in split_sentences(text):
        start = text.find(sentence, position)
        if start < 0:
            return []
        words = [(start + m.start(), start + m.end()) for m in re.finditer(r"\S+", sentence)]
        for first in range(0, len(words), size):
            piece = words[first : first + size]
            units.append((piece[0][0], piece[-1][1], len(piece)))
        position = start + len(sentence)
    return units


def sentence_windows(
    text: str, size: int = DEFAULT_CHUNK_WORDS, overlap: int = DEFAULT_OVERLAP_WORDS
) -> list[str]:
    """Split ``text`` into windows of whole sentences, each at most ``size`` words (a longer sentence is cut
    into ``size``-word pieces); a window repeats the previous one's last sentences as long as they total at
    most ``overlap`` words. Windows are the document's own characters, line breaks kept."""
    _check_window(size, overlap)
    if len(text.split()) <= size:  # most documents of big corpora: no sentence splitting needed
        return [text.strip()]
    units = _sentence_units(text, size)
    if not units:
        return split_windows(text, size, overlap)
    windows, start = [], 0
    while True:
        end, words = start + 1, units[start][2]
        while end < len(units) and words + units[end][2] <= size:
            words += units[end][2]
            end += 1
        windows.append(text[units[start][0] : units[end - 1][1]])
        if end == len(units):
            return windows
        next_start, shared = end, 0  # step back over whole sentences, never to this window's start
        while next_start - 1 > start and shared + units[next_start - 1][2] <= overlap:
            next_start -= 1
            shared += units[next_start][2]
        start = next_start


WINDOWS = {"sentences": sentence_windows, "words": split_windows}


def _pick(record: dict[str, Any], names: tuple[str, ...]) -> tuple[str, Any]:
    for name in names:
        if record.get(name) is not None:
            return name, record[name]
    return names[0], None


def document_to_passages(
    record: dict[str, Any],
    source: str | Path,
    where: int | str,
    chunk_size: int = DEFAULT_CHUNK_WORDS,
    overlap: int = DEFAULT_OVERLAP_WORDS,
    chunk_by: Chunking = DEFAULT_CHUNK_BY,
) -> list[Passage]:
    """Validate one document record and chunk it; errors name ``source``, ``where`` and the field."""
    id_field, doc_id = _pick(record, ID_FIELDS)
    if doc_id is None:
        raise RecordError(source, where, "missing required field", "id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int):
        raise RecordError(source, where, f"expected a string id, got {type(doc_id).__name__}", id_field)
    doc_id = str(doc_id).strip()
    if not doc_id:
        raise RecordError(source, where, "empty id", id_field)
    text_field, text = _pick(record, TEXT_FIELDS)
    if text is None:
        raise RecordError(source, where, f"missing required field (document {doc_id!r})", "text")
    if not isinstance(text, str):
        raise RecordError(source, where, f"expected a string, got {type(text).__name__}", text_field)
    if not text.strip():
        raise RecordError(source, where, f"empty text (document {doc_id!r})", text_field)
    optional: dict[str, str | None] = {}
    for name in ("title", "url"):
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            raise RecordError(source, where, f"expected a string, got {type(value).__name__}", name)
        optional[name] = value or None
    return [
        Passage(passage_id=f"{doc_id}#{index}", doc_id=doc_id, text=chunk, **optional)
        for index, chunk in enumerate(WINDOWS[chunk_by](text, chunk_size, overlap))
    ]


def _iter_records(path: Path) -> Iterator[tuple[int | str, dict[str, Any]]]:
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        dataset = load_from_disk(str(path))
        if isinstance(dataset, DatasetDict):
            if len(dataset) != 1 and "train" not in dataset:
                raise RecordError(path, "<dataset>", f"several splits {sorted(dataset)}; save one split")
            dataset = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
        for row_index, row in enumerate(dataset):
            yield f"row {row_index}", row
    else:
        yield from iter_jsonl(path)


def load_corpus(
    path: str | Path,
    chunk_words: int = DEFAULT_CHUNK_WORDS,
    overlap_words: int = DEFAULT_OVERLAP_WORDS,
    *,
    overlap: int | None = None,
    chunk_by: Chunking = DEFAULT_CHUNK_BY,
) -> list[Passage]:
    """Read documents from a JSONL file or a ``datasets`` directory and return their passages, in order.

    ``overlap`` is accepted as a short alias of ``overlap_words``.

    Raises :class:`RecordError` for a malformed line, a missing or empty ``id``/``text``, or a duplicate id.
    """
    path = Path(path)
    overlap_words = overlap_words if overlap is None else overlap
    if not path.exists():
        raise FileNotFoundError(f"corpus not found: {path}")
    passages: list[Passage] = []
    first_seen: dict[str, int | str] = {}
    for where, record in _iter_records(path):
        chunks = document_to_passages(record, path, where, chunk_words, overlap_words, chunk_by)
        doc_id = chunks[0].doc_id
        if doc_id in first_seen:
            raise RecordError(path, where, f"duplicate id {doc_id!r} (first at {first_seen[doc_id]})", "id")
        first_seen[doc_id] = where
        passages.extend(chunks)
    if not passages:
        raise RecordError(path, 0, "no documents in corpus")
    logger.info("corpus %s: %d documents -> %d passages", path, len(first_seen), len(passages))
    return passages


def write_passages(path: str | Path, passages: Iterable[Passage]) -> int:
    """Write a passage table as JSONL (one :class:`Passage` per line)."""
    return write_jsonl(path, (passage.to_dict() for passage in passages))


def read_passages(path: str | Path) -> list[Passage]:
    """Read a passage table written by :func:`write_passages`."""
    passages = []
    for line_number, record in iter_jsonl(path):
        for name in ("passage_id", "doc_id", "text"):
            if not isinstance(record.get(name), str):
                raise RecordError(path, line_number, "missing or non-string field", name)
        passages.append(Passage.from_dict(record))
    return passages


def passages_fingerprint(passages: Iterable[Passage]) -> str:
    """Hash of passage ids and texts: tells whether a saved index still matches a corpus."""
    digest = hashlib.sha256()
    for passage in passages:
        digest.update(passage.passage_id.encode())
        digest.update(b"\0")
        digest.update((passage.title or "").encode())
        digest.update(b"\0")
        digest.update(passage.text.encode())
        digest.update(b"\1")
    return digest.hexdigest()[:16]


def index_text(passage: Passage) -> str:
    """The text an index sees: title (when any) then passage text."""
    return f"{passage.title}\n{passage.text}" if passage.title else passage.text
