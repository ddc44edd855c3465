"""Rubric-line hints (missing words, evidence sentences), and the prompt card that tells serving a model was
trained with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rubric_pipeline.core.errors import ConfigError
from verifier.judge import prompt
from verifier.judge.hints import (
    EvidenceFinder,
    missing_words,
    model_hints,
    response_stems,
    save_prompt_card,
    word_hint,
)
from verifier.serve.cli import ServeConfig, served_hints
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
    hinted = prompt.render_prompt("Is a high WBC dangerous?", RESPONSE, rubrics, hints="words")
    assert "1. Infections are dangerous [all words found]" in hinted
    assert "2. Treatment depends on the cause [missing 3/3: treatment, depends, cause]" in hinted
    assert (
        hinted.replace(" [all words found]", "").replace(" [missing 3/3: treatment, depends, cause]", "")
        == plain
    )
    versions = {prompt.prompt_version(mode) for mode in ("none", "words", "evidence")}
    assert len(versions) == 3 and prompt.prompt_version() == prompt.PROMPT_VERSION


def test_evidence_is_the_sentence_sharing_the_rarest_words() -> None:
    response = (
        "Here is what I found about Ulurhaven. The naturalist Hollis Calloway first described Ulurhaven in "
        "1838. The forests of the Gormemeth Valley are the only home of Ulurhaven. Most Ulurhaven birds live "
        "around 6 years."
    )
    finder = EvidenceFinder(response)
    # "Ulurhaven" is in every sentence: it counts little against the words one sentence holds
    assert finder.nearest("Ulurhaven lives only in the forests of the Yarelmarsh Valley.") == (
        "The forests of the Gormemeth Valley are the only home of Ulurhaven."
    )
    assert finder.nearest("Ulurhaven was described in 1838 by Hollis Calloway.").startswith("The naturalist")
    assert finder.nearest("Wingspan of 37 centimetres") is None
    assert finder.hint("Wingspan of 37 centimetres") == "[no sentence shares its words]"
    rendered = prompt.render_prompt(
        "What is Ulurhaven?", response, ["Ulurhaven lives about 6 years."], hints="evidence"
    )
    assert (
        '1. Ulurhaven lives about 6 years.\n   [evidence: "Most Ulurhaven birds live around 6 years."]'
        in rendered
    )
    with pytest.raises(ConfigError, match="unknown hints mode"):
        prompt.render_prompt("q", response, ["r"], hints="sentences")


def test_training_windows_render_the_hinted_prompt() -> None:
    window = Window(
        "q1", "r1", "Is a high WBC dangerous?", RESPONSE, ["Infections are dangerous"], ["support"]
    )
    assert "[all words found]" not in window.messages()[0]["content"]
    window.hints = "words"
    assert "1. Infections are dangerous [all words found]" in window.messages()[0]["content"]


def test_prompt_card_sets_the_serving_default_and_the_flag_overrides_it(tmp_path: Path) -> None:
    assert model_hints(tmp_path) == model_hints(None) == "none"
    save_prompt_card(tmp_path, "evidence", prompt.prompt_version("evidence"))
    assert model_hints(tmp_path) == "evidence"
    assert served_hints(ServeConfig(model=str(tmp_path))) == "evidence"
    assert served_hints(ServeConfig(model=str(tmp_path), hints="none")) == "none"
    (tmp_path / "prompt.json").write_text('{"prompt_version": "x", "word_hints": true}')  # a card of 0.x
    assert model_hints(tmp_path) == "words"
    (tmp_path / "prompt.json").write_text("[1]")
    with pytest.raises(ConfigError, match=r"prompt\.json: not a prompt card"):
        model_hints(tmp_path)
