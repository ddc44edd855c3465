"""The one text-normalisation module: tokens, stopwords, a light stemmer, sentences, near-duplicate tests.

Used by the build stages (rewrite, extract), the lexical and embedding baseline judges and the truncation
augmentation (whose first-sentence cut and word sets work in any script) alike.
"""

from __future__ import annotations

import re

STOPWORDS: frozenset[str] = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just may me might more
    most must my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those through
    to too under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves""".split()  # noqa: SIM905
)
PRONOUNS: frozenset[str] = frozenset(
    "it its they them their he him his she her this these those that we our you i".split()  # noqa: SIM905
)

_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_ANY_SPACED_END = re.compile(r"(?<=[.!?])\s+")
_ANY_SENTENCE_END = re.compile(r"[.!?。！？](?=\s|$)|[。！？]")  # CJK enders need no space after them
_LONG_WORD = re.compile(r"[^\W_]{4,}")


def tokens(text: str) -> list[str]:
    """Lowercase word tokens (letters, digits, inner hyphens/apostrophes)."""
    return _TOKEN.findall(text.lower())


def content_tokens(text: str, stem: bool = False) -> list[str]:
    """Tokens without stopwords and one-character words (single digits stay); ``stem`` applies
    :func:`light_stem` to each."""
    kept = [tok for tok in tokens(text) if tok not in STOPWORDS and (len(tok) > 1 or tok.isdigit())]
    return [light_stem(tok) for tok in kept] if stem else kept


def light_stem(token: str) -> str:
    """Strip a plural ``-s`` and one ``-ing``/``-ed`` from longer words, so inflections match."""
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        token = token[:-1]
    for suffix in ("ing", "ed"):
        if len(token) > len(suffix) + 3 and token.endswith(suffix):
            return token[: -len(suffix)]
    return token


_LIST_MARKER = re.compile(r"^\s*(?:#{1,6}|[-*+\u2022]|\d{1,2}[.)])\s+")
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1")


def strip_markdown(text: str) -> str:
    """Drop a leading list marker or heading mark ("2. ", "- ", "### ") and bold markers (``**x**``,
    ``__x__``): model answers are often Markdown, and a rubric states the fact, not its layout."""
    return _EMPHASIS.sub(r"\2", _LIST_MARKER.sub("", text))


def normalize(text: str) -> str:
    """Collapse whitespace and strip surrounding quotes, bullets and spaces."""
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip(" \"'`*-•\t").strip()


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the normalized token sets (1.0 for two empty strings)."""
    set_a, set_b = set(tokens(a)), set(tokens(b))
    if not set_a and not set_b:
        return 1.0
    return len(set_a & set_b) / len(set_a | set_b)


def split_sentences(text: str, require_capital: bool = True) -> list[str]:
    """Split prose at sentence ends followed by a capital, digit or quote (any word with
    ``require_capital=False``, which also cuts after abbreviations); newlines also split."""
    end = _SENTENCE_END if require_capital else _ANY_SPACED_END
    sentences: list[str] = []
    for block in re.split(r"\n+", text):
        sentences.extend(part.strip() for part in end.split(block) if part.strip())
    return sentences


def first_sentence(text: str) -> str:
    """The first line of ``text`` up to and including its first sentence end, in any script."""
    first = text.strip().split("\n", 1)[0].strip()
    end = _ANY_SENTENCE_END.search(first)
    return first[: end.end()] if end is not None else first


def long_words(text: str) -> set[str]:
    """Casefolded words of four or more letters or digits, in any script: content words without a
    language-specific stopword list."""
    return {word.casefold() for word in _LONG_WORD.findall(text)}
