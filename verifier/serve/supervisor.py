"""Engine supervision: which engines can judge right now, and restarting the ones ``serve`` started.

One asyncio task probes every engine's ``/health`` each ``interval_s``. An engine given by URL leaves the
rotation after ``down_after`` failed probes in a row and comes back on the first good one. An engine this
process started (a :class:`~verifier.serve.engine.VLLMEngine`) is restarted when its server process exits,
or when it has failed every probe for ``hang_s``: up to ``max_restarts`` times, waiting ``backoff_s``,
doubling up to ``max_backoff_s``, before each try. Listeners (the LLM client) hear every change of
rotation; ``/health`` reads :meth:`EngineSupervisor.ready` and :meth:`EngineSupervisor.status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import httpx

from rubric_pipeline.core.config import option

if TYPE_CHECKING:
    from verifier.serve.engine import VLLMEngine
    from verifier.serve.metrics import Metrics

logger = logging.getLogger(__name__)


class EngineState(StrEnum):
    UNKNOWN = "unknown"  # not probed yet
    OK = "ok"
    DOWN = "down"  # out of rotation: failed probes, or its process died
    RESTARTING = "restarting"
    FAILED = "failed"  # restarts spent: stays out of rotation


@dataclass
class SupervisorConfig:
    interval_s: float = option(1.0, help="seconds between health probes of every engine")
    probe_timeout_s: float = option(2.0, help="timeout of one health probe")
    down_after: int = option(2, help="failed probes in a row before an engine leaves the rotation")
    max_restarts: int = option(5, help="restarts of an engine this server started, in its lifetime")
    backoff_s: float = option(1.0, help="wait before the first restart; doubles per restart")
    max_backoff_s: float = option(60.0, help="longest wait between restarts")
    hang_s: float = option(90.0, help="a started engine failing every probe this long is restarted")


@dataclass
class SupervisedEngine:
    base_url: str  # the OpenAI base, ``http://host:port/v1``
    process: VLLMEngine | None = None  # set when this server started the engine (and so may restart it)
    state: EngineState = EngineState.UNKNOWN
    failures: int = 0
    failing_since: float | None = None
    restarts: int = 0
    last_error: str | None = None

    @property
    def health_url(self) -> str:
        return self.base_url.removesuffix("/").removesuffix("/v1") + "/health"


@dataclass
class EngineSupervisor:
    engines: list[SupervisedEngine]
    config: SupervisorConfig = field(default_factory=SupervisorConfig)
    metrics: Metrics | None = None
    listeners: list[Callable[[str, bool], None]] = field(default_factory=list)
    _task: asyncio.Task | None = field(default=None, init=False, repr=False)
    _http: httpx.AsyncClient | None = field(default=None, init=False, repr=False)
    _restarts: set[asyncio.Task] = field(default_factory=set, init=False, repr=False)

    @classmethod
    def for_urls(cls, base_urls: list[str], **kwargs: Any) -> EngineSupervisor:
        return cls([SupervisedEngine(url) for url in base_urls], **kwargs)

    def ready(self) -> bool:
        """Whether at least one engine can judge."""
        return any(engine.state is EngineState.OK for engine in self.engines)

    def status(self) -> dict[str, dict[str, Any]]:
        return {
            engine.base_url: {
                "state": engine.state.value,
                "managed": engine.process is not None,
                "restarts": engine.restarts,
                "last_error": engine.last_error,
            }
            for engine in self.engines
        }

    async def __aenter__(self) -> EngineSupervisor:
        self._http = httpx.AsyncClient(timeout=self.config.probe_timeout_s)
        for engine in self.engines:
            if engine.process is not None and engine.process.is_alive():
                self._set(engine, EngineState.OK)  # started and ready before the gateway opened
        await self.check_all()  # /health is right from the first request on
        self._task = asyncio.create_task(self._loop(), name="rv-engine-supervisor")
        return self

    async def __aexit__(self, *exc: object) -> None:
        # A restart in a thread cannot be cancelled; the engine's stop() (the caller's) makes it give up.
        for task in [self._task, *self._restarts]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_s)
            try:
                await self.check_all()
            except Exception:  # the watcher must outlive any one bad probe
                logger.exception("engine supervision step failed")

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(engine) for engine in self.engines))

    async def check(self, engine: SupervisedEngine) -> None:
        if engine.state in (EngineState.RESTARTING, EngineState.FAILED):
            return
        if engine.process is not None and not engine.process.is_alive():
            code = engine.process.process.returncode if engine.process.process else None
            engine.last_error = f"engine process exited (code {code})"
            self._spawn_restart(engine)
            return
        error = await self._probe(engine)
        now = time.monotonic()
        if error is None:
            engine.failures, engine.failing_since = 0, None
            self._set(engine, EngineState.OK)
            return
        engine.failures += 1
        engine.last_error = error
        engine.failing_since = engine.failing_since or now
        if engine.failures >= self.config.down_after:
            self._set(engine, EngineState.DOWN)
        if engine.process is not None and now - engine.failing_since >= self.config.hang_s:
            self._spawn_restart(engine)

    def _spawn_restart(self, engine: SupervisedEngine) -> None:
        """Restart in a task of its own, so the other engines are still probed meanwhile."""
        self._set(engine, EngineState.RESTARTING)
        task = asyncio.create_task(self._restart(engine), name=f"rv-restart {engine.base_url}")
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _probe(self, engine: SupervisedEngine) -> str | None:
        assert self._http is not None, "supervisor not started"
        try:
            response = await self._http.get(engine.health_url)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None if response.status_code == 200 else f"health answered HTTP {response.status_code}"

    async def _restart(self, engine: SupervisedEngine) -> None:
        assert engine.process is not None
        if engine.restarts >= self.config.max_restarts:
            self._set(engine, EngineState.FAILED)
            logger.error("engine %s: %d restarts spent, giving up", engine.base_url, engine.restarts)
            await asyncio.to_thread(engine.process.stop)  # nothing of it may stay behind
            return
        delay = min(self.config.max_backoff_s, self.config.backoff_s * 2**engine.restarts)
        engine.restarts += 1
        logger.warning(
            "engine %s down (%s): restart %d/%d in %.1fs",
            engine.base_url, engine.last_error, engine.restarts, self.config.max_restarts, delay,
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.engine_restarts.labels(engine.base_url).inc()
        await asyncio.sleep(delay)
        try:
            await asyncio.to_thread(engine.process.restart)  # blocks until ready: off the event loop
        except Exception as exc:  # EngineError, or an OS error starting it: try again next round
            engine.last_error = str(exc).splitlines()[0]
            logger.warning("engine %s restart failed: %s", engine.base_url, engine.last_error)
            self._set(engine, EngineState.DOWN)
            return
        engine.failures, engine.failing_since = 0, None
        self._set(engine, EngineState.OK)
        logger.warning("engine %s restarted", engine.base_url)

    def _set(self, engine: SupervisedEngine, state: EngineState) -> None:
        if state is engine.state:
            return
        was_up, engine.state = engine.state is EngineState.OK, state
        up = state is EngineState.OK
        if self.metrics is not None:
            self.metrics.engine_up.labels(engine.base_url).set(float(up))
        if up != was_up:
            logger.info("engine %s %s rotation", engine.base_url, "in" if up else "out of")
            for listener in self.listeners:
                listener(engine.base_url, up)
