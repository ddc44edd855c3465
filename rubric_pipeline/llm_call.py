"""One build-stage LLM call: render a prompt template, send it, parse the answer, count what happened.

Every LLM stage of the build (rewrite, extract, merge, importance) sends one rendered template through the
shared :class:`~rubric_pipeline.core.llm.LLMClient`
at temperature 0 with the run's seed and parses the answer.
A failed call or an unparsable answer is logged and counted (``<template>.llm_failures``), never raised:
the caller gets ``None`` and takes its fallback.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TypeVar

from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.prompts import render_prompt

logger = logging.getLogger(__name__)

T = TypeVar("T")

LLM_APIS = ("chat", "completions")


async def ask(client, prompt: str, *, api: str = "chat", **kwargs: object) -> str:
    """Send one rendered prompt; ``api="chat"`` as the user turn, ``api="completions"`` as raw text (base
    models without a chat template, such as Gemma-3-270M). Other keywords go to the client unchanged."""
    if api == "chat":
        completion = await client.chat([{"role": "user", "content": prompt}], **kwargs)
    elif api == "completions":
        completion = await client.complete(prompt, **kwargs)
    else:
        raise ConfigError(f"unknown llm api {api!r}; expected one of {', '.join(LLM_APIS)}")
    return completion.text


async def ask_parsed(
    client,
    template: str,
    values: Mapping[str, object],
    parse: Callable[[str], T],
    *,
    about: str,
    api: str = "chat",
    seed: int | None = 0,
    max_tokens: int = 256,
    events: Counter | None = None,
    **structured: object,
) -> T | None:
    """Render ``template`` with ``values``, ask, and return ``parse(answer)``.

    Counts ``<template>.llm_calls``; an :class:`~rubric_pipeline.core.llm.LLMError` or a ``ValueError`` from
    ``parse`` counts ``<template>.llm_failures``, logs a warning naming ``about`` and returns ``None``.
    ``structured`` holds the structured-output keyword (``json_schema=``, ``choice=`` or ``regex=``).
    """
    from rubric_pipeline.core.llm import LLMError

    if api not in LLM_APIS:  # a configuration error, not a failed call: raise it
        raise ConfigError(f"unknown llm api {api!r}; expected one of {', '.join(LLM_APIS)}")
    events = events if events is not None else Counter()
    prompt = render_prompt(template, **values)
    events[f"{template}.llm_calls"] += 1
    try:
        text = await ask(
            client, prompt, api=api, max_tokens=max_tokens, temperature=0.0, seed=seed, **structured
        )
        return parse(text)
    except (LLMError, ValueError) as exc:
        events[f"{template}.llm_failures"] += 1
        logger.warning("%s call failed for %s: %s", template, about, exc)
        return None
