"""The verifier's contract: render (question, response, rubric window) as chat messages; read labels back.

The invariant part (instructions, question, response) comes first and the numbered rubric list last, so
every window of one response shares a token prefix that vLLM's prefix cache reuses. The model answers
with an optional ``<reasoning>...</reasoning>`` block, then one label per rubric in one of
:data:`OUTPUT_FORMATS` (JSON list is canonical). :func:`parse_labels` reads all of them; a wrong count or
an unknown label raises :class:`ParseError` carrying the raw text, never a guess.
"""

from __future__ import annotations

import ast
import csv
import io
import itertools
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.prompts import PromptFiles
from rubric_pipeline.core.records import LABELS
from verifier.judge.hints import Hints, annotate

DEFAULT_WINDOW = 10
OUTPUT_FORMATS: tuple[str, ...] = (
    "json", "python", "csv", "tsv", "yaml", "markdown", "xml", "numbered", "comma", "pipe",
)  # fmt: skip
EXAMPLE_LABELS: tuple[str, ...] = ("support", "not_support", "partial_support")
_TEMPLATE_FILES: tuple[str, ...] = ("judge.txt", "rubrics.txt", "formats.json", "reasoning.json")


class ParseError(ValueError):
    """Model output that does not hold exactly the expected labels; ``.raw`` is the text, ``.reason`` why."""

    def __init__(self, reason: str, raw: str):
        self.reason, self.raw = reason, raw
        preview = raw if len(raw) <= 200 else raw[:200] + "..."
        super().__init__(f"{reason} (raw output: {preview!r})")


@dataclass(frozen=True)
class ParsedOutput:
    labels: tuple[str, ...]
    reasoning: str | None
    output_format: str


# ---------------------------------------------------------------- templates

PROMPTS = PromptFiles("verifier.judge.prompts", _TEMPLATE_FILES, prefix="judge-1")
PROMPT_VERSION: str = PROMPTS.version
HINTS_SUFFIX = {"none": "", "words": "+word-hints", "evidence": "+evidence"}


def prompt_version(hints: Hints = "none") -> str:
    """The version a dataset or model records: the templates' hash, marked when rubric lines carry hints."""
    return PROMPT_VERSION + HINTS_SUFFIX[hints]


def window_slices(
    n: int, size: int = DEFAULT_WINDOW, *, max_size: int | None = None, rng: random.Random | None = None
) -> list[slice]:
    """Consecutive windows covering ``range(n)``: ``size`` rubrics each (the last may be shorter), or, with
    ``max_size``, each of a size drawn from ``rng.randint(size, max_size)`` (the training mix of 1..10)."""
    largest = size if max_size is None else max_size
    if not 1 <= size <= largest:
        raise ConfigError(f"window sizes need 1 <= min <= max, got {size}..{largest}")
    if max_size is not None and rng is None:
        raise ValueError("window_slices: drawn window sizes (max_size) need an rng")
    slices, start = [], 0
    while start < n:
        step = size if max_size is None else rng.randint(size, max_size)
        slices.append(slice(start, min(start + step, n)))
        start += step
    return slices


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_prefix(question: str, response: str, output_format: str = "json", reasoning: bool = False) -> str:
    """The invariant part of the prompt, identical for every window of one response."""
    if output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown output format {output_format!r}; known: {list(OUTPUT_FORMATS)}")
    instruction = (
        PROMPTS.data("formats.json")[output_format] + "\n" + format_labels(EXAMPLE_LABELS, output_format)
    )
    return PROMPTS.template("judge.txt").substitute(
        reasoning_instruction=PROMPTS.data("reasoning.json")["with" if reasoning else "without"],
        format_instruction=instruction,
        question=question.strip(),
        response=response.strip(),
    )


def render_prompt(
    question: str,
    response: str,
    rubric_texts: Sequence[str],
    output_format: str = "json",
    reasoning: bool = False,
    hints: Hints = "none",
) -> str:
    """The whole prompt as one string: the invariant prefix, then the numbered rubric list (each line with
    its hint, :func:`verifier.judge.hints.annotate`)."""
    if not rubric_texts:
        raise ValueError("a judging prompt needs at least one rubric")
    lines = annotate([_one_line(text) for text in rubric_texts], response, hints)
    numbered = "\n".join(f"{index}. {line}" for index, line in enumerate(lines, start=1))
    tail = PROMPTS.template("rubrics.txt").substitute(rubrics=numbered, n=len(rubric_texts))
    return render_prefix(question, response, output_format, reasoning) + tail


def render_messages(
    question: str,
    response: str,
    rubric_texts: Sequence[str],
    output_format: str = "json",
    reasoning: bool = False,
    hints: Hints = "none",
) -> list[dict[str, str]]:
    """Chat messages for one window: a single user turn (portable to templates without a system role)."""
    content = render_prompt(question, response, rubric_texts, output_format, reasoning, hints)
    return [{"role": "user", "content": content}]


def label_schema(n: int) -> dict:
    """JSON schema for constrained decoding: an array of exactly ``n`` labels."""
    return {"type": "array", "items": {"enum": list(LABELS)}, "minItems": n, "maxItems": n}


# ---------------------------------------------------------------- writing labels


def format_labels(labels: Sequence[str], output_format: str = "json", reasoning: str | None = None) -> str:
    """The text a model should produce (training targets); ``reasoning`` adds a ``<reasoning>`` block."""
    labels = list(labels)
    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise ValueError(f"unknown labels {unknown}; known: {list(LABELS)}")
    numbered = list(enumerate(labels, start=1))
    if output_format == "json":
        body = json.dumps(labels)
    elif output_format == "python":
        body = repr(labels)
    elif output_format in ("csv", "tsv"):
        sep = "," if output_format == "csv" else "\t"
        body = "\n".join([f"rubric{sep}label", *(f"{i}{sep}{label}" for i, label in numbered)])
    elif output_format == "yaml":
        body = "\n".join(f"- {label}" for label in labels)
    elif output_format == "markdown":
        body = "\n".join(
            ["| rubric | label |", "|---|---|", *(f"| {i} | {label} |" for i, label in numbered)]
        )
    elif output_format == "xml":
        body = "\n".join(["<labels>", *(f"<label>{label}</label>" for label in labels), "</labels>"])
    elif output_format == "numbered":
        body = "\n".join(f"{i}. {label}" for i, label in numbered)
    elif output_format == "comma":
        body = ", ".join(labels)
    elif output_format == "pipe":
        body = " | ".join(labels)
    else:
        raise ConfigError(f"unknown output format {output_format!r}; known: {list(OUTPUT_FORMATS)}")
    if reasoning is None:
        return body
    return f"<reasoning>{reasoning.strip()}</reasoning>\n{body}"


# ---------------------------------------------------------------- reading labels

_REASONING = re.compile(r"<(reasoning|think)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_OPEN_TAG = re.compile(r"<(reasoning|think)>", re.IGNORECASE)
_XML_LABEL = re.compile(r"<label\b[^>]*>(.*?)</label\s*>", re.DOTALL | re.IGNORECASE)
_NUMBERED = re.compile(r"^\(?(\d+)\s*[.):\]-]\s*(.+)$")
_BULLET = re.compile(r"^([-*+•])\s+(.+)$")
_TABLE_SEPARATOR = re.compile(r"^:?-{2,}:?$")
_STRIP = " \t\"'`*_.;,[]()"
_MAX_BRACKETS = 32  # bounds the work on long, bracket-heavy outputs


def normalize_label(token: str) -> str | None:
    """The canonical label for a token such as ``"Partial Support"`` or ``'not-support'``, else None."""
    cleaned = re.sub(r"[\s-]+", "_", token.strip().strip(_STRIP).lower())
    return cleaned if cleaned in LABELS else None


_LABEL_WORD = r"(not[\s_-]*support|partial[\s_-]*support|support)"
# A label that opens an item before a separator ("support: because") or closes it after one ("x -> support").
_LEADING_LABEL = re.compile(rf"^[\W_]*{_LABEL_WORD}[*_`'\"]*\s*[:(,.;\u2013\u2014-]", re.IGNORECASE)
_TRAILING_LABEL = re.compile(rf"[:=>|\u2013\u2014-]\s*[*_`'\"]*{_LABEL_WORD}[\W_]*$", re.IGNORECASE)


def _item_label(value: str, raw: str) -> str:
    """The label of a list item: the whole item, else a label that opens or closes it."""
    label = normalize_label(value)
    if label is not None:
        return label
    found = {
        normalize_label(m.group(1))
        for m in (_LEADING_LABEL.search(value), _TRAILING_LABEL.search(value))
        if m
    }
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        raise ParseError(f"ambiguous item {value.strip()!r}: it opens and closes with different labels", raw)
    return _label_or_raise(value, raw)


def _label_or_raise(token: str, raw: str) -> str:
    label = normalize_label(token)
    if label is None:
        raise ParseError(f"unknown label {token.strip()!r}; expected one of {list(LABELS)}", raw)
    return label


def split_reasoning(text: str) -> tuple[str | None, str]:
    """``(reasoning, rest)``: the first ``<reasoning>`` (or ``<think>``) block removed from the text."""
    match = _REASONING.search(text)
    if match is None:
        if _OPEN_TAG.search(text):
            raise ParseError("unclosed <reasoning> block", text)
        return None, text
    return match.group(2).strip(), text[: match.start()] + "\n" + text[match.end() :]


def _strip_fences(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("```"))


def _after_colon(line: str) -> str:
    """Drop a short prose lead such as ``Labels:`` before a one-line list."""
    head, sep, tail = line.rpartition(":")
    return tail if sep and normalize_label(head) is None else line


def _bracketed(body: str) -> tuple[list[str], str] | None:
    """A JSON or Python list (or ``{"labels": [...]}``) anywhere in the text (the first few brackets)."""
    decoder = json.JSONDecoder()
    for match in itertools.islice(re.finditer(r"[\[{]", body), _MAX_BRACKETS):
        try:
            value, _ = decoder.raw_decode(body, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            value = _dict_labels(value)
        if _is_string_list(value):
            return value, "json"
    ends = [match.start() for match in itertools.islice(re.finditer(r"\]", body), _MAX_BRACKETS)]
    for start in (match.start() for match in itertools.islice(re.finditer(r"\[", body), _MAX_BRACKETS)):
        for end in (end for end in ends if end > start):
            try:
                value = ast.literal_eval(body[start : end + 1])
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if _is_string_list(value):
                return value, "python"
    return None


def _dict_labels(value: dict) -> object:
    """``{"labels": [...]}`` -> the list; ``{"1": "support", "2": ...}`` (keys 1..n in order) -> values."""
    if len(value) == 1 and isinstance(next(iter(value.values())), list):
        return next(iter(value.values()))
    keys = [str(key).strip() for key in value]
    if (
        keys
        and all(key.isdigit() for key in keys)
        and [int(key) for key in keys] == list(range(1, len(keys) + 1))
    ):
        return list(value.values())
    return None


def _is_string_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


def _rows(lines: list[str], split, raw: str) -> list[str]:
    """The label cell of each tabular row (the one cell that is a label, else the last cell); a first row
    without a label is the header."""
    labels: list[str] = []
    for position, line in enumerate(lines):
        cells = [cell.strip() for cell in split(line)]
        cells = [cell for cell in cells if cell]
        if not cells or all(_TABLE_SEPARATOR.match(cell) for cell in cells):
            continue
        found = {label for label in map(normalize_label, cells) if label}
        if len(found) > 1:
            raise ParseError(f"ambiguous row {line!r}: several label cells", raw)
        if found:
            labels.append(found.pop())
        elif not labels and position <= 1:
            continue  # header row
        else:
            labels.append(_label_or_raise(cells[-1], raw))
    return labels


def _csv_cells(line: str, delimiter: str) -> list[str]:
    return next(csv.reader(io.StringIO(line), delimiter=delimiter), [])


def _line_formats(body: str, raw: str) -> tuple[list[str], str]:
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    table = [line for line in lines if line.startswith("|") and line.endswith("|") and line.count("|") >= 2]
    if table:
        return _rows(table, lambda line: line.strip("|").split("|"), raw), "markdown"
    numbered = [match for match in map(_NUMBERED.match, lines) if match]
    if numbered:
        indices = [int(match.group(1)) for match in numbered]
        if indices != list(range(indices[0], indices[0] + len(indices))) or indices[0] not in (0, 1):
            raise ParseError(f"numbered list out of order: {indices}", raw)
        return [_item_label(match.group(2), raw) for match in numbered], "numbered"
    bullets = [match for match in map(_BULLET.match, lines) if match]
    if bullets:
        kind = "yaml" if bullets[0].group(1) == "-" else "markdown"
        return [_item_label(match.group(2), raw) for match in bullets], kind
    tabbed = [line for line in lines if "\t" in line]
    if tabbed:
        return _rows(tabbed, lambda line: _csv_cells(line, "\t"), raw), "tsv"
    comma_lines = [line for line in lines if "," in line]
    if len(comma_lines) >= 2:
        return _rows(comma_lines, lambda line: _csv_cells(line, ","), raw), "csv"
    if len(comma_lines) == 1:
        return [_label_or_raise(token, raw) for token in _after_colon(comma_lines[0]).split(",")], "comma"
    piped = [line for line in lines if "|" in line]
    if piped:
        return [_label_or_raise(token, raw) for token in _after_colon(piped[0]).split("|")], "pipe"
    labels = [label for label in (normalize_label(_after_colon(line)) for line in lines) if label]
    if not labels:
        raise ParseError("no labels found", raw)
    return labels, "comma" if len(labels) == 1 else "lines"


def parse_labels(text: str, n: int) -> ParsedOutput:
    """Read exactly ``n`` labels from model output in any of :data:`OUTPUT_FORMATS`.

    Tolerates case, quotes, code fences and prose around the list. A bare single label reads as
    ``"comma"``; newline-separated bare labels as ``"lines"``. Raises :class:`ParseError` otherwise.
    """
    if n < 1:
        raise ValueError(f"expected a positive label count, got {n}")
    if not isinstance(text, str) or not text.strip():
        raise ParseError("empty output", text or "")
    reasoning, rest = split_reasoning(text)
    body = _strip_fences(rest)
    xml_items = _XML_LABEL.findall(body)
    if xml_items:
        labels, output_format = [_label_or_raise(item, text) for item in xml_items], "xml"
    else:
        found = _bracketed(body)
        if found is not None:
            labels, output_format = [_label_or_raise(item, text) for item in found[0]], found[1]
        else:
            labels, output_format = _line_formats(body, text)
    if len(labels) != n:
        raise ParseError(f"expected {n} labels, got {len(labels)}", text)
    return ParsedOutput(labels=tuple(labels), reasoning=reasoning, output_format=output_format)


# Formats whose text is also valid in the requested one (a double-quoted list is a valid Python list).
_COMPATIBLE: dict[str, frozenset[str]] = {
    "python": frozenset({"json"}),
    "markdown": frozenset({"yaml"}),
    "pipe": frozenset({"comma"}),  # only a single bare label reads as "comma" without a "|"
}


def complies(parsed: ParsedOutput, requested_format: str) -> bool:
    """Whether parsed output is in the requested format."""
    if parsed.output_format == requested_format:
        return True
    if requested_format == "pipe" and parsed.output_format == "comma":
        return len(parsed.labels) == 1
    return parsed.output_format in _COMPATIBLE.get(requested_format, frozenset())
