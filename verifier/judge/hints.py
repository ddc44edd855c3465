"""Rubric-line hints: what the judging prompt adds beside each rubric, computed from the response.

``hints`` is one of :data:`HINT_MODES`:

- ``none``: the plain prompt.
- ``words``: the rubric's content words that the response lacks, ``[missing 2/5: treatment, based]`` or
  ``[all words found]``. Matching is the lexical judge's (stemmed content words, the response as a whole), so
  a small verifier need not find the words itself; it learns whether what is missing is paraphrased or
  essential.
- ``evidence``: the response sentence nearest the rubric, on the next line, ``[evidence: "..."]``: the one
  sharing the most content stems with it, each stem weighted by 1 / (sentences holding it), so the entity
  every sentence names counts little. A small verifier then compares two sentences instead of searching
  the whole response for each rubric.

A trained model folder records its mode (``prompt.json``) so that serving renders the prompt it trained on.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.text import content_tokens, light_stem, split_sentences, tokens

Hints = Literal["none", "words", "evidence"]
HINT_MODES: tuple[str, ...] = get_args(Hints)
MAX_SHOWN = 8  # missing words listed per rubric; more are counted
MAX_EVIDENCE_CHARS = 300  # a longer sentence is cut


def response_stems(response: str) -> set[str]:
    """The stemmed content words of a response: computed once per prompt, matched by every rubric line."""
    return set(content_tokens(response, stem=True))


def word_recall(present: set[str], rubric: str) -> float:
    """Share of the rubric's distinct content stems found in ``present`` (:func:`response_stems`); 0.0 for a
    rubric without content words. The lexical judge's score, and the word prior a calibration may mix in."""
    wanted = set(content_tokens(rubric, stem=True))
    return len(wanted & present) / len(wanted) if wanted else 0.0


def missing_words(present: set[str], rubric: str) -> list[str]:
    """The rubric's content words (first spelling, in order) whose stem is not in ``present``
    (:func:`response_stems` of the response)."""
    wanted = content_tokens(rubric)
    missing, seen = [], set()
    for word in wanted:
        stem = light_stem(word)
        if stem not in present and stem not in seen:
            seen.add(stem)
            missing.append(word)
    return missing


def word_hint(present: set[str], rubric: str) -> str:
    """The bracketed hint for one rubric line (``present``: :func:`response_stems` of the response)."""
    if not tokens(rubric):
        return "[no words to match]"
    missing = missing_words(present, rubric)
    if not missing:
        return "[all words found]"
    shown = ", ".join(missing[:MAX_SHOWN])
    more = f" (+{len(missing) - MAX_SHOWN} more)" if len(missing) > MAX_SHOWN else ""
    total = len({light_stem(word) for word in content_tokens(rubric)})
    return f"[missing {len(missing)}/{total}: {shown}{more}]"


class EvidenceFinder:
    """The sentences of one response, indexed once; :meth:`nearest` is asked once per rubric line."""

    def __init__(self, response: str):
        self.sentences = [" ".join(s.split()) for s in split_sentences(response, require_capital=False)]
        self.stems = [set(content_tokens(sentence, stem=True)) for sentence in self.sentences]
        self.holding = Counter(stem for group in self.stems for stem in group)

    def nearest(self, rubric: str) -> str | None:
        """The sentence sharing the most weighted content stems with ``rubric`` (the first on ties), or None
        when no sentence shares any."""
        wanted = set(content_tokens(rubric, stem=True))
        best, best_score = None, 0.0
        for sentence, group in zip(self.sentences, self.stems, strict=True):
            score = sum(1 / self.holding[stem] for stem in wanted & group)
            if score > best_score:
                best, best_score = sentence, score
        return best

    def hint(self, rubric: str) -> str:
        sentence = self.nearest(rubric)
        if sentence is None:
            return "[no sentence shares its words]"
        if len(sentence) > MAX_EVIDENCE_CHARS:
            sentence = sentence[:MAX_EVIDENCE_CHARS].rsplit(" ", 1)[0] + " ..."
        return f'[evidence: "{sentence}"]'


def annotate(lines: Sequence[str], response: str, hints: Hints) -> list[str]:
    """The rubric lines of a prompt with their hints (``hints`` one of :data:`HINT_MODES`)."""
    if hints == "none":
        return list(lines)
    if hints == "words":
        present = response_stems(response)
        return [f"{line} {word_hint(present, line)}" for line in lines]
    if hints == "evidence":
        finder = EvidenceFinder(response)
        return [f"{line}\n   {finder.hint(line)}" for line in lines]
    raise ConfigError(f"unknown hints mode {hints!r}; known: {list(HINT_MODES)}")


PROMPT_CARD = "prompt.json"  # in a trained model folder: the prompt it was trained on


def save_prompt_card(model_dir: str | Path, hints: Hints, version: str) -> Path:
    """Record beside the weights which prompt the model expects, so serving renders the same one."""
    path = Path(model_dir) / PROMPT_CARD
    path.write_text(json.dumps({"prompt_version": version, "hints": hints}, indent=1) + "\n")
    return path


def model_hints(model_dir: str | Path | None) -> Hints:
    """The hints mode the model folder's prompt card asks for ("none" without a card; a card of the
    boolean ``word_hints`` era reads as "words" or "none")."""
    path = Path(model_dir) / PROMPT_CARD if model_dir else None
    if path is None or not path.is_file():
        return "none"
    try:
        card = json.loads(path.read_text())
        mode = card["hints"] if "hints" in card else ("words" if card["word_hints"] else "none")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a prompt card ({exc})") from exc
    if mode not in HINT_MODES:
        raise ConfigError(f"{path}: unknown hints mode {mode!r}; known: {list(HINT_MODES)}")
    return mode
