from __future__ import annotations

import hashlib
from importlib import resources

import pytest

from rubric_pipeline import prompts as build_prompts
from rubric_pipeline.core.prompts import PromptFiles
from rubric_pipeline.core.text import (
    STOPWORDS,
    content_tokens,
    first_sentence,
    light_stem,
    long_words,
    split_sentences,
    tokens,
)
from verifier.judge import prompt as judge_prompt


def test_tokens_keep_inner_hyphens_and_content_tokens_drop_function_words():
    assert tokens("State-of-the-art models, O'Neil's 3 papers.") == [
        "state-of-the-art", "models", "o'neil's", "3", "papers",
    ]  # fmt: skip
    assert content_tokens("It may rain in 3 days, said a man") == ["rain", "3", "days", "said", "man"]
    assert {"may", "might", "must", "yourselves"} <= STOPWORDS


def test_light_stem_matches_inflections_only_on_longer_words():
    assert [light_stem(word) for word in ("bridges", "opened", "building", "glass", "bus", "red")] == [
        "bridge", "open", "build", "glass", "bus", "red",
    ]  # fmt: skip
    assert content_tokens("The bridges opened", stem=True) == content_tokens("the bridge open", stem=True)


def test_split_sentences_at_capitals_and_newlines():
    text = "It opened at 9 a.m. today. It rained.\nNext line"  # "a.m. today": no capital, no split
    assert split_sentences(text) == ["It opened at 9 a.m. today.", "It rained.", "Next line"]
    assert split_sentences(text, require_capital=False) == [
        "It opened at 9 a.m.",
        "today.",
        "It rained.",
        "Next line",
    ]


def test_first_sentence_and_long_words_in_any_script():
    assert first_sentence("  The Sella river. It floods.\nMore") == "The Sella river."
    assert first_sentence("解答：河流。其他内容") == "解答：河流。"
    assert first_sentence("no end at all\nsecond line") == "no end at all"
    assert long_words("Die Brücke wurde 1932 eröffnet, sagt er") == {
        "brücke",
        "wurde",
        "1932",
        "eröffnet",
        "sagt",
    }


def test_prompt_versions_hash_the_package_data_files_in_order():
    for files in (build_prompts.FILES, judge_prompt.PROMPTS):
        digest = hashlib.sha256()
        for name in files.names:
            digest.update((resources.files(files.package) / name).read_bytes())
        assert files.version == f"{files.prefix}.{digest.hexdigest()[:8]}"
    assert build_prompts.FILES.version == build_prompts.PROMPT_VERSION
    assert judge_prompt.PROMPT_VERSION.startswith("judge-1.")


def test_prompt_files_render_parse_and_name_a_missing_file():
    assert "$question" in build_prompts.FILES.text("extract.txt")
    assert set(judge_prompt.PROMPTS.data("reasoning.json")) == {"with", "without"}
    with pytest.raises(KeyError):
        build_prompts.render_prompt("extract", question="q")  # the other values are missing
    with pytest.raises(FileNotFoundError, match=r"prompt template not found: .*nope\.txt"):
        PromptFiles("rubric_pipeline.prompts", ("nope.txt",), "x").template("nope.txt")
