from __future__ import annotations

import random

import pytest

from rubric_pipeline.core.records import LABELS
from verifier.judge import prompt
from verifier.judge.prompt import OUTPUT_FORMATS, ParseError, format_labels, parse_labels

LABELS_4 = ["support", "partial_support", "not_support", "support"]


def test_windows_of_one_response_share_the_prefix_up_to_the_rubric_list():
    rubrics = [f"fact number {i}" for i in range(13)]
    windows = [rubrics[part] for part in prompt.window_slices(len(rubrics), 10)]
    assert [len(w) for w in windows] == [10, 3]
    first, second = (prompt.render_messages("Why?", "Because X.", w)[0]["content"] for w in windows)
    shared = first[: next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)]
    assert shared.endswith("Rubrics:\n1. fact number ")
    assert "Because X." in shared and "Why?" in shared
    assert first.index("Rubrics:") > first.index("Because X.")  # response before the rubric list
    assert "Give exactly 10 label(s)" in first and "Give exactly 3 label(s)" in second


def test_render_numbers_rubrics_on_one_line_and_names_every_label():
    content = prompt.render_messages("Q", "R", ["a\nmulti line", "b"], output_format="csv")[0]["content"]
    assert "1. a multi line\n2. b\n" in content
    for label in LABELS:
        assert f"- {label}:" in content
    assert "rubric,label" in content  # the example shows the requested format
    with pytest.raises(ValueError):
        prompt.render_messages("Q", "R", [])
    with pytest.raises(ValueError):
        prompt.render_messages("Q", "R", ["a"], output_format="html")


def test_response_text_with_template_syntax_is_kept_verbatim():
    content = prompt.render_messages("$question?", "costs $5 ${x}", ["a"])[0]["content"]
    assert "costs $5 ${x}" in content and "$question?" in content


def test_window_slices():
    assert prompt.window_slices(0) == []
    assert prompt.window_slices(10) == [slice(0, 10)]
    assert prompt.window_slices(21, 10) == [slice(0, 10), slice(10, 20), slice(20, 21)]
    with pytest.raises(ValueError):
        prompt.window_slices(3, 0)


def test_window_slices_with_drawn_sizes_cover_every_rubric_once():
    slices = prompt.window_slices(23, 2, max_size=5, rng=random.Random(3))
    assert [i for part in slices for i in range(23)[part]] == list(range(23))
    assert all(2 <= part.stop - part.start <= 5 for part in slices[:-1]) and slices[-1].stop == 23
    assert prompt.window_slices(23, 2, max_size=5, rng=random.Random(3)) == slices  # seeded
    with pytest.raises(ValueError, match="need an rng"):
        prompt.window_slices(3, 1, max_size=4)
    with pytest.raises(ValueError, match="1 <= min <= max"):
        prompt.window_slices(3, 5, max_size=4, rng=random.Random(0))


def test_label_schema():
    assert prompt.label_schema(3) == {
        "type": "array",
        "items": {"enum": ["support", "partial_support", "not_support"]},
        "minItems": 3,
        "maxItems": 3,
    }


def test_prompt_version_is_recorded_form():
    assert prompt.PROMPT_VERSION.startswith("judge-1.") and len(prompt.PROMPT_VERSION) == len("judge-1.") + 8


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
@pytest.mark.parametrize("reasoning", [None, "rubric 2 is only half stated"])
def test_every_format_round_trips(fmt, reasoning):
    text = format_labels(LABELS_4, fmt, reasoning)
    parsed = parse_labels(text, 4)
    assert list(parsed.labels) == LABELS_4
    assert parsed.output_format == fmt
    assert parsed.reasoning == reasoning
    assert prompt.complies(parsed, fmt)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_single_label_round_trips(fmt):
    parsed = parse_labels(format_labels(["partial_support"], fmt), 1)
    assert parsed.labels == ("partial_support",)
    assert prompt.complies(parsed, fmt)


def test_format_examples():
    assert format_labels(["support", "not_support"], "json") == '["support", "not_support"]'
    assert format_labels(["support", "not_support"], "csv") == "rubric,label\n1,support\n2,not_support"
    assert format_labels(["support"], "xml") == "<labels>\n<label>support</label>\n</labels>"
    assert format_labels(["support"], "json", "ok") == '<reasoning>ok</reasoning>\n["support"]'
    with pytest.raises(ValueError):
        format_labels(["supported"], "json")


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('Here are my labels:\n```json\n["Support", "NOT_SUPPORT"]\n```\nHope this helps.', "json"),
        ('{"labels": ["support", "not_support"]}', "json"),
        ("['support', 'not support']", "python"),
        ("Per rubric [1] and [2]: ['support', 'not-support']", "python"),
        ("Labels: support, not_support", "comma"),
        ("support | Not Support", "pipe"),
        ("labels:\n  - 'support'\n  - \"not_support\"", "yaml"),
        ("* **support**\n* not_support", "markdown"),
        ("| # | label |\n|:-:|---|\n| 1 | `support` |\n| 2 | not_support |", "markdown"),
        ("<labels><label> support </label><label>not_support</label></labels>", "xml"),
        ("Sure.\n1) support\n2) not_support", "numbered"),
        ("rubric\tlabel\n1\tsupport\n2\tnot_support", "tsv"),
        ("1,support\n2,not_support", "csv"),
        ("support\nnot_support", "lines"),
        ('{"1": "support", "2": "not_support"}', "json"),
        (
            "1. **support**: the response says so\n2. The response never mentions it -> not_support",
            "numbered",
        ),
        ("- Support (stated)\n- Not supported? No: not support", "yaml"),
        ("| 1 | support | stated |\n| 2 | not_support | absent |", "markdown"),
        ("rubric,label,why\n1,support,stated\n2,not_support,absent", "csv"),
        ('<think>hmm, [x]</think>\n["support", "not_support"]', "json"),
    ],
)
def test_tolerant_parsing(text, fmt):
    parsed = parse_labels(text, 2)
    assert parsed.labels == ("support", "not_support")
    assert parsed.output_format == fmt


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('["support"]', "expected 2 labels, got 1"),
        ('["support", "not_support", "support"]', "expected 2 labels, got 3"),
        ('["support", "maybe"]', "unknown label 'maybe'"),
        ("1. support\n2. supported", "unknown label 'supported'"),
        ("2. support\n1. not_support", "out of order"),
        ('<reasoning>never closed ["support", "support"]', "unclosed"),
        ("", "empty output"),
        ("I cannot judge this.", "no labels found"),
        ("<labels><label>support</label><label></label></labels>", "unknown label ''"),
        ("1. It does not fully support\n2. support", "unknown label"),  # prose is not read as a label
        ("1. support: though not: not_support\n2. support", "ambiguous item"),
        ("| 1 | support | not_support |\n| 2 | support |", "ambiguous row"),
        ('{"2": "support", "1": "not_support"}', "unknown label"),  # keys out of order
    ],
)
def test_malformed_outputs_raise_with_raw_text(text, reason):
    with pytest.raises(ParseError) as info:
        parse_labels(text, 2)
    assert reason in info.value.reason
    assert info.value.raw == text


def test_reasoning_is_returned_and_not_read_as_labels():
    text = '<reasoning>rubric 1 says "not_support"? no: support.</reasoning>\n["support", "not_support"]'
    parsed = parse_labels(text, 2)
    assert parsed.labels == ("support", "not_support")
    assert parsed.reasoning == 'rubric 1 says "not_support"? no: support.'


def test_compliance_is_by_detected_format():
    assert not prompt.complies(parse_labels('["support"]', 1), "csv")
    assert prompt.complies(parse_labels('["support"]', 1), "python")  # a JSON list is a valid Python list
    assert not prompt.complies(parse_labels("support, support", 2), "pipe")


def test_windows_share_a_token_prefix_under_the_tiny_models_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    response = "The capital of France is Paris, a city of museums; it has 2.1 million inhabitants."
    rubrics = [f"Paris has property number {i}" for i in range(20)]
    ids = [
        tokenizer.apply_chat_template(
            prompt.render_messages("What is the capital of France?", response, rubrics[part]),
            tokenize=True,
            add_generation_prompt=True,
            return_dict=False,
        )
        for part in prompt.window_slices(len(rubrics), 10)
    ]
    shared = next(i for i, (a, b) in enumerate(zip(ids[0], ids[1], strict=False)) if a != b)
    prefix_text = prompt.render_prefix("What is the capital of France?", response)
    prefix_ids = tokenizer(prefix_text, add_special_tokens=False)["input_ids"]
    assert shared >= len(prefix_ids)  # everything before the rubric list is cached once per response
    assert shared / len(ids[0]) > 0.5
