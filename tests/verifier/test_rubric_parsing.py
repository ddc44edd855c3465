"""Every reader of a rubric goes through the one parser (``Rubric.from_dict`` / the pydantic model): the
labelled-data reader, rubric sets, the gateway body, the OpenRLHF labels and the RL adapters read a plain
string or a dict the same way, and reject a bad one naming the same field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rubric_pipeline.core.records import RecordError, Rubric, RubricSet, parse_rubric_list
from verifier.data.labelled_io import parse_rubrics as read_rubrics
from verifier.integrations._client import rubrics_from
from verifier.serve.gateway import JudgeItemIn
from verifier.serve.service import BadInput
from verifier.serve.service import parse_rubrics as service_rubrics

GIVEN = [
    "The bridge opened in 1932",
    {"text": "Tolls pay for upkeep", "importance": "okay"},
    {"rubric_id": 7, "text": "It spans the Varn", "weight": 2, "importance": None},
    {"text": "Built of steel", "sources": [{"passage_id": "d1#0", "doc_id": "d1", "query": "bridge"}]},
]
EXPECTED = [
    Rubric("r0", "The bridge opened in 1932"),
    Rubric("r1", "Tolls pay for upkeep", "okay"),
    Rubric("7", "It spans the Varn", "vital", 2.0),
    Rubric(
        rubric_id="r3",
        text="Built of steel",
        sources=[{"passage_id": "d1#0", "doc_id": "d1", "query": "bridge"}],
    ),
]


def every_reader(given: list) -> dict[str, list[Rubric]]:
    item = {"question": "q", "response": "r", "rubrics": given}
    return {
        "from_dict": [Rubric.from_dict(value, i) for i, value in enumerate(given)],
        "labelled_io": read_rubrics({"rubrics": given}, Path("x.jsonl"), 1),
        "rubric_set": RubricSet.from_dict({"qid": "q", "question": "?", "rubrics": given}).rubrics,
        "gateway": JudgeItemIn.model_validate(item).to_item().rubrics,
        "service": service_rubrics(given, ("body", "labels", 0)),
        "adapters": [Rubric.from_dict(value) for value in rubrics_from(given)],
        "list": parse_rubric_list({"rubrics": given}),
    }


def test_every_reader_parses_strings_and_dicts_alike() -> None:
    for reader, rubrics in every_reader(GIVEN).items():
        assert rubrics == EXPECTED, reader
    assert EXPECTED[1].effective_weight() == 0.5 and EXPECTED[2].effective_weight() == 2.0
    assert Rubric.from_dict(EXPECTED[3].to_dict()) == EXPECTED[3]  # to_dict round-trips


@pytest.mark.parametrize(
    ("bad", "field", "problem"),
    [
        ({"text": "a", "importance": "high"}, "rubrics[1].importance", "unknown importance 'high'"),
        ({"rubric_id": "r0"}, "rubrics[1].text", "missing required field"),
        ("  ", "rubrics[1].text", "empty rubric text"),
        ({"text": "a", "weight": "heavy"}, "rubrics[1].weight", "expected number, got str"),
        ({"text": "a", "weight": -1}, "rubrics[1].weight", "greater than or equal to 0"),
        (["a"], "rubrics[1]", "a rubric is a string or an object"),
        ({"text": "a", "sources": [{"passage_id": "p"}]}, "rubrics[1].sources[0].doc_id", "missing"),
    ],
)
def test_every_reader_rejects_a_bad_rubric_naming_the_field(bad, field: str, problem: str) -> None:
    given = ["fine", bad]
    with pytest.raises(RecordError) as caught:
        read_rubrics({"rubrics": given}, Path("x.jsonl"), 3)
    assert caught.value.field_name == field and problem in caught.value.problem, str(caught.value)
    assert str(caught.value).startswith(f"x.jsonl: line 3, field '{field}': ")
    with pytest.raises(RecordError, match=problem):
        rubrics_from(given)
    with pytest.raises(BadInput) as rejected:
        service_rubrics(given, ("body", "labels", 0))
    assert rejected.value.loc == ("body", "labels", 0) and field in str(rejected.value)
    with pytest.raises(ValidationError) as invalid:  # the gateway answers 422 with this loc
        JudgeItemIn.model_validate({"question": "q", "response": "r", "rubrics": given})
    assert invalid.value.errors()[0]["loc"][:2] == ("rubrics", 1)


def test_rubric_lists_as_json_text_and_their_errors() -> None:
    assert parse_rubric_list('["a", {"text": "b"}]') == [Rubric("r0", "a"), Rubric("r1", "b")]
    with pytest.raises(RecordError, match=r"field 'rubrics': expected a JSON list of rubrics"):
        parse_rubric_list("not json")
    with pytest.raises(RecordError, match="expected a list of rubrics, got int"):
        parse_rubric_list(3)
