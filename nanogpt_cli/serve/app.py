"""The HTTP side of ``nanogpt serve``: an ASGI app (Starlette, which FastAPI is built on)
with OpenAI's ``POST /v1/completions`` and ``GET /v1/models``, and ``GET /health``.

Requests are checked (``protocol.parse_completion``), tokenized and handed to the
``Engine`` as jobs; its events come back through an asyncio queue per request, as one JSON
response or as server-sent events (``data: {...}`` chunks, then ``data: [DONE]``). A client
that goes away cancels its jobs, and the engine drops their sequences at its next step.
Every refusal is OpenAI's error body with a 4xx status; a full queue is a 503 with
``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import DatasetError, first_line
from ..log import get_logger
from ..sampling import SamplingSettings
from .engine import Busy, Done, Engine, Event, Failed, Job, Text
from .protocol import (
    ApiError,
    CompletionRequest,
    Limits,
    choice,
    completion_body,
    parse_completion,
    usage_body,
)

logger = get_logger(__name__)

MAX_BODY_BYTES = 8 * 2**20  # a request body larger than this is refused (413)
RETRY_AFTER_S = 1  # what a 503 asks the client to wait


@dataclass(frozen=True)
class ServerSettings:
    """What the app serves and accepts."""

    model_name: str
    limits: Limits
    api_key: str | None = None


def build_app(engine: Engine, settings: ServerSettings) -> Starlette:
    """The ASGI app serving ``engine``'s model (the engine's thread is started by the
    caller)."""
    created = int(time.time())

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": settings.model_name,
                "running": engine.running,
                "waiting": len(engine.waiting),
                "dropped": engine.dropped,
            }
        )

    def model_card() -> dict[str, Any]:
        return {
            "id": settings.model_name,
            "object": "model",
            "created": created,
            "owned_by": "nanogpt",
        }

    async def models(request: Request) -> Response:
        _authorize(request, settings.api_key)
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def model(request: Request) -> Response:
        _authorize(request, settings.api_key)
        if request.path_params["name"] != settings.model_name:
            raise ApiError(
                404, f"no model {request.path_params['name']!r} here", "model", "model_not_found"
            )
        return JSONResponse(model_card())

    async def completions(request: Request) -> Response:
        _authorize(request, settings.api_key)
        parsed = parse_completion(await _json_body(request), settings.limits)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(event: Event) -> None:  # called on the engine's thread
            loop.call_soon_threadsafe(events.put_nowait, event)

        jobs = _jobs(parsed, engine, emit)
        try:
            engine.submit(jobs)
        except Busy as e:
            raise ApiError(
                503,
                f"the server is busy ({e}); retry after {RETRY_AFTER_S} s",
                code="server_busy",
                kind="server_error",
            ) from None
        prompt_tokens = sum(len(job.prompt) for job in jobs)
        if parsed.stream:
            return StreamingResponse(
                _stream(parsed, settings.model_name, jobs, events, prompt_tokens),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        watcher = asyncio.create_task(_cancel_on_disconnect(request, jobs))
        try:
            return await _collect(parsed, settings.model_name, jobs, events, prompt_tokens)
        finally:
            watcher.cancel()
            for job in jobs:
                job.cancel()

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 503 else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)

    async def on_crash(request: Request, exc: Exception) -> Response:
        logger.error(f"{request.method} {request.url.path} failed: {type(exc).__name__}: {exc}")
        error = ApiError(500, f"internal error: {type(exc).__name__}", kind="server_error")
        return JSONResponse(error.body(), status_code=500)

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{name:path}", model, methods=["GET"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ],
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
    )


def _authorize(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    ):
        raise ApiError(
            401,
            "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            code="invalid_api_key",
        )


async def _json_body(request: Request) -> Any:
    """The request's body parsed as JSON; 413 past ``MAX_BODY_BYTES``, 400 if not JSON."""
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES // 2**20} MiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES // 2**20} MiB")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, f"the request body is not valid JSON: {first_line(e)}") from None


def _jobs(parsed: CompletionRequest, engine: Engine, emit: Any) -> list[Job]:
    """One job per prompt, its prompt tokenized and cut to fit the context: the last
    ``block_size - max_tokens`` tokens (at least one) are kept, so every completion can
    have its ``max_tokens``."""
    settings = SamplingSettings(
        temperature=parsed.temperature,
        top_k=parsed.top_k,
        top_p=parsed.top_p,
        min_p=parsed.min_p,
        repetition_penalty=parsed.repetition_penalty,
    )
    keep = max(1, engine.block_size - parsed.max_tokens)
    jobs = []
    for i, prompt in enumerate(parsed.prompts):
        if isinstance(prompt, str):
            try:
                ids = engine.tokenizer.encode(prompt)
            except DatasetError as e:  # a character outside a character vocabulary
                raise ApiError(400, f"prompt: {e}", "prompt") from None
            if not ids:
                raise ApiError(400, "prompt is empty after tokenization", "prompt")
        else:
            ids = prompt
        job = Job(
            prompt=ids[-keep:],
            max_tokens=parsed.max_tokens,
            settings=settings,
            emit=emit,
            n=parsed.n,
            seed=parsed.seed,
            stops=parsed.stop,
            first_index=i * parsed.n,
        )
        jobs.append(job)
    return jobs


async def _collect(
    parsed: CompletionRequest,
    model: str,
    jobs: list[Job],
    events: asyncio.Queue[Event],
    prompt_tokens: int,
) -> Response:
    """The whole response, once every completion has ended."""
    count = len(jobs) * parsed.n
    texts: list[list[str]] = [[] for _ in range(count)]
    reasons: list[str | None] = [None] * count
    completion_tokens = 0
    while any(r is None for r in reasons):
        event = await events.get()
        if isinstance(event, Failed):
            raise ApiError(500, event.message, kind="server_error")
        if isinstance(event, Text):
            texts[event.index].append(event.text)
        elif isinstance(event, Done):
            reasons[event.index] = event.reason
            completion_tokens += event.completion_tokens
    choices = [choice(i, "".join(texts[i]), reasons[i]) for i in range(count)]
    usage = usage_body(prompt_tokens, completion_tokens)
    return JSONResponse(completion_body(parsed, model, choices, usage))


async def _stream(
    parsed: CompletionRequest,
    model: str,
    jobs: list[Job],
    events: asyncio.Queue[Event],
    prompt_tokens: int,
) -> AsyncIterator[str]:
    """Server-sent events: a chunk per piece of text, one per ended completion (its
    ``finish_reason``), the usage when ``stream_options.include_usage``, then [DONE]."""

    def sse(body: dict[str, Any]) -> str:
        return f"data: {json.dumps(body)}\n\n"

    try:
        pending = len(jobs) * parsed.n
        completion_tokens = 0
        while pending:
            event = await events.get()
            if isinstance(event, Failed):
                yield sse(ApiError(500, event.message, kind="server_error").body())
                break
            if isinstance(event, Text):
                yield sse(
                    completion_body(parsed, model, [choice(event.index, event.text, None)], None)
                )
            elif isinstance(event, Done):
                pending -= 1
                completion_tokens += event.completion_tokens
                chunk = [choice(event.index, "", event.reason)]
                yield sse(completion_body(parsed, model, chunk, None))
        else:
            if parsed.include_usage:
                usage = usage_body(prompt_tokens, completion_tokens)
                yield sse(completion_body(parsed, model, [], usage))
        yield "data: [DONE]\n\n"
    finally:  # the end, or the client went away: the engine drops what is left
        for job in jobs:
            job.cancel()


async def _cancel_on_disconnect(request: Request, jobs: list[Job]) -> None:
    """Wait for the client of a (non-streamed) request to go away, then cancel its jobs."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            for job in jobs:
                job.cancel()
            return
