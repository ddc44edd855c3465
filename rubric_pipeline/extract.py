"""Nugget extraction: at most a few atomic, self-contained facts per retrieved passage.

With an LLM the answer is constrained to ``{"nuggets": [str, ...]}`` (an empty list means "none"); without
one, the passage's sentences that overlap the question and queries most are selected. Every nugget is
cleaned and length-checked by :func:`clean_nugget` whichever path produced it.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from rubric_pipeline.core.records import Passage
from rubric_pipeline.core.text import (
    PRONOUNS,
    content_tokens,
    normalize,
    split_sentences,
    strip_markdown,
    tokens,
)
from rubric_pipeline.llm_call import ask_parsed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A nugget before merging, with the provenance it came from."""

    text: str
    passage_id: str
    doc_id: str
    query: str
    rank: int  # rank of the passage in the question's fused retrieval list (0 = best)
    url: str | None = None
    title: str | None = None


def nugget_pattern(max_chars: int = 200) -> str:
    """One sentence: starts with a capital or digit, ends with a period, no quotes, brackets or newlines
    (keeps small models from spilling JSON syntax into the text; also bounds its length)."""
    return rf'^[A-Z0-9][^"\\{{}}\[\]\n\r\t]{{8,{max(max_chars - 2, 8)}}}\.$'


def nugget_schema(max_nuggets: int = 3, max_chars: int = 200) -> dict:
    """JSON schema of one extraction answer; ``maxItems`` enforces the per-passage cap."""
    return {
        "type": "object",
        "properties": {
            "nuggets": {
                "type": "array",
                "items": {"type": "string", "pattern": nugget_pattern(max_chars)},
                "maxItems": max_nuggets,
            }
        },
        "required": ["nuggets"],
        "additionalProperties": False,
    }


def clean_nugget(text: str, min_words: int = 5, max_words: int = 35) -> str | None:
    """Normalize a nugget (Markdown list markers and bold dropped); ``None`` when it is empty, a "none"
    answer, or outside the word bounds."""
    text = normalize(strip_markdown(text))
    words = text.split()
    if not words or text.lower().rstrip(".") in {"none", "n/a", "nothing"}:
        return None
    if not min_words <= len(words) <= max_words:
        return None
    if not text.endswith((".", "!", "?")):
        text += "."
    return text[0].upper() + text[1:]


def decontextualize(sentence: str, title: str | None) -> str:
    """Replace a leading pronoun ("It was founded ...") with the passage title, when there is one."""
    words = sentence.split(maxsplit=1)
    if title and len(words) == 2 and words[0].lower() in PRONOUNS:
        return f"{title} {words[1]}"
    return sentence


_LEAD = re.compile(
    r"^(?:additionally|furthermore|moreover|however|also|overall|in addition|in summary|in conclusion|"
    r"finally|notably|importantly|similarly|consequently|therefore|thus|for example|for instance)\b,?\s*",
    re.IGNORECASE,
)
# a list introduced by "include(s)/including/such as/namely" or a colon: its items are the facts
_LIST_HEAD = re.compile(r"(?:\b(?:include|includes|included|including|such as|namely)\b|:)\s+", re.IGNORECASE)
# an item that continues the previous one ("..., which poses risks", "..., along with ...")
_CONTINUATION = re.compile(
    r"^(?:which|who|whom|whose|that|where|when|along|as|leading|resulting|causing|making|often|especially|"
    r"particularly|including|mainly|mostly|due|because|thereby|thus)\b",
    re.IGNORECASE,
)
# statements about the answer itself, not the topic: RAG answers are full of them
_META = re.compile(
    r"\b(?:I|I'm|I've|my)\b|\b(?:provided|given|retrieved|above|these|the)\s+(?:documents?|passages?|context|"
    r"sources?|search results|information provided)\b|\bno (?:specific|direct|relevant) information\b|"
    r"\bdoes not (?:contain|provide|mention|specify)\b|\[\d+\]",
)
_CONTRAST = re.compile(r",\s+(?:while|whereas|but)\s+", re.IGNORECASE)


def _top_level_split(text: str) -> list[str]:
    """Split at commas (and a final "and"/"or") outside parentheses."""
    items, depth, current = [], 0, []
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def split_clauses(sentence: str, min_item_words: int = 3) -> list[str]:
    """Atomic statements of one sentence: a leading connective dropped, split at semicolons and contrast
    clauses, and a list ("X include a, b, and c") split into its items when every item has at least
    ``min_item_words`` words (else the part stays whole). Real answers pack several facts per sentence;
    short single-fact statements match nugget-style gold far better than the whole sentence."""
    clauses: list[str] = []
    for part in re.split(r";\s+", _LEAD.sub("", sentence.strip())):
        for piece in _CONTRAST.split(part):
            piece = piece.strip().rstrip(".")
            head = _LIST_HEAD.search(piece)
            items: list[str] = []
            for item in _top_level_split(piece[head.end() :]) if head else []:
                if items and (len(item.split()) < min_item_words or _CONTINUATION.match(item)):
                    # a nested list ("a, b, or c") or a clause that continues the item stays with it
                    items[-1] = f"{items[-1]}, {item}"
                else:
                    items.append(re.sub(r"^(?:and|or)\s+", "", item))
            if len(items) >= 2 and all(len(item.split()) >= min_item_words for item in items):
                clauses.extend(items)
            elif piece:
                clauses.append(piece)
    return clauses


def idf_weights(texts: Iterable[str]) -> dict[str, float]:
    """BM25-style inverse document frequency of every content token over ``texts``."""
    frequency: Counter[str] = Counter()
    count = 0
    for text in texts:
        frequency.update(set(content_tokens(text)))
        count += 1
    return {term: math.log(1 + (count - df + 0.5) / (df + 0.5)) for term, df in frequency.items()}


def question_coverage(question: str, text: str, weights: Mapping[str, float] | None = None) -> float:
    """Weight of the question's content terms that ``text`` contains (each term counted once)."""
    present = set(tokens(text))
    return sum((weights or {}).get(term, 1.0) for term in set(content_tokens(question)) if term in present)


def extract_offline(
    question: str,
    queries: Sequence[str],
    passage: Passage,
    *,
    max_nuggets: int = 3,
    min_words: int = 5,
    max_words: int = 35,
    term_weights: Mapping[str, float] | None = None,
    anchors: Collection[str] | None = None,
    clauses: bool = False,
    sentence_anchor: bool = True,
) -> list[str]:
    """Extractive nuggets: the passage sentences with the most term weight (``term_weights``, e.g. idf;
    default 1) on question terms (x1), expansion-query terms (x0.5) and any other content (x0.25, so
    informative sentences beat filler that merely repeats the question).

    A sentence must contain an anchor term: ``anchors`` when given (the pipeline passes the question's
    rarest term found by retrieval, typically the entity name; a passage without one yields nothing),
    else the heaviest question term present in this passage. With ``sentence_anchor=False`` the passage
    must contain one and its sentences need not (for corpora whose passages stay on one topic, such as
    answers to the question). With ``clauses`` each sentence yields its :func:`split_clauses` statements
    and sentences about the answer itself ("the provided documents do not ...", "I cannot find") are skipped.
    """
    weights = term_weights or {}
    question_terms = set(content_tokens(question))
    query_terms = set(content_tokens(" ".join(queries))) - question_terms
    in_passage = question_terms & set(tokens(f"{passage.title or ''} {passage.text}"))
    if anchors is None and in_passage:
        top = max(weights.get(term, 1.0) for term in in_passage)
        anchors = {term for term in in_passage if weights.get(term, 1.0) >= top}
    if not anchors or (not sentence_anchor and not set(anchors) & set(tokens(passage.text))):
        return []
    scored: list[tuple[float, int, str]] = []
    units = [
        (sentence, unit)
        for sentence in (decontextualize(raw, passage.title) for raw in split_sentences(passage.text))
        for unit in (split_clauses(sentence) if clauses else [sentence])
    ]
    seen: set[str] = set()
    for position, (sentence, unit) in enumerate(units):
        fragment = not (sentence[:1].isupper() or sentence[:1].isdigit())  # cut at a chunk boundary
        if clauses and (fragment or _META.search(sentence)):
            continue  # a fragment, or a statement about the answer itself
        if sentence_anchor and not set(content_tokens(sentence)) & set(anchors):
            continue
        score = sum(
            weights.get(t, 1.0) * (1.0 if t in question_terms else 0.5 if t in query_terms else 0.25)
            for t in set(content_tokens(unit))
        )
        nugget = clean_nugget(unit, min_words, max_words)
        if nugget and nugget.lower() not in seen:
            seen.add(nugget.lower())
            scored.append((score, position, nugget))
    best = sorted(scored, key=lambda item: (-item[0], item[1]))[:max_nuggets]
    return [nugget for _, _, nugget in sorted(best, key=lambda item: item[1])]


def question_anchors(question: str, texts: Iterable[str], weights: Mapping[str, float]) -> set[str]:
    """The heaviest question term(s) present in any of ``texts`` (the retrieved passages)."""
    present: set[str] = set()
    for text in texts:
        present |= set(tokens(text))
    found = set(content_tokens(question)) & present
    if not found:
        return set()
    top = max(weights.get(term, 1.0) for term in found)
    return {term for term in found if weights.get(term, 1.0) >= top}


def parse_nuggets(text: str) -> list[str]:
    """Parse ``{"nuggets": [...]}``; raises ``ValueError`` when malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"extraction output is not JSON ({exc.msg}): {text[:80]!r}") from None
    nuggets = data.get("nuggets") if isinstance(data, dict) else None
    if not isinstance(nuggets, list) or not all(isinstance(item, str) for item in nuggets):
        raise ValueError(f"extraction output needs a 'nuggets' list of strings: {text[:80]!r}")
    return nuggets


async def extract_with_llm(
    client,
    question: str,
    queries: Sequence[str],
    passage: Passage,
    *,
    max_nuggets: int = 3,
    min_words: int = 5,
    max_words: int = 35,
    max_chars: int = 200,
    max_tokens: int = 256,
    passage_chars: int = 2000,
    api: str = "chat",
    seed: int | None = 0,
    events: Counter | None = None,
) -> list[str] | None:
    """LLM extraction for one passage; ``None`` (logged, counted) when the call fails or does not parse,
    so the caller can fall back instead of silently losing the passage."""
    events = events if events is not None else Counter()
    values = {
        "question": question,
        "queries": "; ".join(queries),
        "title": passage.title or "",
        "passage": passage.text[:passage_chars],
        "max_nuggets": max_nuggets,
    }
    raw = await ask_parsed(
        client,
        "extract",
        values,
        parse_nuggets,
        about=f"passage {passage.passage_id}",
        api=api,
        seed=seed,
        max_tokens=max_tokens,
        events=events,
        json_schema=nugget_schema(max_nuggets, max_chars),
    )
    if raw is None:
        return None
    nuggets = [nugget for nugget in (clean_nugget(item, min_words, max_words) for item in raw) if nugget]
    events["extract.nuggets_rejected"] += len(raw) - len(nuggets)
    return list(dict.fromkeys(nuggets))[:max_nuggets]
