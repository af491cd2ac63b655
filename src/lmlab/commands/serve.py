"""`lmlab serve`: an OpenAI-compatible HTTP API over a run, with a web chat page at /."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.bounds import MAX_DECODE_STEPS, MAX_PORT, MAX_SLOTS, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import check_device, console
from lmlab.infer import Engine
from lmlab.serve.config import ServeConfig

try:  # the serve extra is optional: `lmlab serve --help` and the flag checks work without it
    import uvicorn

    from lmlab.serve.app import create_app
    from lmlab.serve.limits import server_options

    MISSING_EXTRA: str | None = None
except ImportError as e:
    MISSING_EXTRA = e.name or "fastapi"


@dataclass
class ServeEngineArgs:
    """How `lmlab serve` builds its engine."""

    max_batch: int = 16
    """Engine slots: samples decoded together (continuous batching)."""
    device: str = "cpu"
    """cpu or cuda[:N]."""
    compile: bool = False
    """Compile the decode step (torch.compile; on the CPU also the native attention kernel),
    before serving: a slower start (41-81 s on 2 CPU cores for a 0.9M-parameter run), faster
    decoding."""
    decode_steps: int | None = None
    """Greedy decode steps per compiled call (default: 4 with --compile, else 1). 1 compiles
    in about a third of the time; 4 decodes 9-17% faster (docs/inference.md)."""


@dataclass
class ServeArgs:
    """Serve a run over an OpenAI-compatible HTTP API, with a web chat page at /."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    port: int = 8000
    """TCP port."""
    host: str = "127.0.0.1"
    """Interface to bind (127.0.0.1: this machine only; 0.0.0.0: every interface)."""
    serve: Annotated[ServeConfig, tyro.conf.arg(name="")] = field(default_factory=ServeConfig)
    engine: Annotated[ServeEngineArgs, tyro.conf.arg(name="")] = field(
        default_factory=ServeEngineArgs
    )


def run(argv: list[str]) -> None:
    args = parse(ServeArgs, argv, "lmlab serve")
    if MISSING_EXTRA is not None:
        raise ValueError(
            f"lmlab serve needs the serve extra ({MISSING_EXTRA} is missing): "
            "pip install 'lmlab[serve]'"
        )
    eng = args.engine
    check_count("--max-batch", eng.max_batch, MAX_SLOTS)
    check_count("--port", args.port, MAX_PORT, low=0)
    if eng.decode_steps is not None:
        check_count("--decode-steps", eng.decode_steps, MAX_DECODE_STEPS)
    check_device(eng.device)
    cfg = dataclasses.replace(
        args.serve,
        name=args.serve.name or args.run.resolve().name,
        api_key=args.serve.api_key or os.environ.get("LMLAB_API_KEY") or None,
    )
    cfg.validate()
    engine = Engine.from_checkpoint(
        args.run,
        eng.device,
        max_batch=eng.max_batch,
        compile=eng.compile,
        decode_steps=eng.decode_steps,
    )
    if eng.compile:
        with console.status("compiling the decode step"):
            engine.warm_up()
    url = f"http://{args.host}:{args.port}"
    key = " (API key required)" if cfg.api_key else ""
    console.print(f"serving {args.run} as model {cfg.name!r}: chat page {url}/, API {url}/v1{key}")
    app = create_app(engine, cfg)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", **server_options())
