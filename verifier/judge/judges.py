"""The Judge abstraction: (question, response, rubrics) -> one label per rubric, or None plus a reason.

:class:`LLMJudge` asks any OpenAI-compatible server through the one client
(:class:`rubric_pipeline.core.llm.LLMClient`): rubrics are
split into windows (``prompt.window_slices``), every
window of a response is sent concurrently with its output constrained to ``prompt.label_schema(n)``, and
``samples > 1`` votes per rubric over sampled completions. ``judge(..., with_probs=True)`` also asks for
logprobs and returns each rubric's distribution over the three labels (:mod:`verifier.judge.calibration`).
Baselines that need no LLM live in :mod:`verifier.judge.baselines`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.llm import LLMClient, LLMError
from rubric_pipeline.core.records import LABEL_SCORES, LABELS, Label, Rubric
from verifier.judge import prompt
from verifier.judge.calibration import ProbsUnavailable, label_probs, mean_probs
from verifier.judge.guard import DEGENERATE, is_degenerate
from verifier.judge.hints import Hints

logger = logging.getLogger(__name__)


class Reason(StrEnum):
    """Why an item has no model-made reward; carried as a value from the judge to the HTTP answer and the
    metrics (``degenerate`` scores 0, every other reason leaves the reward None)."""

    DEGENERATE = DEGENERATE
    NO_RUBRICS = "no_rubrics"
    TIMEOUT = "timeout"
    ENGINE_ERROR = "engine_error"
    UNPARSABLE = "unparsable"
    UNSCORABLE = "unscorable"
    PROMPT_MISMATCH = "prompt_mismatch"  # /get_reward: the query does not start with the prompt
    OVERLOADED = "overloaded"  # no room in the work queue in time


@dataclass
class Judgement:
    """Labels in rubric order, or ``labels=None`` with ``error`` saying why the item is unjudgeable and
    ``reason`` classifying it.

    ``raw`` keeps the model's raw outputs (one per window and sample) for traces and debugging;
    ``note`` marks labels decided without a model call (``"degenerate"``); ``probs`` holds one
    ``{label: probability}`` per rubric when they were asked for (``with_probs=True``).
    """

    labels: list[str] | None
    error: str | None = None
    raw: list[str] = field(default_factory=list)
    note: str | None = None
    reason: Reason | None = None
    probs: list[dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if self.labels is None and self.reason is None:
            self.reason = Reason.ENGINE_ERROR  # a judge that did not say why: count it as a failure

    @property
    def ok(self) -> bool:
        return self.labels is not None


@runtime_checkable
class Judge(Protocol):
    name: str

    async def judge(self, question: str, response: str, rubrics: list[Rubric]) -> Judgement: ...


class JudgeItem(Protocol):
    """Anything with the fields a judge reads, e.g. a
    :class:`~rubric_pipeline.core.records.LabelledExample`."""

    question: str
    response: str
    rubrics: list[Rubric]


def majority_vote(samples: Sequence[Sequence[str]]) -> list[str]:
    """Per-rubric majority over equally long label lists.

    Ties go to the label with the LOWER support score (not_support < partial_support < support): when the
    samples disagree evenly the judge withholds credit rather than grants it, which keeps self-consistency
    from inflating rewards.
    """
    if not samples:
        raise ValueError("majority_vote needs at least one sample")
    length = len(samples[0])
    if any(len(sample) != length for sample in samples):
        raise ValueError("samples disagree on the number of labels")
    voted = []
    for position in range(length):
        counts = Counter(sample[position] for sample in samples)
        voted.append(max(counts, key=lambda label: (counts[label], -LABEL_SCORES[label])))
    return voted


def default_max_tokens(n_rubrics: int, reasoning: bool = False) -> int:
    """Room for a JSON list of ``n`` labels (~6 tokens each with quotes and commas) plus slack."""
    return 16 + 12 * n_rubrics + (512 if reasoning else 0)


class LLMJudge:
    """A judge served by an OpenAI-compatible endpoint (vLLM or any API) through :class:`LLMClient`."""

    supports_probs = True
    top_logprobs = 20  # vLLM's default --max-logprobs

    def __init__(
        self,
        client: LLMClient,
        window: int | None = None,
        samples: int = 1,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        max_windows_in_flight: int = 256,
        constrained: bool = True,
        name: str | None = None,
        degenerate_guard: bool = True,
        hints: Hints = "none",
    ):
        if samples < 1:
            raise ConfigError(f"samples must be >= 1, got {samples}")
        if samples > 1 and temperature <= 0:
            raise ConfigError(
                "self-consistency (samples > 1) needs temperature > 0: greedy samples are identical"
            )
        self.client = client
        self.window = window or prompt.DEFAULT_WINDOW
        self.samples = samples
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.constrained = constrained
        # Serving keeps the guard on; evaluating the model's own master-key robustness turns it off.
        self.degenerate_guard = degenerate_guard
        self.hints = hints  # the prompt a model trained with rubric-line hints expects (its prompt card)
        self.name = name or client.config.model
        # The client caps requests per server; this caps windows queued by one judge across all items.
        self._windows = asyncio.Semaphore(max_windows_in_flight)

    async def judge(
        self, question: str, response: str, rubrics: list[Rubric], with_probs: bool = False
    ) -> Judgement:
        """Labels per rubric; ``with_probs`` adds each rubric's label distribution (an item whose
        distributions cannot be read is unjudgeable: ``unparsable``)."""
        if not rubrics:
            return Judgement(labels=None, error="no rubrics to judge", reason=Reason.NO_RUBRICS)
        if self.degenerate_guard and is_degenerate(response):
            not_support = Label.NOT_SUPPORT.value
            probs = [{label: float(label == not_support) for label in LABELS} for _ in rubrics]
            return Judgement(
                [not_support] * len(rubrics), note=DEGENERATE, probs=probs if with_probs else None
            )
        slices = prompt.window_slices(len(rubrics), self.window)
        results = await asyncio.gather(
            *(self._judge_window(question, response, rubrics[part], with_probs) for part in slices)
        )
        labels: list[str] = []
        probs: list[dict[str, float]] = []
        raw: list[str] = []
        errors: list[str] = []
        reasons: list[Reason] = []
        for index, (window_labels, window_probs, window_raw, error, reason) in enumerate(results):
            raw.extend(window_raw)
            if error is not None:
                errors.append(f"window {index + 1}/{len(slices)}: {error}")
                reasons.append(reason or Reason.ENGINE_ERROR)
            else:
                labels.extend(window_labels)
                probs.extend(window_probs)
        if errors:  # the first failed window's reason classifies the item
            return Judgement(labels=None, error="; ".join(errors), raw=raw, reason=reasons[0])
        return Judgement(labels=labels, raw=raw, probs=probs if with_probs else None)

    async def _judge_window(
        self, question: str, response: str, rubrics: list[Rubric], with_probs: bool = False
    ) -> tuple[list[str], list[dict[str, float]], list[str], str | None, Reason | None]:
        """Labels for one window, their distributions (when asked), its raw texts, and an error with its
        reason (both None when it parsed)."""
        n = len(rubrics)
        texts = [rubric.text for rubric in rubrics]
        messages = prompt.render_messages(question, response, texts, hints=self.hints)
        extra = {"logprobs": True, "top_logprobs": self.top_logprobs} if with_probs else None
        async with self._windows:
            try:
                completion = await self.client.chat(
                    messages,
                    max_tokens=self.max_tokens or default_max_tokens(n),
                    temperature=self.temperature,
                    n=self.samples,
                    json_schema=prompt.label_schema(n) if self.constrained else None,
                    extra_body=extra,
                )
            except LLMError as exc:
                reason = Reason.TIMEOUT if exc.timed_out else Reason.ENGINE_ERROR
                return [], [], [], f"request failed: {exc}", reason
        parsed: list[list[str]] = []
        sampled_probs: list[list[dict[str, float]]] = []
        parse_errors: list[str] = []
        for text, choice in zip(
            completion.texts, completion.choices or [{}] * len(completion.texts), strict=True
        ):
            try:
                labels = list(prompt.parse_labels(text, n).labels)
                if with_probs:
                    content = (choice.get("logprobs") or {}).get("content")
                    if not content:
                        raise ProbsUnavailable("the server returned no logprobs")
                    sampled_probs.append(label_probs(content, n))
                parsed.append(labels)
            except (prompt.ParseError, ProbsUnavailable) as exc:
                parse_errors.append(str(exc))
        if not parsed:
            detail = parse_errors[0] if parse_errors else "empty"
            kind = "unparsable output" if not with_probs else "unparsable output or logprobs"
            return [], [], list(completion.texts), f"{kind}: {detail}", Reason.UNPARSABLE
        if parse_errors:
            logger.debug("%d/%d samples unparsable; voting over the rest", len(parse_errors), self.samples)
        return majority_vote(parsed), mean_probs(sampled_probs), list(completion.texts), None, None


async def judge_all(
    judge: Judge,
    items: Sequence[JudgeItem],
    concurrency: int = 16,
    on_result: Callable[[int, Judgement], Any] | None = None,
    progress: bool = True,
) -> list[Judgement]:
    """Judge every item with at most ``concurrency`` items in flight; results come back in input order.

    ``on_result(index, judgement)`` is called as each item finishes (e.g. to append it to a file).
    """
    from tqdm.auto import tqdm

    results: list[Judgement | None] = [None] * len(items)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(items)):
        queue.put_nowait(index)
    bar = tqdm(total=len(items), desc=f"judge {judge.name}", unit="item", disable=not progress)

    async def worker() -> None:
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            item = items[index]
            judgement = await judge.judge(item.question, item.response, list(item.rubrics))
            results[index] = judgement
            if on_result is not None:
                on_result(index, judgement)
            bar.update(1)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))
    finally:
        bar.close()
    return [result for result in results if result is not None]
