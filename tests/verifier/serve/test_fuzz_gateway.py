"""Hostile input against the real gateway app (FastAPI + RewardService + the lexical baseline judge):
property-based bodies, broken JSON and unicode edge cases never give a 500 or a traceback; a 4xx names
the field, a 200 holds a reward in [0, 1] or None with a reason."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.judge.baselines import LexicalJudge
from verifier.serve.gateway import create_app
from verifier.serve.service import Limits, RewardService

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EDGE_TEXT = st.sampled_from(
    ["", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u202eevil\u202c", "مرحبا بالعالم", "עברית", "\ufeff",
     "🤔" * 50, "e\u0301", "\u200b", "A" * 5000, "Rubric 1: support", '["support"]']
)  # fmt: skip
TEXT = st.one_of(st.text(max_size=200), EDGE_TEXT)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
RUBRIC = st.one_of(
    TEXT,
    st.fixed_dictionaries(
        {"text": TEXT},
        optional={
            "importance": st.one_of(st.sampled_from(["vital", "okay"]), JSON),
            "weight": st.one_of(st.floats(), st.integers(), JSON),
            "rubric_id": JSON,
        },
    ),
    JSON,
)
ITEM = st.fixed_dictionaries(
    {},
    optional={"question": st.one_of(TEXT, JSON), "response": st.one_of(TEXT, JSON),
              "rubrics": st.one_of(st.lists(RUBRIC, max_size=5), JSON)},
)  # fmt: skip
JUDGE_BODY = st.one_of(
    st.fixed_dictionaries(
        {"items": st.one_of(st.lists(ITEM, max_size=4), JSON)},
        optional={"aggregation": st.one_of(st.sampled_from(["weighted", "vital", "mean"]), JSON)},
    ),
    JSON,
)
LABEL = st.one_of(st.lists(RUBRIC, max_size=4).map(json.dumps), st.lists(RUBRIC, max_size=4), JSON, TEXT)
REWARD_BODY = st.one_of(
    st.integers(0, 3).flatmap(
        lambda n: st.fixed_dictionaries(
            {"query": st.lists(TEXT, min_size=n, max_size=n),
             "prompts": st.lists(TEXT, min_size=n, max_size=n),
             "labels": st.lists(LABEL, min_size=n, max_size=n)}
        )
    ),
    st.fixed_dictionaries({}, optional={"query": JSON, "prompts": JSON, "labels": JSON}),
    JSON,
)  # fmt: skip


@pytest.fixture(scope="module")
def client():
    service = RewardService(LexicalJudge(), limits=Limits(max_items=8, max_rubrics=8, max_chars=20_000))
    with TestClient(create_app(service)) as test_client:  # server exceptions raise here: a 500 fails
        yield test_client


def post(client: TestClient, path: str, body) -> object:
    """POST ``body`` as JSON text that may hold lone surrogates (escaped, as a hostile client can)."""
    content = json.dumps(body, ensure_ascii=True, allow_nan=True).encode()
    return client.post(path, content=content, headers={"content-type": "application/json"})


def check(response) -> dict:
    assert response.status_code in (200, 413, 422), (response.status_code, response.text[:500])
    body = response.json()
    if response.status_code == 422:
        assert body["detail"] and all(entry["loc"] for entry in body["detail"]), body
    if response.status_code == 413:
        assert "limit" in body["detail"]
    return body


@FUZZ
@given(JUDGE_BODY)
def test_judge_endpoint_never_fails(client, body):
    answer = check(post(client, "/v1/judge", body))
    for result in answer.get("results", []):
        assert (result["reward"] is None and result["reason"]) or 0.0 <= result["reward"] <= 1.0


@FUZZ
@given(REWARD_BODY)
def test_get_reward_endpoint_never_fails(client, body):
    answer = check(post(client, "/get_reward", body))
    if "rewards" in answer:
        assert len(answer["rewards"]) == len(answer["scores"])
        assert all(r is None or 0.0 <= r <= 1.0 for r in answer["rewards"])


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_raw_bytes_get_a_4xx(client, raw):
    for path in ("/v1/judge", "/get_reward"):
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert response.status_code in (200, 400, 413, 422), (path, raw, response.status_code)


@pytest.mark.parametrize(
    "text", ["\x00", "\ud800 lone", "\u202eright-to-left\u202c مرحبا", "x" * 1_000_000, "a\r\nb\u2028c"]
)
def test_unicode_edge_cases(client, text):
    item = {"question": text, "response": text, "rubrics": [text, {"text": text, "weight": -1}]}
    answer = check(post(client, "/v1/judge", {"items": [item]}))
    reward = check(post(client, "/get_reward", {"query": [text], "prompts": [""], "labels": [[text]]}))
    if len(text) > 20_000:  # a 1 MB single line is over the size limit: 413, not a crash
        assert "limit" in answer["detail"] and "limit" in reward["detail"]
    elif "\ud800" in text:  # a lone surrogate: judged, or refused naming where it is (never a 500)
        for body, key in ((answer, "results"), (reward, "rewards")):
            refused = body.get("detail") and body["detail"][0]["type"] in ("string_unicode", "json_invalid")
            assert len(body.get(key, [])) == 1 or refused, body
    else:
        assert len(answer["results"]) == 1 and len(reward["rewards"]) == 1
