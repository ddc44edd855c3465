"""Word-match hints on rubric lines, and the prompt card that tells serving a model was trained with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rubric_pipeline.core.errors import ConfigError
from verifier.judge import prompt
from verifier.judge.hints import (
    missing_words,
    model_word_hints,
    response_stems,
    save_prompt_card,
    word_hint,
)
from verifier.serve.cli import ServeConfig, uses_word_hints
from verifier.train.data import Window

RESPONSE = "Having a WBC count over 15,000 can be dangerous. It can indicate an underlying infection."
PRESENT = response_stems(RESPONSE)


def test_missing_words_are_the_rubric_words_whose_stem_the_response_lacks() -> None:
    assert missing_words(PRESENT, "Treatment is based on the underlying causes") == [
        "treatment",
        "based",
        "causes",
    ]
    assert missing_words(PRESENT, "Infections are dangerous") == []  # plural and case still match


def test_word_hint_counts_and_caps_the_missing_words() -> None:
    assert word_hint(PRESENT, "Infections are dangerous") == "[all words found]"
    assert word_hint(PRESENT, "Treatment is based on the underlying cause") == (
        "[missing 3/4: treatment, based, cause]"
    )
    long = " ".join(f"word{i}" for i in range(12))
    assert word_hint(PRESENT, long).endswith("(+4 more)]")
    assert word_hint(PRESENT, ":") == "[no words to match]"


def test_hints_annotate_only_the_rubric_lines_and_change_the_version() -> None:
    rubrics = ["Infections are dangerous", "Treatment depends on the cause"]
    plain = prompt.render_prompt("Is a high WBC dangerous?", RESPONSE, rubrics)
    hinted = prompt.render_prompt("Is a high WBC dangerous?", RESPONSE, rubrics, word_hints=True)
    assert "1. Infections are dangerous [all words found]" in hinted
    assert "2. Treatment depends on the cause [missing 3/3: treatment, depends, cause]" in hinted
    assert (
        hinted.replace(" [all words found]", "").replace(" [missing 3/3: treatment, depends, cause]", "")
        == plain
    )
    assert prompt.prompt_version(True) != prompt.prompt_version(False) == prompt.PROMPT_VERSION


def test_training_windows_render_the_hinted_prompt() -> None:
    window = Window(
        "q1", "r1", "Is a high WBC dangerous?", RESPONSE, ["Infections are dangerous"], ["support"]
    )
    assert "[all words found]" not in window.messages()[0]["content"]
    window.word_hints = True
    assert "1. Infections are dangerous [all words found]" in window.messages()[0]["content"]


def test_prompt_card_sets_the_serving_default_and_the_flag_overrides_it(tmp_path: Path) -> None:
    assert not model_word_hints(tmp_path) and not model_word_hints(None)
    save_prompt_card(tmp_path, True, prompt.prompt_version(True))
    assert model_word_hints(tmp_path)
    assert uses_word_hints(ServeConfig(model=str(tmp_path)))
    assert not uses_word_hints(ServeConfig(model=str(tmp_path), word_hints=False))
    (tmp_path / "prompt.json").write_text("[1]")
    with pytest.raises(ConfigError, match=r"prompt\.json: not a prompt card"):
        model_word_hints(tmp_path)
