"""Tests for lmlab.train.loop: schedules, exact resume after a kill, accumulation, DDP, and the
MoE selection bias moving once per optimiser step on the global load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import Tensor

from lmlab.config import DataConfig, ModelConfig, MoEConfig, RunConfig, TrainConfig
from lmlab.model.load import load_run
from lmlab.model.moe import moe_layers
from lmlab.model.transformer import Transformer
from lmlab.runs import RunDirError
from lmlab.train.loop import Dist, Trainer, lr_at
from lmlab.train.pretrain import next_token_loss, pretrain
from tests.conftest import run_killed, tiny_model_config

ROOT = Path(__file__).resolve().parents[2]


def _cfg(corpus: Path, model: ModelConfig | None = None, **train: object) -> RunConfig:
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
        model=model or tiny_model_config(context_length=32),
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


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_resume_after_kill_is_exact(moe: bool, corpus_file: Path, tmp_path: Path) -> None:
    """20 uninterrupted steps == 10 steps, SIGKILL mid-run, --resume, the rest (CPU, exact);
    for an MoE model the selection bias, saved with the weights, ends the same too."""
    model = tiny_model_config(context_length=32)
    if moe:
        model.moe = MoEConfig(n_experts=4, top_k=2, bias_speed=0.01)
    cfg = _cfg(corpus_file, model)
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
    if moe:
        straight, killed = (load_run(tmp_path / r)[0] for r in ("straight", "killed"))
        assert _biases(straight).abs().sum() > 0
        assert torch.equal(_biases(killed), _biases(straight))


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


# --- the MoE auxiliary-loss-free bias: once per optimiser step, on the global load ------------

BIAS_SPEED, MOE_STEPS = 0.01, 4


def _moe_trainer(run: Path, dist_info: Dist | None = None, parallel: str = "ddp") -> Trainer:
    """A tiny MoE transformer (same init wherever it is built) under a fresh Trainer."""
    torch.manual_seed(0)
    moe = MoEConfig(n_experts=4, top_k=2, aux_loss=0.0, bias_speed=BIAS_SPEED)
    model = Transformer(tiny_model_config(context_length=16, moe=moe))
    train = TrainConfig(max_steps=MOE_STEPS, warmup_steps=1, parallel=parallel)  # type: ignore[arg-type]
    return Trainer(model, train, run, dist_info or Dist(), torch.device("cpu"), False)


def _moe_batch(step: int) -> tuple[Tensor, Tensor]:
    """Step `step`'s global batch: 8 rows of random tokens (inputs, next-token targets)."""
    ids = torch.randint(0, 128, (8, 17), generator=torch.Generator().manual_seed(step))
    return ids[:, :-1], ids[:, 1:]


def _biases(model: torch.nn.Module) -> Tensor:
    return torch.stack([m.expert_bias.clone() for m in moe_layers(model)])


def test_moe_bias_moves_once_per_step_grad_accum_4_equals_1(tmp_path: Path) -> None:
    """The same tokens as one batch or as 4 micro-batches: the bias follows the same
    trajectory (it moves once per optimiser step, from the step's whole load), and evaluation
    between steps adds nothing to the load."""
    one, four = _moe_trainer(tmp_path / "one"), _moe_trainer(tmp_path / "four")
    before = _biases(one.model)
    for step in range(MOE_STEPS):
        x, y = _moe_batch(step)
        one.step(next_token_loss, [(x, y)])
        four.step(next_token_loss, zip(x.chunk(4), y.chunk(4), strict=True))
        four.evaluate(next_token_loss, [_moe_batch(100 + step)])
        want = _biases(one.model)
        torch.testing.assert_close(_biases(four.model), want)
        # one move per step: every expert's bias moved by -speed, 0 or +speed, some by speed
        torch.testing.assert_close((want - before).abs().max(), torch.tensor(BIAS_SPEED))
        before = want


def test_moe_training_forward_outside_a_step_leaves_the_bias_alone(tmp_path: Path) -> None:
    """A training-mode forward with gradients that no optimiser step follows (a probe, a stray
    call) neither moves the bias nor leaks its load into the next step."""
    clean, probed = _moe_trainer(tmp_path / "clean"), _moe_trainer(tmp_path / "probed")
    probe = torch.full((32, 16), 5)  # routed to a few experts: a load that would flip signs
    for step in range(2):
        probed.model.train()(probe)
        if step == 0:
            assert (_biases(probed.model) == 0).all()
        clean.step(next_token_loss, [_moe_batch(step)])
        probed.step(next_token_loss, [_moe_batch(step)])
        torch.testing.assert_close(_biases(probed.model), _biases(clean.model), atol=0, rtol=0)


def _two_rank_worker(rank: int, init_method: str, parallel: str, out: str) -> None:
    """One of two gloo ranks: each step, this rank's half of the global batch as 2
    micro-batches; saves the bias after every step."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=2)
    try:
        trainer = _moe_trainer(Path(out), Dist(rank, 2, rank), parallel)
        biases = []
        for step in range(MOE_STEPS):
            x, y = (t[4 * rank : 4 * rank + 4] for t in _moe_batch(step))
            trainer.step(next_token_loss, zip(x.chunk(2), y.chunk(2), strict=True))
            biases.append(_biases(trainer.model))
        torch.save(torch.stack(biases), Path(out) / f"bias_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_moe_bias_follows_the_global_load_on_two_gloo_ranks(parallel: str, tmp_path: Path) -> None:
    """2 gloo processes, different rows each: both ranks keep the same bias after every step,
    the one a single process computes from the union of their rows."""
    torch.multiprocessing.spawn(
        _two_rank_worker,
        args=(f"file://{tmp_path / 'rendezvous'}", parallel, str(tmp_path)),
        nprocs=2,
    )
    rank0, rank1 = (torch.load(tmp_path / f"bias_{r}.pt") for r in range(2))
    assert torch.equal(rank0, rank1)
    union, local = _moe_trainer(tmp_path / "union"), _moe_trainer(tmp_path / "local")
    want, rank0_alone = [], []
    for step in range(MOE_STEPS):
        x, y = _moe_batch(step)
        union.step(next_token_loss, [(x, y)])
        want.append(_biases(union.model))
        local.step(next_token_loss, [(x[:4], y[:4])])
        rank0_alone.append(_biases(local.model))
    torch.testing.assert_close(rank0, torch.stack(want))
    # the data make the check bite: rank 0's own load would have moved the bias elsewhere
    assert not torch.equal(torch.stack(rank0_alone), torch.stack(want))


def test_tokens_counted_by_the_objective_add_up(tmp_path: Path) -> None:
    """An objective whose batches vary in size (reward model, DPO) reports its own token count;
    the step's count is the sum over its micro-batches."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(context_length=16))
    trainer = Trainer(model, TrainConfig(max_steps=2), tmp_path, Dist(), torch.device("cpu"))

    def objective(m: torch.nn.Module, ids: Tensor) -> tuple[Tensor, dict[str, float]]:
        return m(ids).float().mean(), {"tokens": float(ids.numel())}

    trainer.step(
        objective, [torch.ones(2, 5, dtype=torch.long), torch.ones(3, 7, dtype=torch.long)]
    )
    assert trainer.tokens == 2 * 5 + 3 * 7
    trainer.step(objective, [torch.ones(1, 4, dtype=torch.long)], n_tokens=999)
    assert trainer.tokens == 2 * 5 + 3 * 7 + 4  # the objective's count wins
