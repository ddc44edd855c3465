"""Label probabilities from logprobs, calibrated decisions, and both against the real vLLM server."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rubric_pipeline.core.llm import LLMClient, LLMConfig
from rubric_pipeline.core.records import LABELS, Rubric
from verifier.judge.calibration import (
    CALIBRATION_FILE,
    Calibration,
    ProbsUnavailable,
    argmax_label,
    cross_validated_labels,
    expected_score,
    find_calibration,
    fit_calibration,
    label_probs,
)
from verifier.judge.judges import LLMJudge

S, P, N = "support", "partial_support", "not_support"


def _entry(token: str, top: dict[str, float]) -> dict:
    return {"token": token, "logprob": math.log(top.get(token, 1e-9)), "top_logprobs": [
        {"token": t, "logprob": math.log(p)} for t, p in top.items()
    ]}  # fmt: skip


def test_label_probs_reads_gemma_style_tokens() -> None:
    # Gemma: ["support","not_support"] -> [" support "," not _ support "]; each label starts a token.
    content = [
        _entry('["', {'["': 0.9, "[": 0.1}),
        _entry("support", {"support": 0.5, "partial": 0.2, "not": 0.2, "su": 0.05, '"]': 0.05}),
        _entry('","', {'","': 1.0}),
        _entry("not", {"not": 0.6, "support": 0.3, "Support": 0.1}),
        _entry("_", {"_": 1.0}),
        _entry("support", {"support": 1.0}),
        _entry('"]', {'"]': 1.0}),
    ]
    first, second = label_probs(content, 2)
    assert first == pytest.approx({S: 0.55 / 0.95, P: 0.2 / 0.95, N: 0.2 / 0.95})  # '"]' starts no label
    assert second == pytest.approx({S: 0.4, P: 0.0, N: 0.6})  # case-insensitive: "Support" is support
    assert argmax_label(first) == S and argmax_label(second) == N


def test_label_probs_reads_quote_merged_tokens() -> None:
    # A tokenizer that glues the opening quote to the label: the candidates must start with that lead.
    content = [
        _entry("[", {"[": 1.0}),
        _entry('"partial', {'"partial': 0.7, '"support': 0.2, "support": 0.1}),
        _entry("_support", {"_support": 1.0}),
        _entry('"]', {'"]': 1.0}),
    ]
    (probs,) = label_probs(content, 1)
    assert probs == pytest.approx({S: 0.2 / 0.9, P: 0.7 / 0.9, N: 0.0})  # bare "support" lacks the quote
    with pytest.raises(ProbsUnavailable, match="expected 2"):
        label_probs(content, 2)


def test_calibration_fits_better_than_argmax_and_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(0)
    gold = list(rng.choice(LABELS, size=300, p=[0.3, 0.1, 0.6]))
    # A model biased towards not_support: the right label gets a bump, not_support a bigger one.
    probs = []
    for label in gold:
        logits = rng.normal(size=3) + np.array([label == g for g in LABELS]) * 1.5 + np.array([0, 0, 1.5])
        weights = np.exp(logits) / np.exp(logits).sum()
        probs.append(dict(zip(LABELS, weights.tolist(), strict=True)))
    from sklearn.metrics import f1_score

    argmax_f1 = f1_score(gold, [argmax_label(p) for p in probs], average="macro", labels=list(LABELS))
    for method in ("bias", "score"):
        fitted = fit_calibration(probs, gold, method, fitted_on="synthetic")
        assert fitted.fit_macro_f1 == pytest.approx(
            f1_score(gold, fitted.labels(probs), average="macro", labels=list(LABELS))
        )
        # bias (0, 0) is the argmax, so the fitted biases can only do better; thresholds need not.
        assert fitted.fit_macro_f1 >= (argmax_f1 if method == "bias" else 0.5)
        fitted.save(tmp_path)
        assert find_calibration(tmp_path).labels(probs) == fitted.labels(probs)
    groups = [f"topic{i % 10}" for i in range(len(gold))]
    out_of_fold = cross_validated_labels(probs, gold, groups, "bias", n_splits=5)
    assert len(out_of_fold) == len(gold) and set(out_of_fold) <= set(LABELS)
    assert find_calibration(tmp_path / "missing") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CALIBRATION_FILE).write_text('{"method": "median"}')
    with pytest.raises(ValueError, match="unknown calibration method"):
        find_calibration(tmp_path / "bad")


def test_mixed_calibration_weighs_word_recall_against_the_model() -> None:
    rng = np.random.default_rng(1)
    gold = list(rng.choice(LABELS, size=300, p=[0.4, 0.1, 0.5]))
    # an uninformative model, and a word recall that tracks the gold label with noise
    probs = [dict(zip(LABELS, rng.dirichlet([1, 1, 1]).tolist(), strict=True)) for _ in gold]
    centre = {S: 0.9, P: 0.5, N: 0.15}
    recall = [float(np.clip(centre[label] + rng.normal(scale=0.12), 0, 1)) for label in gold]
    score = fit_calibration(probs, gold, "score")
    mixed = fit_calibration(probs, gold, "mixed", word_recall=recall)
    assert mixed.params["word_weight"] > 0.5 and mixed.fit_macro_f1 > score.fit_macro_f1 + 0.2
    assert mixed.needs_word_recall and not score.needs_word_recall
    from sklearn.metrics import f1_score

    labels = mixed.labels(probs, recall)
    assert mixed.fit_macro_f1 == pytest.approx(f1_score(gold, labels, average="macro", labels=list(LABELS)))
    with pytest.raises(ValueError, match="word recall per rubric"):
        mixed.labels(probs)
    with pytest.raises(ValueError, match="word recall per rubric"):
        fit_calibration(probs, gold, "mixed")
    # weight 0 is the score calibration
    unweighted = Calibration("mixed", {**score.params, "word_weight": 0.0})
    assert unweighted.labels(probs, recall) == score.labels(probs)
    groups = [f"topic{i % 10}" for i in range(len(gold))]
    out_of_fold = cross_validated_labels(probs, gold, groups, "mixed", n_splits=5, word_recall=recall)
    assert f1_score(gold, out_of_fold, average="macro", labels=list(LABELS)) > score.fit_macro_f1


def test_expected_score() -> None:
    probs = {S: 0.5, P: 0.4, N: 0.1}
    assert expected_score(probs) == pytest.approx(0.7)
    assert expected_score(probs, strict=True) == pytest.approx(0.5)


@pytest.mark.vllm
async def test_llm_judge_returns_label_distributions_from_the_server(vllm_server) -> None:
    config = LLMConfig(base_urls=[vllm_server.base_url], model=vllm_server.model_name, timeout_s=60)
    rubrics = [Rubric(f"r{i}", f"The bridge has property number {i}") for i in range(7)]
    async with LLMClient(config) as client:
        judge = LLMJudge(client, window=4)
        plain = await judge.judge("When did it open?", "It opened in 1932.", rubrics)
        judged = await judge.judge("When did it open?", "It opened in 1932.", rubrics, with_probs=True)
    assert plain.probs is None and judged.error is None, judged.error
    assert judged.labels == plain.labels  # greedy: asking for logprobs changes no label
    assert judged.probs is not None and len(judged.probs) == 7
    for label, probs in zip(judged.labels, judged.probs, strict=True):
        assert set(probs) == set(LABELS) and sum(probs.values()) == pytest.approx(1.0)
        assert probs[label] > 0  # the emitted label's first token is among the candidates read
    # The random model spreads its mass: at least one rubric has a non-degenerate distribution.
    assert any(0 < max(p.values()) < 1 for p in judged.probs)
    calibration = Calibration("bias", {S: 0.0, P: 50.0, N: 0.0})
    assert calibration.labels(judged.probs) == [P] * 7  # a large bias decides every rubric
