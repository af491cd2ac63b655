"""Shared fixtures: an isolated cache, a small text corpus and a tiny run directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from lmlab.config import ModelConfig, RunConfig, TrainConfig
from lmlab.data import world
from lmlab.data.tokenizer import char_tokenizer
from lmlab.experiments.sweep import run_sweep
from lmlab.model.transformer import Transformer
from lmlab.scaling.config import PlanConfig
from lmlab.scaling.plan import make_plan, resolve_corpus, write_plan
from lmlab.train.checkpoint import save_checkpoint

CORPUS_TEXT = "".join(
    f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n# line {i}: the quick brown fox\n"
    for i in range(400)
)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test session gets its own tokenizer/shard cache (never ~/.cache)."""
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(CORPUS_TEXT)
    return path


def tiny_model_config(**kw: object) -> ModelConfig:
    base = dict(vocab_size=128, context_length=64, n_layer=2, n_head=4, d_model=32)
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding a randomly initialised tiny model with a char tokenizer."""
    run = tmp_path_factory.mktemp("tiny_run")
    tok = char_tokenizer([CORPUS_TEXT])
    cfg = RunConfig(
        model=tiny_model_config(vocab_size=-(-tok.vocab_size // 64) * 64, n_kv_head=2),
        train=TrainConfig(max_steps=1),
    )
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    cfg.save(run / "config.json")
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, model, None, {"step": 0, "tokens": 0})
    return run


@pytest.fixture(scope="session")
def chat_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny model whose char tokenizer covers world text, context 256."""
    run = tmp_path_factory.mktemp("chat_run")
    texts = [CORPUS_TEXT] + [p.trace + p.question for p in world.mixed(300, seed=1)]
    tok = char_tokenizer(texts)
    cfg = RunConfig(
        model=tiny_model_config(vocab_size=-(-tok.vocab_size // 64) * 64, context_length=256),
        train=TrainConfig(max_steps=1),
    )
    torch.manual_seed(0)
    cfg.save(run / "config.json")
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, Transformer(cfg.model), None, {"step": 0, "tokens": 0})
    return run


@pytest.fixture(scope="session")
def prefs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pairs where the right, short answer is chosen over a rambling wrong one."""
    path = tmp_path_factory.mktemp("prefs") / "prefs.jsonl"
    rows = []
    for i in range(40):
        q = f"What is {i} + {i + 1}?"
        rows.append(
            {
                "prompt": q,
                "chosen": f"Answer: {2 * i + 1}",
                "rejected": f"I think it is {i} or so, maybe {i + 7}, hard to say",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


TRL_PREFERENCE_FORMATS = ("standard", "standard-implicit", "conversational", "conv-implicit")


def trl_preference_row(fmt: str, i: int = 0) -> dict[str, Any]:
    """A preference row in TRL's format `fmt`, shaped as its documented example (the sky is
    blue, not green); `i` > 0 moves the question to day `i`, so that rows differ."""
    subject = "the sky" if i == 0 else f"the sky on day {i}"
    text, question = subject[0].upper() + subject[1:] + " is", f"What color is {subject}?"
    user = {"role": "user", "content": question}
    blue = {"role": "assistant", "content": "It is blue."}
    green = {"role": "assistant", "content": "It is green."}
    rows: dict[str, dict[str, Any]] = {
        "standard": {"prompt": text, "chosen": " blue.", "rejected": " green."},
        "standard-implicit": {"chosen": f"{text} blue.", "rejected": f"{text} green."},
        "conversational": {"prompt": [user], "chosen": [blue], "rejected": [green]},
        "conv-implicit": {"chosen": [user, blue], "rejected": [user, green]},
    }
    return rows[fmt]


def user_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI expecting a user error: exit code 2 and one `error: ...` line, no traceback."""
    from lmlab.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of tiny-model tests: tiny matmuls run far slower with 2
    threads on a CPU shared with other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


KILL_SCRIPT = """
import importlib, os, signal, sys
module, name, nth = importlib.import_module(sys.argv[1]), sys.argv[2], int(sys.argv[3])
real, calls = getattr(module, name), [0]
def killing(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(module, name, killing)
exec(sys.argv[4])
"""


def run_killed(module: str, function: str, nth: int, code: str) -> None:
    """Run `code` in a fresh Python process that is SIGKILLed (no clean-up of any kind) on the
    `nth` call of `module.function`; assert that the kill happened. The process gets this one's
    torch thread count: a float reduction's order, and so its last bits, follow the threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, module, function, str(nth), code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A real headless Chromium (Debian's chromium + chromium-driver) driven by selenium."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# --- scaling: a tiny plan config and one tiny finished sweep shared by the tests -----------


def tiny_plan_config(corpus: Path, **kw: object) -> PlanConfig:
    base: dict[str, object] = dict(
        corpus=str(corpus),
        tokenizer="char",
        context_length=32,
        head_dim=8,
        aspect=16,
        batch_size=2,
        min_steps=2,
        evals=2,
        eval_iters=1,
        probe_steps=0,
        sizes=3,
        budgets="3e7,1e8",
    )
    base.update(kw)
    return PlanConfig(**base)  # type: ignore[arg-type]


def plan_tiny_sweep(corpus: Path, out: Path, **kw: object) -> dict[str, Any]:
    cfg = tiny_plan_config(corpus, **kw)
    plan = make_plan(cfg, resolve_corpus(cfg))
    write_plan(plan, out)
    return plan


@pytest.fixture(scope="session")
def tiny_sweep(corpus_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 budgets x 3 sizes, 2-30 optimizer steps of 64 tokens per run, run to the end.
    Tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    plan = plan_tiny_sweep(corpus_file, out, budgets="2e7,4e7")
    assert max(r["steps"] for r in plan["runs"]) <= 30
    lines: list[str] = []
    rows = run_sweep(out, workers=1, report=lines.append)
    assert len(rows) == 6 and lines[-1].startswith("[6/6]")
    return out
