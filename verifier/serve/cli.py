"""`rubric-verifier serve`: the vLLM engine (or running engines) behind the reward gateway.

  rubric-verifier serve --model .cache/models/tiny --port 8080
  rubric-verifier serve --engine-url http://10.0.0.1:8000 --engine-url http://10.0.0.2:8000

Without ``--engine-url`` it starts one vLLM engine on the model (prefix caching, structured outputs),
restarts it when it dies (``--max-restarts``, with backoff) and stops it when the gateway stops (SIGTERM /
SIGINT; a watchdog takes the engine down after a SIGKILL too). With several ``--engine-url`` the gateway
balances windows across them by least outstanding requests, and an engine failing its health probes
leaves the rotation until it answers again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from rubric_pipeline.core.config import add_config_arguments, build_config, option
from rubric_pipeline.core.errors import ConfigError
from rubric_pipeline.core.llm import LLMClient, LLMConfig
from verifier.judge.calibration import Calibration, find_calibration
from verifier.judge.hints import Hints, model_hints
from verifier.judge.judges import LLMJudge
from verifier.judge.reward import Aggregation
from verifier.serve.engine import EngineConfig, VLLMEngine
from verifier.serve.gateway import create_app
from verifier.serve.service import Limits, RewardService, load_rubric_sets
from verifier.serve.supervisor import EngineSupervisor, SupervisedEngine, SupervisorConfig

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    model: str = option("", help="model directory the engine serves (not needed with --engine-url)")
    host: str = option("127.0.0.1", help="gateway address")
    port: int = option(8080, help="gateway port")
    engine_url: list[str] = option(
        [], help="running vLLM servers to use instead of starting one (repeatable)"
    )
    served_model_name: str | None = option(
        None, help="model name the engines serve; default: asked from them"
    )
    token: str | None = option(
        None, help="bearer token clients must send (default: $RV_SERVE_TOKEN, else none)"
    )
    aggregation: Aggregation = option(Aggregation.WEIGHTED, help="default reward aggregation")
    window: int = option(10, help="rubrics per engine request (one window)")
    hints: Hints | None = option(
        None,
        help="rubric-line hints: none, words or evidence (judge.hints); default: the model's prompt card",
    )
    warm_prefix: bool = option(
        False,
        help="judge an item's first window alone, then its other windows, so they find the shared prefix "
        "(instructions + question + response) cached; costs one window of latency per item. Off: vLLM's "
        "scheduler already caches blocks when it schedules them, so windows sent together share the "
        "prefix (bench/serving.py measures identical hit rates); for engines that cache only after compute",
    )
    max_items: int = option(256, help="items per request (413 above)")
    max_rubrics: int = option(256, help="rubrics per item (413 above)")
    max_chars: int = option(60_000, help="characters per item: question + response + rubrics (413 above)")
    max_queued_windows: int = option(
        32_768,
        help="rubric windows admitted (queued or judged) across requests; past it /v1/judge answers 503 + "
        "Retry-After and /get_reward waits for room (up to --queue-wait-s)",
    )
    queue_wait_s: float = option(
        50.0, help="how long /get_reward waits for room before its samples come back unjudgeable (overloaded)"
    )
    reward_deadline_s: float = option(
        170.0,
        help="/get_reward answers within this many seconds (inside OpenRLHF's 180 s client timeout): samples "
        "not judged by then come back unjudgeable (overloaded) instead of the client timing out",
    )
    keep_alive_s: float = option(
        75.0,
        help="seconds the gateway keeps an idle client connection open; longer than clients' own idle "
        "timeouts (httpx 5 s, aiohttp 15 s), so the client, not the gateway, closes idle connections "
        "and a request never races the gateway's close (uvicorn's default is 5 s)",
    )
    max_concurrency: int = option(64, help="engine requests in flight, across all engines")
    engine_timeout_s: float = option(60.0, help="timeout of one engine request")
    engine_retries: int = option(2, help="retries of a failed engine request (connection errors, 5xx)")
    item_timeout_s: float = option(
        120.0,
        help="deadline for one item's judgement, from its turn (at most --max-concurrency items are judged "
        "at once; the rest wait in arrival order); then reward None, 'timeout'",
    )
    unjudgeable_reward: float = option(
        0.0,
        help="reward /get_reward answers for an unjudgeable sample (OpenRLHF needs a float, never null); the "
        "sample stays flagged in extra_logs ('unjudgeable', 'unjudgeable/<reason>') and in /metrics",
    )
    rubric_sets: str | None = option(None, help="RubricSet jsonl: OpenRLHF labels[i] may then be a qid")
    max_model_len: int = option(2048, help="engine context length")
    engine_port: int | None = option(None, help="port of the engine this command starts (default: free port)")
    kv_cache_gib: int = option(1, help="CPU engine KV cache (GiB)")
    block_size: int | None = option(
        None, help="engine KV-cache block size in tokens (default: 32 on CPU, vLLM's own on GPU)"
    )
    cpu_threads: str | None = option(None, help="cores for a CPU engine, e.g. '0-1'")
    chat_template: str | None = option(None, help="chat template file for models without one")
    trace_path: str | None = option(None, help="append every engine call to this JSONL file")
    calibration: str | None = option(
        None,
        help='calibration.json for `"calibrated": true` requests (default: the one in --model\'s folder)',
    )
    engine_args: list[str] = option([], help="extra vLLM flags for the engine started here (recipe list)")
    health_interval_s: float = option(1.0, help="seconds between health probes of every engine")
    max_restarts: int = option(
        5, help="restarts of the engine this command started before it is given up (backoff 1 s, doubling)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default=None, help="recipe YAML; its `serve` section fills the options")
    add_config_arguments(parser, ServeConfig, skip=("engine_url",))
    parser.add_argument(
        "--engine-url",
        dest="engine_url",
        action="extend",
        nargs="+",
        default=argparse.SUPPRESS,
        help="running vLLM server(s) to use instead of starting one; repeatable, balanced by least load",
    )


def engine_base_url(url: str) -> str:
    """Accept ``http://host:port`` or ``.../v1``; the client wants the ``/v1`` base."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


async def discover_model(base_url: str) -> str:
    import httpx

    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(f"{base_url}/models")
        response.raise_for_status()
        return response.json()["data"][0]["id"]


@asynccontextmanager
async def open_service(
    config: ServeConfig, base_urls: list[str], model: str, metrics, supervisor=None
) -> AsyncIterator:
    """LLMClient -> LLMJudge -> RewardService, opened on the running event loop; the client follows the
    supervisor's rotation (engines that are down get no windows while another is up)."""
    llm_config = LLMConfig.for_endpoint(
        base_urls,
        model,
        what="serve",
        need="--model DIR or --engine-url",
        max_concurrency=config.max_concurrency,
        max_retries=config.engine_retries,
        timeout_s=config.engine_timeout_s,
        trace_path=config.trace_path,
    )
    limits = Limits(
        config.max_items,
        config.max_rubrics,
        config.max_chars,
        config.max_queued_windows,
        config.queue_wait_s,
        config.reward_deadline_s,
    )
    calibration = (
        Calibration.load(config.calibration) if config.calibration else find_calibration(config.model or None)
    )
    if calibration is not None:
        logger.info(
            "calibrated labels available (%s, fitted on %s)", calibration.method, calibration.fitted_on
        )
    async with LLMClient(llm_config) as client:
        if supervisor is not None:
            for url, entry in supervisor.status().items():
                client.set_available(url, entry["state"] == "ok")
            supervisor.listeners.append(client.set_available)
        yield RewardService(
            LLMJudge(client, window=config.window, hints=served_hints(config)),
            aggregation=config.aggregation,
            limits=limits,
            item_timeout_s=config.item_timeout_s,
            rubric_sets=load_rubric_sets(config.rubric_sets),
            metrics=metrics,
            first_window=config.window if config.warm_prefix else None,
            unjudgeable_reward=config.unjudgeable_reward,
            calibration=calibration,
            items_at_once=config.max_concurrency,
        )


def served_hints(config: ServeConfig) -> Hints:
    """The flag if given, else what the served model folder's prompt card says."""
    return config.hints if config.hints is not None else model_hints(config.model or None)


def build_app(config: ServeConfig, base_urls: list[str], model: str, engine=None):
    """The gateway app; ``engine`` (a started :class:`VLLMEngine` behind ``base_urls[0]``) is restarted by
    the app's supervisor when it dies."""
    supervision = SupervisorConfig(interval_s=config.health_interval_s, max_restarts=config.max_restarts)
    engines = [
        SupervisedEngine(url, engine if engine is not None and url == engine.base_url else None)
        for url in base_urls
    ]
    supervisor = EngineSupervisor(engines, supervision)
    return create_app(
        open_service=lambda metrics: open_service(config, base_urls, model, metrics, supervisor),
        token=config.token or os.environ.get("RV_SERVE_TOKEN") or None,
        supervisor=supervisor,
    )


def start_engine(config: ServeConfig):
    if not config.model:
        raise ConfigError("give --model DIR (the verifier to serve) or --engine-url of running engines")
    engine_config = EngineConfig(
        model=config.model,
        port=config.engine_port,
        served_model_name=config.served_model_name,
        max_model_len=config.max_model_len,
        kv_cache_gib=config.kv_cache_gib,
        block_size=config.block_size,
        cpu_threads=config.cpu_threads,
        chat_template=config.chat_template,
        extra_args=list(config.engine_args),
    )
    return VLLMEngine(engine_config).start()


def run(args: argparse.Namespace) -> int:
    import uvicorn

    config = build_config(ServeConfig, args.recipe, "serve", args)
    # SIGTERM while the engine starts: exit through the finally blocks so the engine is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    engine = None if config.engine_url else start_engine(config)
    try:
        base_urls = [engine.base_url] if engine else [engine_base_url(url) for url in config.engine_url]
        model = (
            engine.model_name
            if engine
            else config.served_model_name or asyncio.run(discover_model(base_urls[0]))
        )
        app = build_app(config, base_urls, model, engine)
        # uvicorn turns SIGTERM/SIGINT into a graceful shutdown; the finally below then stops the engine.
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                log_level="warning",
                timeout_keep_alive=config.keep_alive_s,
            )
        )
        print(
            f"reward gateway on http://{config.host}:{config.port} -> {', '.join(base_urls)} ({model})",
            flush=True,
        )
        # uvicorn re-raises the signal it caught once it has shut down; ignored here, so the process stops
        # the engine below and exits 0 rather than dying mid-cleanup.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.run()
    finally:
        if engine is not None:
            engine.stop()
    return 0
