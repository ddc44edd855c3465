"""Build a ready judge from flags: the options shared by `rubric-verifier eval` and `rubric-verifier label`.

``--judge llm`` talks to ``--llm-url`` servers (or starts one vLLM engine on ``--serve-model``); the
baselines are fitted on ``--fit`` (a dev split) when they need it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from rubric_pipeline.core.config import option
from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.llm import LLMClient, LLMConfig
from verifier.data.labelled_io import load_labelled
from verifier.judge.baselines import EmbeddingJudge, LexicalJudge, MajorityJudge
from verifier.judge.hints import Hints, model_hints
from verifier.judge.judges import Judge, LLMJudge
from verifier.serve.engine import EngineConfig, VLLMEngine

logger = logging.getLogger(__name__)

JUDGES = ("llm", "lexical", "embedding", "majority")


@dataclass
class JudgeOptions:
    judge: Literal["llm", "lexical", "embedding", "majority"] = option("llm", help="which judge to run")
    llm_url: list[str] = option([], help="OpenAI-compatible base URL(s) ending in /v1 (judge=llm)")
    model: str = option("", help="served model name (judge=llm with --llm-url)")
    api_key: str | None = option(None, help="bearer token for --llm-url servers")
    serve_model: str | None = option(None, help="model dir: start a local vLLM engine on it (judge=llm)")
    max_model_len: int = option(4096, help="context length of the engine started by --serve-model")
    chat_template: str | None = option(None, help="chat template file for --serve-model (base models)")
    window: int = option(10, help="rubrics per request")
    samples: int = option(1, help="sampled judgements per window; >1 votes per rubric (needs temperature>0)")
    temperature: float = option(0.0, help="sampling temperature of the LLM judge")
    max_tokens: int | None = option(None, help="completion budget per window (default: sized to the window)")
    concurrency: int = option(16, help="items judged at once (the client also caps requests per server)")
    timeout_s: float = option(120.0, help="per-request timeout of the LLM client")
    max_retries: int = option(4, help="LLM client retries per request (connection errors, 429, 5xx)")
    degenerate_guard: bool = option(
        True, help="label degenerate responses not_support without a model call (off: test the model itself)"
    )
    hints: Hints | None = option(
        None,
        help="rubric-line hints: none, words or evidence (default: --serve-model's prompt card; else none)",
    )
    fit: str | None = option(None, help="labelled dev set to fit baseline thresholds / majority label on")
    minilm_path: str | None = option(None, help="sentence-transformers model dir (default: packaged MiniLM)")


def fit_required(kind: str) -> bool:
    return kind in ("lexical", "embedding", "majority")


def build_baseline(options: JudgeOptions, fit_examples: list[Any] | None) -> Any:
    judge: Any
    if options.judge == "lexical":
        judge = LexicalJudge()
    elif options.judge == "embedding":
        judge = EmbeddingJudge(model_path=options.minilm_path)
    elif options.judge == "majority":
        judge = MajorityJudge()
    else:
        raise ConfigError(f"unknown judge {options.judge!r}; choose from {JUDGES}")
    if fit_examples:
        judge.fit(fit_examples)
    elif options.judge == "majority":
        raise ConfigError("--judge majority needs --fit PATH (the dev set whose majority label it predicts)")
    else:
        logger.warning(
            "%s judge not fitted (no --fit): using default thresholds %s", judge.name, judge.params()
        )
    return judge


@asynccontextmanager
async def open_judge(options: JudgeOptions) -> AsyncIterator[Judge]:
    """Yield a ready judge; engines and clients it started are stopped on exit."""
    if options.judge != "llm":
        fit_examples = None
        if options.fit:
            fit_examples = load_labelled(options.fit)
        yield build_baseline(options, fit_examples)
        return

    with ExitStack() as stack:
        urls, model = list(options.llm_url), options.model
        if options.serve_model:
            engine_kwargs: dict[str, Any] = {
                "model": options.serve_model,
                "max_model_len": options.max_model_len,
            }
            if options.chat_template:
                engine_kwargs["chat_template"] = options.chat_template
            engine = stack.enter_context(VLLMEngine(EngineConfig(**engine_kwargs)))
            urls, model = [engine.base_url], engine.model_name
        config = LLMConfig.for_endpoint(
            urls,
            model,
            what="--judge llm",
            need="--llm-url and --model, or --serve-model DIR",
            api_key=options.api_key,
            timeout_s=options.timeout_s,
            max_retries=options.max_retries,
        )
        async with LLMClient(config) as client:
            yield LLMJudge(
                client,
                window=options.window,
                samples=options.samples,
                temperature=options.temperature,
                max_tokens=options.max_tokens,
                degenerate_guard=options.degenerate_guard,
                hints=options.hints if options.hints is not None else model_hints(options.serve_model),
            )
