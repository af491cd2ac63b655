"""Serving throughput and latency: concurrent clients (continuous batching) vs one at a time.

One `lmlab serve` process (random weights of the `small-bpe` preset shape, float32, 16 slots) and
one client process. The same set of requests (different prompts, greedy, `ignore_eos` so each
generates exactly `--max-tokens` tokens) is sent by 1, 4 and 16 concurrent clients over HTTP
(`/v1/completions`); each level reports

- total tokens/s = generated tokens / wall time of the whole set,
- p50 / p99 latency of a request (send to full response),

and the batching gain = tokens/s at 16 clients / tokens/s at 1 client (the same requests
served one at a time by the same server).

    python benchmarks/serve.py [--threads 1] [--requests 48] [--max-tokens 64] [--quick]

The last line printed is one JSON object (tokens_per_s_c1, tokens_per_s_c16, batching_gain_c16,
p99_ms_c16, plus the per-level figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from lmlab.config import RunConfig, TrainConfig, preset
from lmlab.data.tokenizer import SPECIAL_TOKENS, char_tokenizer
from lmlab.model.transformer import Transformer, param_counts
from lmlab.train.checkpoint import save_checkpoint


def make_run(path: Path, preset_name: str) -> int:
    """A run directory with random weights; returns the parameter count."""
    cfg = preset(preset_name).model
    # A character vocabulary exactly as large as the model's, ASCII first (prompts are text).
    extra = cfg.vocab_size - len(SPECIAL_TOKENS) - 256
    chars = [chr(c) for c in range(32, 127)] + [chr(0x100 + i) for i in range(extra - 95)]
    tok = char_tokenizer(chars)
    assert tok.vocab_size == cfg.vocab_size
    torch.manual_seed(0)
    model = Transformer(cfg)
    RunConfig(model=cfg, train=TrainConfig(max_steps=1)).save(path / "config.json")
    tok.save(path / "tokenizer.json")
    save_checkpoint(path, model, None, {"step": 0, "tokens": 0})
    return param_counts(cfg)["total"]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


async def run_level(url: str, bodies: list[dict], clients: int) -> dict[str, float]:
    """Send `bodies` with `clients` concurrent clients; each takes the next unsent request."""
    todo = list(reversed(bodies))
    latencies: list[float] = []
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while todo:
            body = todo.pop()
            t = time.perf_counter()
            r = await http.post("/v1/completions", json=body)
            latencies.append(time.perf_counter() - t)
            r.raise_for_status()
            tokens += r.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {
        "tokens_per_s": tokens / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 99),
        "wall_s": wall,
        "tokens": tokens,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--preset", default="small-bpe", help="model shape (random weights)")
    ap.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
    ap.add_argument("--quick", action="store_true", help="16 requests of 16 tokens (smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.max_tokens = 16, 16
    bodies = [
        {
            "model": "bench",
            "prompt": f"def f{i}(x):\n    return x * {i} +",
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        for i in range(args.requests)
    ]
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "bench"
        run.mkdir()
        n_params = make_run(run, args.preset)
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "LMLAB_API_KEY": ""}
        cmd = [
            sys.executable,
            "-m",
            "lmlab",
            "serve",
            str(run),
            "--port",
            str(port),
            "--max-batch",
            "16",
            "--max-tokens",
            str(args.max_tokens),
            "--name",
            "bench",
        ]
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):  # bounded: 60 s to start
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
                if server.poll() is not None:
                    raise SystemExit(server.stderr.read().decode() if server.stderr else "died")
            else:
                raise SystemExit("the server did not start within 60 s")
            asyncio.run(run_level(url, bodies[:4], 4))  # warm-up
            print(
                f"lmlab serve: {args.preset} shape ({n_params / 1e6:.1f}M params, random "
                f"weights), {args.threads} server thread(s); {args.requests} requests x "
                f"{args.max_tokens} tokens per level"
            )
            results: dict[str, float] = {}
            for c in (1, 4, 16):
                r = asyncio.run(run_level(url, bodies, c))
                print(
                    f"clients {c:2d}: {r['tokens_per_s']:8.1f} tok/s   p50 {r['p50_ms']:8.1f} ms"
                    f"   p99 {r['p99_ms']:8.1f} ms   ({r['tokens']} tokens in {r['wall_s']:.1f} s)"
                )
                for k in ("tokens_per_s", "p50_ms", "p99_ms"):
                    results[f"{k}_c{c}"] = round(r[k], 2)
        finally:
            server.terminate()
            server.wait(timeout=30)
    for c in (4, 16):
        results[f"batching_gain_c{c}"] = round(
            results[f"tokens_per_s_c{c}"] / results["tokens_per_s_c1"], 3
        )
    print(
        f"batching gain: {results['batching_gain_c4']:.2f}x at 4 clients, "
        f"{results['batching_gain_c16']:.2f}x at 16 clients (vs one at a time)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
