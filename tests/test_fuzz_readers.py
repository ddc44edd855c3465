"""Hostile files for every reader: labelled jsonl, TREC / nuggetizer files, corpora, recipes.

Each reader either reads the file or raises the toolkit's own error (``RecordError``, ``ValueError``)
whose message names the file, and the line when a line is at fault: never a KeyError, TypeError,
AttributeError or any other traceback from inside. Bounded examples, deadline off, to stay fast.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rubric_pipeline.core.config import build_config, load_recipe
from rubric_pipeline.core.records import RecordError
from rubric_pipeline.corpus import load_corpus
from rubric_pipeline.trec import read_trec_labelled, read_trec_rubric_sets
from verifier.data.labelled_io import read_labelled_input
from verifier.serve.cli import ServeConfig

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EDGE = st.sampled_from(["", "\x00", "\ud800", "\u202eabc\u202c", "مرحبا", "support", "vital", "okay", "q1"])
TEXT = st.one_of(st.text(max_size=40), EDGE)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
NUGGET = st.fixed_dictionaries(
    {}, optional={"text": st.one_of(TEXT, JSON), "importance": st.one_of(EDGE, JSON),
                  "assignment": st.one_of(st.sampled_from(["support", "partial_support", "not_support",
                                                           "failed"]), JSON)},
)  # fmt: skip
RUBRIC = st.one_of(
    TEXT, st.fixed_dictionaries({}, optional={"text": JSON, "weight": JSON, "importance": JSON})
)
LABELLED = st.fixed_dictionaries(
    {},
    optional={"qid": JSON, "question": st.one_of(TEXT, JSON), "response": st.one_of(TEXT, JSON),
              "response_id": JSON, "rubrics": st.one_of(st.lists(RUBRIC, max_size=3), JSON),
              "labels": st.one_of(st.lists(st.sampled_from(["support", "not_support", "x"]), max_size=3),
                                  JSON),
              "label_source": JSON},
)  # fmt: skip
TREC = st.fixed_dictionaries(
    {},
    optional={"qid": JSON, "query": st.one_of(TEXT, JSON), "run_id": JSON,
              "answer_text": st.one_of(TEXT, JSON), "nuggets": st.one_of(st.lists(NUGGET, max_size=3), JSON)},
)  # fmt: skip
CORPUS = st.fixed_dictionaries(
    {}, optional={"id": JSON, "doc_id": JSON, "text": st.one_of(TEXT, JSON), "title": JSON, "url": JSON}
)
OK = (RecordError, ValueError, FileNotFoundError)


def lines(records: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """A file of records, JSON that is not an object, broken lines, non-UTF-8 bytes and a 1 MB line."""
    line = st.one_of(
        records.map(lambda r: json.dumps(r, ensure_ascii=True).encode()),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=30),
        st.just(b'{"text": "' + b"x" * 1_000_000 + b'"}'),
    )
    return st.lists(line, max_size=5).map(lambda parts: b"\n".join(parts) + b"\n")


def check_reader(reader, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.jsonl"
        path.write_bytes(content)
        try:
            reader(path)
        except OK as exc:
            message = str(exc)
            assert str(path) in message, message[:300]
            if isinstance(exc, RecordError) and isinstance(exc.where, int) and exc.where:
                assert re.search(rf"line {exc.where}\b", message), message[:300]
            assert len(message) < 5000, "an error message must not quote a megabyte of input"


@FUZZ
@given(lines(LABELLED))
def test_labelled_reader(content):
    check_reader(read_labelled_input, content)


@FUZZ
@given(lines(TREC))
def test_trec_readers(content):
    check_reader(read_trec_labelled, content)
    check_reader(read_trec_rubric_sets, content)


@FUZZ
@given(lines(CORPUS))
def test_corpus_reader(content):
    check_reader(load_corpus, content)


YAML_VALUE = st.one_of(JSON, st.sampled_from(["8080", "yes", "1e3", "[1, 2]", "{a: 1}"]))


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(st.sampled_from(["port", "window", "engine_url", "max_restarts", "token", "x"]),
                        YAML_VALUE, max_size=4).map(lambda d: json.dumps({"serve": d}).encode()),
        JSON.map(lambda v: json.dumps(v).encode()),
    )
)  # fmt: skip
def test_recipe_reader(content):
    check_reader(lambda path: build_config(ServeConfig, path, "serve"), content)
    check_reader(load_recipe, content)


@pytest.mark.parametrize(
    "content", [b"\x00\x00", "\ud800".encode("utf-8", "surrogatepass"), b"\xef\xbb\xbf{}"]
)
def test_unicode_edge_files(content):
    for reader in (read_labelled_input, read_trec_labelled, load_corpus, load_recipe):
        check_reader(reader, content + b"\n")
