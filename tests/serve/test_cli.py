"""`lmlab serve`: the command starts a server on 127.0.0.1 and rejects bad flags in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from lmlab.cli import main  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "compile_", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"]
)
def test_lmlab_serve_command(tiny_run: Path, compile_: bool) -> None:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LMLAB_API_KEY": ""}
    cmd = [
        sys.executable,
        "-m",
        "lmlab",
        "serve",
        str(tiny_run),
        "--port",
        str(port),
        "--name",
        "tiny",
        "--max-batch",
        "4",
        *(["--compile"] if compile_ else []),
    ]
    wait_s = 180 if compile_ else 30  # compiling (and warming up) comes before serving
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(wait_s * 10):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"lmlab serve did not answer /health within {wait_s} s")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        r = httpx.post(
            url + "/v1/completions",
            json={"model": "tiny", "prompt": "x", "max_tokens": 3, "temperature": 0},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_lmlab_serve_bad_flags(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tiny_run), "--max-batch", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --max-batch must be in [1, 1024], got 0"
    assert main(["serve", str(tiny_run), "--decode-steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --decode-steps must be in [1, 64], got 0"
    assert main(["serve", str(tiny_run), "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "error: --port must be in [0, 65535], got 70000"
    assert main(["serve", str(tiny_run), "--max-queue", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max-queue must be >= 0, got -1"
    assert main(["serve", str(tiny_run), "--timeout", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --timeout must be > 0, got 0.0"
    assert main(["serve", str(tiny_run.parent / "missing")]) == 2
