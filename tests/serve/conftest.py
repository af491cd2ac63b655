"""Live-server fixtures: the app under uvicorn on a free 127.0.0.1 port in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from lmlab.infer import Engine  # noqa: E402
from lmlab.serve.app import FastAPI, create_app  # noqa: E402
from lmlab.serve.config import ServeConfig  # noqa: E402


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) until the block ends; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):  # bounded: 10 s
        if server.started:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("uvicorn did not start within 10 s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def make_server(run: Path, **cfg: object) -> tuple[FastAPI, Engine]:
    max_batch = int(cfg.pop("max_batch", 16))  # type: ignore[call-overload]
    engine = Engine.from_checkpoint(run, max_batch=max_batch)
    serve = ServeConfig(name="tiny", **cfg)  # type: ignore[arg-type]
    return create_app(engine, serve), engine


@pytest.fixture(scope="module")
def server(tiny_run: Path) -> Iterator[str]:
    """A shared server over the tiny run: model id "tiny", 16 slots, 32 tokens a request."""
    app, _ = make_server(tiny_run, max_batch=16, max_queue=256, max_tokens=32)
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def reference(tiny_run: Path) -> Engine:
    """The engine used directly, for the expected (greedy) outputs."""
    return Engine.from_checkpoint(tiny_run, max_batch=16)
