"""Word-match hints: beside each rubric, the rubric's content words that the response lacks.

With ``word_hints`` the judging prompt annotates every rubric line, e.g. ``[missing: treatment, based]`` or
``[all words found]``. A small verifier then need not find the words itself; it learns whether what is
missing is paraphrased or essential. Matching is the lexical judge's (stemmed content words, the response
as a whole), so a trained model starts where word overlap ends.
"""

from __future__ import annotations

import json
from pathlib import Path

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.text import content_tokens, light_stem, tokens

MAX_SHOWN = 8  # missing words listed per rubric; more are counted


def response_stems(response: str) -> set[str]:
    """The stemmed content words of a response: computed once per prompt, matched by every rubric line."""
    return set(content_tokens(response, stem=True))


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


PROMPT_CARD = "prompt.json"  # in a trained model folder: the prompt it was trained on


def save_prompt_card(model_dir: str | Path, word_hints: bool, version: str) -> Path:
    """Record beside the weights which prompt the model expects, so serving renders the same one."""
    path = Path(model_dir) / PROMPT_CARD
    path.write_text(json.dumps({"prompt_version": version, "word_hints": word_hints}, indent=1) + "\n")
    return path


def model_word_hints(model_dir: str | Path | None) -> bool:
    """Whether the model folder's prompt card asks for word hints (False without a card)."""
    path = Path(model_dir) / PROMPT_CARD if model_dir else None
    if path is None or not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text())["word_hints"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a prompt card ({exc})") from exc
