"""`GET /metrics` (Prometheus text, see `serve/metrics.py`) and `GET /version`: for the people
and tools that run the server, never behind the API key."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import torch
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from lmlab.serve import schemas as S
from lmlab.serve.metrics import Metrics


def lmlab_version() -> str:
    """The installed lmlab's version ("unknown" when run from a source tree not installed)."""
    try:
        return version("lmlab")
    except PackageNotFoundError:
        return "unknown"


def router(metrics: Metrics) -> APIRouter:
    routes = APIRouter()

    @routes.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def scrape() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @routes.get("/version", response_model=S.Version)
    async def server_version() -> S.Version:
        return S.Version(
            version=lmlab_version(), torch=torch.__version__, python=platform.python_version()
        )

    return routes
