"""Tests for lmlab.train.loop: schedules, exact resume after a kill, accumulation, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmlab.config import DataConfig, RunConfig, TrainConfig
from lmlab.runs import RunDirError
from lmlab.train.loop import lr_at
from lmlab.train.pretrain import pretrain
from tests.conftest import run_killed, tiny_model_config

ROOT = Path(__file__).resolve().parents[2]


def _cfg(corpus: Path, **train: object) -> RunConfig:
    t = dict(
        batch_size=4,
        max_steps=20,
        eval_every=5,
        eval_iters=2,
        ckpt_every=10,
        log_every=1,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=3,
        seed=7,
    )
    t.update(train)
    return RunConfig(
        model=tiny_model_config(context_length=32),
        train=TrainConfig(**t),  # type: ignore[arg-type]
        data=DataConfig(corpus=str(corpus), tokenizer="char", val_fraction=0.1),
    )


def _losses(run: Path) -> list[tuple[int, float, float | None]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r.get("val_loss")) for r in rows]


def test_lr_schedules() -> None:
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    wsd = TrainConfig(
        lr=1.0, min_lr=0.0, warmup_steps=10, max_steps=110, schedule="wsd", decay_frac=0.2
    )
    assert lr_at(50, wsd) == 1.0
    assert lr_at(99, wsd) == pytest.approx(1 - 11 / 22)
    assert lr_at(110, wsd) == pytest.approx(0.0)


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from lmlab.config import RunConfig
import lmlab.train.pretrain as P

real, calls = P.next_token_loss, [0]
def loss(model, batch):
    calls[0] += 1
    if calls[0] == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(model, batch)
P.next_token_loss = loss
P.pretrain(RunConfig.load(Path(sys.argv[1])), Path(sys.argv[2]), show_progress=False)
"""


def test_resume_after_kill_is_exact(corpus_file: Path, tmp_path: Path) -> None:
    """20 uninterrupted steps == 10 steps, SIGKILL mid-run, --resume, the rest (CPU, exact)."""
    cfg = _cfg(corpus_file)
    pretrain(cfg, tmp_path / "straight", show_progress=False)

    cfg.save(tmp_path / "cfg.json")
    # objective calls: 1 per step + 2 per eval (steps 5, 10) -> call 17 is inside step 13,
    # after the step-10 checkpoint and after metrics for steps 11 and 12 were written.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_SCRIPT,
            str(tmp_path / "cfg.json"),
            str(tmp_path / "killed"),
            "17",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == -9, proc.stderr
    assert _losses(tmp_path / "killed")[-1][0] == 12
    pretrain(None, tmp_path / "killed", resume=True, show_progress=False)
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "straight")


def test_grad_accumulation_matches_big_batch(corpus_file: Path, tmp_path: Path) -> None:
    pretrain(_cfg(corpus_file, max_steps=4), tmp_path / "big", show_progress=False)
    pretrain(
        _cfg(corpus_file, max_steps=4, batch_size=2, grad_accum=2),
        tmp_path / "acc",
        show_progress=False,
    )
    for a, b in zip(_losses(tmp_path / "big"), _losses(tmp_path / "acc"), strict=True):
        assert a[1] == pytest.approx(b[1], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one(parallel: str, corpus_file: Path, tmp_path: Path) -> None:
    """2 processes x batch 2 == 1 process x batch 4 (same global batch), for DDP and FSDP2;
    fp32 all-reduce ordering differs, so losses agree to a relative 1e-5, not bit for bit.
    The 2-process run's checkpoint then resumes in a single process."""
    common = [
        "--corpus",
        str(corpus_file),
        "--tokenizer",
        "char",
        "--val-fraction",
        "0.1",
        "--model.n-layer",
        "2",
        "--model.d-model",
        "32",
        "--model.context-length",
        "32",
        "--train.max-steps",
        "6",
        "--train.eval-every",
        "3",
        "--train.eval-iters",
        "2",
        "--train.log-every",
        "1",
        "--train.seed",
        "7",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmlab",
            "pretrain",
            *common,
            "--train.batch-size",
            "4",
            "--out",
            str(tmp_path / "one"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "lmlab",
            "pretrain",
            *common,
            "--train.batch-size",
            "2",
            "--train.parallel",
            parallel,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert two.returncode == 0, two.stderr
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [r[0] for r in a] == [r[0] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra[1] == pytest.approx(rb[1], rel=1e-5)
        assert (ra[2] is None) == (rb[2] is None)
        if ra[2] is not None:
            assert ra[2] == pytest.approx(rb[2], rel=1e-5)
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmlab",
            "pretrain",
            "--resume",
            str(tmp_path / "two"),
            "--train.max-steps",
            "7",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _losses(tmp_path / "two")[-1][0] == 7


def test_run_killed_before_its_first_checkpoint_resumes_from_step_0(
    corpus_file: Path, tmp_path: Path
) -> None:
    """A kill inside step 3 of a run whose first checkpoint is at step 10 leaves config,
    tokenizer, stage.json and metrics rows but no checkpoint: --resume starts at step 0 and
    ends as the uninterrupted run does (no duplicated metrics rows)."""
    cfg = _cfg(corpus_file, max_steps=12)
    pretrain(cfg, tmp_path / "straight", show_progress=False)
    cfg.save(tmp_path / "cfg.json")
    code = (
        "from pathlib import Path; from lmlab.config import RunConfig;"
        "from lmlab.train.pretrain import pretrain;"
        f"pretrain(RunConfig.load(Path({str(tmp_path / 'cfg.json')!r})), "
        f"Path({str(tmp_path / 'killed')!r}), show_progress=False)"
    )
    run_killed("lmlab.train.pretrain", "next_token_loss", 3, code)
    killed = tmp_path / "killed"
    assert not (killed / "checkpoints").exists() and _losses(killed)[-1][0] == 2
    pretrain(None, killed, resume=True, show_progress=False)
    assert _losses(killed) == _losses(tmp_path / "straight")


def test_resume_refuses_a_changed_corpus(corpus_file: Path, tmp_path: Path) -> None:
    """The run's tokenizer and data order belong to the corpus it started on."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_file.read_text())
    pretrain(_cfg(corpus, max_steps=2, eval_every=2), tmp_path / "run", show_progress=False)
    tokenizer_before = (tmp_path / "run" / "tokenizer.json").read_text()
    corpus.write_text(corpus.read_text() + "\nsomething new\n")
    with pytest.raises(RunDirError, match="changed since"):
        pretrain(None, tmp_path / "run", resume=True, show_progress=False, max_steps=4)
    assert (tmp_path / "run" / "tokenizer.json").read_text() == tokenizer_before
