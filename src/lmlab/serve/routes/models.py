"""`GET /v1/models`, `GET /v1/models/{model}` (the served model, with any strategy suffix), and
the open `GET /health` and chat page `GET /`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from lmlab.serve import schemas as S
from lmlab.serve.generation import Service
from lmlab.serve.params import STRATEGIES, strategy_of

STATIC = Path(__file__).parents[1] / "static"


def router(service: Service) -> APIRouter:
    """The model list (mounted under /v1)."""
    routes = APIRouter()

    @routes.get("/models", response_model=S.ModelList)
    async def list_models() -> S.ModelList:
        return S.ModelList(data=[S.Model(id=service.name, created=service.created)])

    @routes.get("/models/{model}", response_model=S.Model)
    async def get_model(model: str) -> S.Model:
        strategy_of(model, None, service.name)
        return S.Model(id=model, created=service.created)

    return routes


def open_router(service: Service) -> APIRouter:
    """Health and the chat page: never behind the API key."""
    routes = APIRouter()

    @routes.get("/health", response_model=S.Health)
    async def health() -> S.Health:
        worker = service.worker
        return S.Health(
            model=service.name,
            strategies=STRATEGIES,
            max_batch=service.engine.max_batch,
            running=worker.running(),
            waiting=worker.waiting(),
            pending=service.pending,
            max_pending=service.max_pending,
            steps=worker.steps,
            tokens=worker.tokens,
        )

    @routes.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return routes
