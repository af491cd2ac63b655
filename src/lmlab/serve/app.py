"""The OpenAI-compatible server: the FastAPI app over one engine thread, and the chat page.

Endpoints: `/v1/models`, `/v1/completions`, `/v1/chat/completions` (JSON, or server-sent
events in OpenAI's chunk format ending with `data: [DONE]` when `stream` is true), vLLM's
`/tokenize`, `/detokenize` and `/tokenizer_info`, and the open `/health`, `/metrics`
(Prometheus), `/version` and the chat page at `/`. Every request becomes a job of the
`EngineWorker`, so all requests share the one engine's running batch (continuous batching).

Reasoning: a request may name a strategy in its body (`"reasoning": {"strategy": "sc", "k": 8}`)
or in the model name (`sft:sc@8`); see `serve/generation.py`.

Limits: at most `max_batch + max_queue` requests are held at once (then 429), `max_tokens` per
request, `timeout` seconds per request (then 504); a streaming client that disconnects has its
generation cancelled and its slots freed before the next engine step. Request bodies, slow
clients and overlong text are limited before anything is tokenized (`serve/limits.py`). With
`api_key` set, `/v1/*` needs `Authorization: Bearer KEY`. Every error is OpenAI's JSON shape
`{"error": {"message", "type", "param", "code"}}`.

Where things are: `params.py` turns a request into engine inputs, `generation.py` is the one
path of a generating request, `stream.py` the streams and the timeout, `routes/` one module per
endpoint family, `errors.py` the error answers.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from lmlab.infer.engine import Engine
from lmlab.serve.config import ServeConfig
from lmlab.serve.errors import ERRORS, APIError, install_handlers
from lmlab.serve.generation import Service
from lmlab.serve.limits import BodyLimit
from lmlab.serve.metrics import Metrics, MetricsMiddleware
from lmlab.serve.routes import chat, completions, models, ops, tokens
from lmlab.serve.worker import EngineWorker


def create_app(engine: Engine, cfg: ServeConfig | None = None) -> FastAPI:
    """The server app over `engine` (its engine thread starts and stops with the app); a bad
    `cfg` is a one-line ValueError."""
    cfg = cfg or ServeConfig()
    cfg.validate()
    worker = EngineWorker(engine)
    service = Service(cfg, worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        worker.stop()

    app = FastAPI(
        title="lmlab",
        version="0.1.0",
        summary="OpenAI-compatible API over an lmlab model (continuous batching, reasoning).",
        lifespan=lifespan,
    )
    app.state.engine, app.state.worker, app.state.serve = engine, worker, service
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The schema without FastAPI's default 422 answers (bad input gets 400 here)."""
        if app.openapi_schema is None:
            for ops in base_openapi()["paths"].values():
                for op in ops.values():
                    op.get("responses", {}).pop("422", None)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Inside _JSONBody, which copies the scope of /v1 POSTs: the router records its route in
    # the copy that MetricsMiddleware reads.
    metrics = Metrics(service)
    app.add_middleware(MetricsMiddleware, metrics=metrics, paths=lambda: app.openapi()["paths"])
    app.add_middleware(_JSONBody)
    app.add_middleware(BodyLimit)  # outermost: an oversized or slow body never reaches the app
    install_handlers(app)

    bearer = HTTPBearer(auto_error=False)

    async def check_key(
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        if cfg.api_key is None:
            return
        if creds is None or not hmac.compare_digest(creds.credentials, cfg.api_key):
            raise APIError(
                401,
                "missing or invalid API key; send 'Authorization: Bearer KEY'",
                code="invalid_api_key",
            )

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_key)], responses=ERRORS)
    for family in (models, chat, completions):
        v1.include_router(family.router(service))
    app.include_router(v1)
    app.include_router(tokens.router(service), dependencies=[Depends(check_key)], responses=ERRORS)
    app.include_router(models.open_router(service))
    app.include_router(ops.router(metrics))
    return app


JSON_POSTS = ("/v1/", "/tokenize", "/detokenize")
"""Paths (prefixes) whose POST bodies are JSON whatever their content type."""


class _JSONBody:
    """Read the API's POST bodies as JSON whatever their content type (`curl -d` sends a form
    type; OpenAI's API reads JSON regardless)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].startswith(JSON_POSTS)
        ):
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)
