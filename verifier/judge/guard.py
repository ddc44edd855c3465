"""The degenerate-response guard: responses that say nothing score 0 before any model call."""

from __future__ import annotations

import unicodedata

DEGENERATE = "degenerate"

# Normalised (casefolded, NFKC, outer punctuation stripped) texts that open an answer but say nothing.
OPENERS: frozenset[str] = frozenset(
    {
        "thought process", "thinking process", "reasoning", "let's think step by step",
        "let's solve this problem step by step", "let's solve this step by step", "let me think",
        "step 1", "step by step", "solution", "answer", "the answer is", "final answer", "here is the answer",
        "sure", "okay", "ok", "certainly", "of course", "analysis", "explanation", "response", "result",
        "解", "解答", "答え", "答", "回答", "かいせつ", "解説", "解析", "思考过程",
        "让我们一步一步地解决这个问题",
        "respuesta", "solución", "solucion", "réponse", "reponse", "antwort", "lösung", "risposta",
        "soluzione", "resposta", "solução", "ответ", "решение",
    }
)  # fmt: skip


def _is_filler(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "PSC"


def _normalise(text: str) -> str:
    """Casefolded NFKC text with inner whitespace collapsed and outer punctuation/symbols removed."""
    text = " ".join(unicodedata.normalize("NFKC", text).replace("\u2019", "'").casefold().split())
    start, end = 0, len(text)
    while start < end and _is_filler(text[start]):
        start += 1
    while end > start and _is_filler(text[end - 1]):
        end -= 1
    return text[start:end]


def is_degenerate(response: str | None) -> bool:
    """True for responses with no content: empty, only whitespace/punctuation/symbols, or a bare opener."""
    if response is None:
        return True
    core = _normalise(response)
    return not core or core in OPENERS
