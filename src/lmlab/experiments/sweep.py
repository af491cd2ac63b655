"""Training a scaling sweep: every planned run is an ordinary pretraining run in
SWEEP/runs/NAME.

Runs execute in parallel worker processes and the runner is resumable: a finished run (its
checkpoint at its last step) is skipped, an interrupted one continues from its latest checkpoint
(`pretrain(resume=True)`, exact on CPU), and a run killed before its first checkpoint starts
over. After every run the results are rewritten (`lmlab.scaling.results`). One runner works on
a sweep at a time (it holds SWEEP/.lock); run names come from plan.json and are refused unless
each is one plain folder under SWEEP/runs (`lmlab.scaling.plan.load_plan`).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from lmlab.config import RunConfig
from lmlab.data.corpora import load_corpus
from lmlab.data.shards import build_shards, get_tokenizer
from lmlab.runs import lock_dir
from lmlab.scaling.fit import ScalingError
from lmlab.scaling.plan import load_plan
from lmlab.scaling.results import run_dir, run_status, write_results
from lmlab.train.pretrain import pretrain


def _train_one(sweep: str, run: dict[str, Any], resume: bool, threads: int) -> dict[str, Any]:
    """Worker: one pretraining run, its console output going to SWEEP/logs/NAME.log."""
    import torch

    torch.set_num_threads(threads)
    out = run_dir(Path(sweep), run["name"])
    log = Path(sweep) / "logs" / f"{run['name']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("a") as f, contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
        if resume:
            pretrain(None, out, resume=True, show_progress=False, max_steps=run["steps"])
        else:
            pretrain(RunConfig.from_dict(run["config"]), out, show_progress=False)
    wall = time.perf_counter() - t0
    timing = out / "scaling.json"
    before = json.loads(timing.read_text())["wall_s"] if timing.is_file() else 0.0
    timing.write_text(json.dumps({"wall_s": before + wall}) + "\n")
    return {"name": run["name"], "wall_s": before + wall}


def prepare_corpus(plan: dict[str, Any]) -> None:
    """Check the corpus is the one planned and build its tokenizer and shards once, before any
    worker starts (workers then read the cache)."""

    cfg = RunConfig.from_dict(plan["runs"][0]["config"])
    corpus = load_corpus(cfg.data.corpus, cfg.data.val_fraction, cfg.data.text_field)
    if plan.get("fingerprint") and corpus.fingerprint != plan["fingerprint"]:
        raise ScalingError(
            f"corpus {plan['corpus']!r} has changed since the sweep was planned (fingerprint "
            f"{corpus.fingerprint[:12]} != {plan['fingerprint'][:12]}); plan a new sweep"
        )
    build_shards(corpus, get_tokenizer(cfg, corpus), show_progress=False)


def run_sweep(
    sweep: Path,
    workers: int = 1,
    threads: int | None = None,
    report: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every unfinished run of the sweep; returns the collected results.

    Each worker uses `threads` torch threads (default 1): small models gain little from more,
    and on a busy machine extra threads spin against each other (measured 10-25x slower
    steps with 2 threads than with 1 on a shared 2-core machine); parallelise with `workers`.
    """
    if workers < 1:
        raise ScalingError(f"--workers must be >= 1, got {workers}")
    load_plan(sweep)  # a sweep, with safe run names, before anything is locked or written
    with lock_dir(sweep):  # one runner per sweep: a second would delete the first's new runs
        return _run_sweep(sweep, workers, threads or 1, report)


def _run_sweep(
    sweep: Path, workers: int, threads: int, report: Callable[[str], None]
) -> list[dict[str, Any]]:
    plan = load_plan(sweep)
    status = {r["name"]: run_status(sweep, r, plan["corpus"]) for r in plan["runs"]}
    todo = [r for r in plan["runs"] if status[r["name"]] != "done"]
    n_done = len(plan["runs"]) - len(todo)
    report(
        f"sweep {sweep}: {len(plan['runs'])} runs, {n_done} finished, "
        f"{sum(s == 'partial' for s in status.values())} to resume, "
        f"{sum(s in ('todo', 'broken') for s in status.values())} to start"
    )
    if not todo:
        return write_results(sweep)
    prepare_corpus(plan)
    for r in todo:
        if status[r["name"]] == "broken":  # killed before its first checkpoint: nothing to keep
            shutil.rmtree(run_dir(sweep, r["name"]))
    t0 = time.perf_counter()
    predicted = {r["name"]: r["predicted_loss"] for r in plan["runs"] if "predicted_loss" in r}

    def finished(result: dict[str, Any]) -> None:
        nonlocal n_done
        n_done += 1
        rows = {r["run"]: r for r in write_results(sweep)}
        row = rows.get(result["name"], {})
        loss = row.get("loss", float("nan"))
        pred = predicted.get(result["name"])
        vs = f" (predicted {pred:.4f}, error {loss / pred - 1:+.2%})" if pred else ""
        report(
            f"[{n_done}/{len(plan['runs'])}] {result['name']}  N={row.get('params', 0):,}  "
            f"D={row.get('tokens', 0):,}  val {loss:.4f}{vs}  "
            f"{result['wall_s']:.0f}s  (sweep {time.perf_counter() - t0:.0f}s)"
        )

    if workers == 1:
        import torch

        before = torch.get_num_threads()
        try:
            for r in todo:
                finished(_train_one(str(sweep), r, status[r["name"]] == "partial", threads))
        finally:
            torch.set_num_threads(before)  # the caller's process keeps its own setting
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures: set[Future[dict[str, Any]]] = {
                pool.submit(_train_one, str(sweep), r, status[r["name"]] == "partial", threads)
                for r in todo
            }
            while futures:
                done, futures = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    finished(fut.result())
    return write_results(sweep)
