"""The reward gateway: FastAPI routes, pydantic validation and metrics over :class:`RewardService`.

Endpoints (contract in ARCHITECTURE.md, "The reward endpoint"):
  POST /v1/judge    {items: [{question, response, rubrics: [str | Rubric]}], aggregation?,
                     return_probs?, soft_reward?, calibrated?}
                    -> {results: [{labels, reward, error, reason, stats, probs}]}
  POST /get_reward  OpenRLHF: {query, prompts, labels} -> {rewards, scores, extra_logs}
  GET  /health      200 while an engine can judge (or none is needed), else 503; per-engine status
  GET  /metrics     Prometheus text

A JSON body is read whatever its Content-Type (``curl -d`` sends a form type). With a token, clients send
``Authorization: Bearer <token>``, or ``?token=<token>`` in the URL for those that cannot set a header
(OpenRLHF's ``--reward.remote_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rubric_pipeline.core.records import RubricList
from verifier.judge.reward import Aggregation
from verifier.serve.metrics import Metrics
from verifier.serve.openrlhf import openrlhf_rewards
from verifier.serve.service import BadInput, Item, ProbOptions, QueueFull, RewardService, TooLarge
from verifier.serve.supervisor import EngineSupervisor

BaseModelT = TypeVar("BaseModelT", bound=BaseModel)
T = TypeVar("T")


class JudgeItemIn(BaseModel):
    question: str
    response: str
    rubrics: RubricList

    def to_item(self) -> Item:
        return Item(self.question, self.response, list(self.rubrics))


class JudgeRequest(BaseModel):
    items: list[JudgeItemIn]
    aggregation: Aggregation | None = None
    return_probs: bool = Field(False, description="add each rubric's label distribution (from logprobs)")
    soft_reward: bool = Field(False, description="reward = expected score under the label distributions")
    calibrated: bool = Field(False, description="labels from the served model's calibration.json")

    def options(self) -> ProbOptions:
        return ProbOptions(self.return_probs, self.soft_reward, self.calibrated)


class ItemResultOut(BaseModel):
    labels: list[str] | None
    reward: float | None
    error: str | None = None
    reason: str | None = None
    stats: dict[str, float] = {}
    probs: list[dict[str, float]] | None = None


class JudgeResponse(BaseModel):
    results: list[ItemResultOut]


class OpenRLHFRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenRLHF may add fields; we read these three

    query: list[str]
    prompts: list[str]
    labels: list[Any]


class OpenRLHFResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


class SafeJSONResponse(JSONResponse):
    """JSON that always renders: non-ASCII escaped, so text a client sent with lone surrogates (valid JSON
    escapes, not encodable as UTF-8) cannot turn an answer into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def validation_detail(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """pydantic's errors without the offending input: it may be a megabyte, NaN, or unencodable."""
    return [
        {"loc": [part if isinstance(part, int) else str(part) for part in e["loc"]], "msg": e["msg"],
         "type": e["type"]}
        for e in errors
    ]  # fmt: skip


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): counts requests and times them."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.request_latency.labels(endpoint).observe(time.perf_counter() - started)


ENDPOINTS = ("/v1/judge", "/get_reward", "/health", "/metrics")


def admit(request: Request) -> RewardService:
    """Auth and body size, checked before the body is parsed."""
    token, max_body_bytes = request.app.state.token, request.app.state.max_body_bytes
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = request.query_params.get("token", "")
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise HTTPException(413, f"body of {length} bytes; the limit is {max_body_bytes}")
    return request.app.state.service


AdmittedService = Annotated[RewardService, Depends(admit)]


async def json_body(request: Request, model: type[BaseModelT]) -> BaseModelT:
    """The body parsed as JSON into ``model`` whatever the Content-Type; errors are FastAPI's 422."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client hangs up first: an RL worker that timed out has gone,
    and judging its samples anyway would only delay everyone queued behind them. The body has been read,
    so the next ASGI message is the disconnect; waiting for it costs nothing while the client stays."""

    async def hang_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, gone = asyncio.ensure_future(work), asyncio.ensure_future(hang_up())
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientGone
    finally:
        for pending in (task, gone):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending


def create_app(
    service: RewardService | None = None,
    *,
    open_service: Callable[[Metrics], AbstractAsyncContextManager[RewardService]] | None = None,
    token: str | None = None,
    engine_urls: list[str] | None = None,
    supervisor: EngineSupervisor | None = None,
    max_body_bytes: int = 16 * 1024 * 1024,
) -> FastAPI:
    """The gateway around a ready ``service``, or one that ``open_service(metrics)`` opens at startup
    (so its HTTP client lives on the server's event loop). ``token`` turns on bearer auth. ``supervisor``
    watches the engines (``engine_urls`` alone: one that health-checks those URLs); it runs while the app
    does and ``/health`` reports it."""
    if (service is None) == (open_service is None):
        raise ValueError("give exactly one of service or open_service")
    metrics = service.metrics if service is not None else Metrics()
    if supervisor is None and engine_urls:
        supervisor = EngineSupervisor.for_urls(list(engine_urls))
    if supervisor is not None:
        supervisor.metrics = metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if supervisor is not None:
                await stack.enter_async_context(supervisor)
            if open_service is None:
                app.state.service, app.state.token, app.state.max_body_bytes = service, token, max_body_bytes
                yield
            else:
                async with open_service(metrics) as opened:
                    app.state.service = opened
                    yield

    app = FastAPI(
        title="rubric-verifier reward gateway", lifespan=lifespan, default_response_class=SafeJSONResponse
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.service, app.state.token, app.state.max_body_bytes = service, token, max_body_bytes

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return SafeJSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge) -> JSONResponse:
        return SafeJSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        detail = [{"loc": list(exc.loc), "msg": str(exc), "type": "value_error"}]
        return SafeJSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> Response:
        metrics.abandoned.inc()
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    @app.post("/v1/judge", response_model=JudgeResponse)
    async def judge(request: Request, service: AdmittedService) -> dict[str, Any]:
        body = await json_body(request, JudgeRequest)
        items = [item.to_item() for item in body.items]
        results = await unless_client_leaves(
            request, service.judge_items(items, body.aggregation, body.options())
        )
        return {"results": [result.to_dict() for result in results]}

    @app.post("/get_reward", response_model=OpenRLHFResponse)
    async def get_reward(request: Request, service: AdmittedService) -> dict[str, Any]:
        body = await json_body(request, OpenRLHFRequest)
        if not body.query and not body.prompts and not body.labels:
            return {"rewards": [], "scores": [], "extra_logs": {}}  # OpenRLHF's idle ranks send empty lists
        return await unless_client_leaves(
            request, openrlhf_rewards(service, body.query, body.prompts, body.labels)
        )

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        """503 when no engine can judge, so a load balancer routes elsewhere; the supervisor's last probe
        (at most ``interval_s`` old) decides, so this answers at once."""
        inflight = request.app.state.service.inflight if request.app.state.service else 0
        status = supervisor.status() if supervisor is not None else {}
        engines = {url: entry["state"] for url, entry in status.items()}
        ready = supervisor is None or supervisor.ready()
        overall = "ok" if all(s == "ok" for s in engines.values()) else "degraded" if ready else "unavailable"
        body = {"status": overall, "engines": engines, "engine_detail": status, "inflight": inflight}
        return SafeJSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
