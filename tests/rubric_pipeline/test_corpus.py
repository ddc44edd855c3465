"""Corpus reading and chunking: stable passage ids, errors that name file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rubric_pipeline.core.records import RecordError
from rubric_pipeline.corpus import (
    load_corpus,
    passages_fingerprint,
    read_passages,
    sentence_windows,
    split_windows,
    write_passages,
)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def numbered_words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_long_document_is_chunked_into_overlapping_windows_with_stable_ids(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "corpus.jsonl",
        [
            json.dumps({"id": "long", "title": "Long", "url": "http://x/long", "text": numbered_words(500)}),
            json.dumps({"id": 7, "text": "  A short   document.  "}),
        ],
    )
    passages = load_corpus(path, chunk_words=200, overlap_words=50, chunk_by="words")
    assert [p.passage_id for p in passages] == ["long#0", "long#1", "long#2", "7#0"]
    first, second, third = (p.text.split() for p in passages[:3])
    assert first[0] == "w0" and first[-1] == "w199"
    assert second[0] == "w150" and second[:50] == first[-50:]  # 50 words of overlap
    assert third[-1] == "w499" and third[0] == "w300"
    assert all(p.title == "Long" and p.url == "http://x/long" and p.doc_id == "long" for p in passages[:3])
    assert passages[3].text == "A short   document."  # a single window keeps its text as written
    again = load_corpus(path, chunk_words=200, overlap=50, chunk_by="words")
    assert [p.to_dict() for p in again] == [p.to_dict() for p in passages]
    assert passages_fingerprint(again) == passages_fingerprint(passages)


def test_split_windows_edges() -> None:
    assert split_windows(numbered_words(10), size=10, overlap=3) == [numbered_words(10)]
    windows = split_windows(numbered_words(11), size=10, overlap=3)
    assert len(windows) == 2 and windows[1].split() == [f"w{i}" for i in range(7, 11)]
    with pytest.raises(ValueError, match="overlap"):
        split_windows("a b", size=5, overlap=5)


def test_sentence_windows_hold_whole_sentences_as_written() -> None:
    sentences = [f"Sentence {i} has exactly six words." for i in range(10)]
    items = [f"- {sentence}" for sentence in sentences[:4]]  # list items: a line each, 7 words
    text = "Intro:\n" + "\n".join(items) + "\n\n" + "  ".join(sentences[4:])
    # at most 20 words a window; a window repeats the previous one's last sentences up to 7 words
    assert (
        sentence_windows(text, size=20, overlap=7)
        == [
            "Intro:\n" + "\n".join(items[:2]),
            "\n".join(items[1:3]),
            "\n".join(items[2:]) + "\n\n" + sentences[4],  # the document's own characters, line breaks kept
            "  ".join(sentences[4:7]),
            "  ".join(sentences[6:9]),
            "  ".join(sentences[8:]),
        ]
    )
    assert sentence_windows(text, size=20, overlap=0)[1] == "\n".join(items[2:]) + "\n\n" + sentences[4]


def test_sentence_windows_cut_only_sentences_longer_than_a_window() -> None:
    assert sentence_windows(numbered_words(10), size=10, overlap=3) == [numbered_words(10)]
    long = sentence_windows(numbered_words(25) + ". Short closing sentence here.", size=10, overlap=3)
    assert [w.split()[0] for w in long] == ["w0", "w10", "w20"]  # the long sentence in 10-word pieces
    assert long[-1] == "w20 w21 w22 w23 w24. Short closing sentence here."
    with pytest.raises(ValueError, match="overlap"):
        sentence_windows("a b", size=5, overlap=5)


def test_default_chunking_keeps_sentences_whole(tmp_path: Path) -> None:
    text = " ".join(f"Fact {i} is stated in this one sentence of eleven words." for i in range(30))
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"id": "d", "text": text})])
    by_sentences, by_words = load_corpus(path), load_corpus(path, chunk_by="words")
    assert all(p.text.startswith("Fact") and p.text.endswith("words.") for p in by_sentences)
    assert not all(p.text.endswith("words.") for p in by_words)  # 200-word windows cut sentences
    assert passages_fingerprint(by_sentences) != passages_fingerprint(by_words)  # saved indices rebuild


@pytest.mark.parametrize(
    ("second_line", "field", "problem"),
    [
        ('{"id": "b", "text": "ok"', None, "malformed JSON"),
        ('{"text": "no id here"}', "id", "missing required field"),
        ('{"id": "b"}', "text", "missing required field"),
        ('{"id": "b", "text": "   "}', "text", "empty text"),
        ('{"id": "b", "text": ["not", "a", "string"]}', "text", "expected a string"),
        ('{"id": "b", "text": "fine", "title": 3}', "title", "expected a string"),
        ('{"id": "a", "text": "again"}', "id", "duplicate id 'a'"),
        ("[1, 2]", None, "expected a JSON object"),
    ],
)
def test_bad_record_error_names_file_line_and_field(
    tmp_path: Path, second_line: str, field: str | None, problem: str
) -> None:
    path = write_lines(tmp_path / "bad.jsonl", ['{"id": "a", "text": "first document"}', second_line])
    with pytest.raises(RecordError) as caught:
        load_corpus(path)
    error = caught.value
    assert error.source == str(path) and error.where == 2 and error.field_name == field
    message = str(error)
    assert str(path) in message and "line 2" in message and problem in message
    if field:
        assert f"field {field!r}" in message


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="no documents"):
        load_corpus(write_lines(tmp_path / "empty.jsonl", [""]))


def test_trec_segment_aliases(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "segments.jsonl", [json.dumps({"docid": "msmarco_v2.1_doc_1#3", "segment": "Text."})]
    )
    (passage,) = load_corpus(path)
    assert passage.doc_id == "msmarco_v2.1_doc_1#3" and passage.passage_id == "msmarco_v2.1_doc_1#3#0"


def test_huggingface_dataset_on_disk(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = [
        {"id": "d1", "text": numbered_words(30), "title": "One"},
        {"id": "d2", "text": "two", "title": None},
    ]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    passages = load_corpus(tmp_path / "ds", chunk_words=20, overlap_words=5)
    assert [p.passage_id for p in passages] == ["d1#0", "d1#1", "d2#0"]
    assert passages[0].title == "One" and passages[2].title is None

    DatasetDict({"train": Dataset.from_list([*rows, {"id": "d3", "text": "", "title": None}])}).save_to_disk(
        str(tmp_path / "dd")
    )
    with pytest.raises(RecordError) as caught:
        load_corpus(tmp_path / "dd")
    assert "row 2" in str(caught.value) and caught.value.field_name == "text"


def test_passage_table_round_trip(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "c.jsonl", [json.dumps({"id": "x", "text": numbered_words(40), "url": "u"})]
    )
    passages = load_corpus(path, chunk_words=15, overlap_words=5)
    write_passages(tmp_path / "p.jsonl", passages)
    assert read_passages(tmp_path / "p.jsonl") == passages
    write_lines(tmp_path / "broken.jsonl", ['{"passage_id": "x#0", "text": "t"}'])
    with pytest.raises(RecordError, match="'doc_id'"):
        read_passages(tmp_path / "broken.jsonl")
