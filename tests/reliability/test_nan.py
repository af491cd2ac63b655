"""NaN and infinity: a step whose loss or gradients are not finite stops the run with one
`error:` line before the weights change; non-finite weights are never checkpointed and never
loaded, so the last good checkpoint stays what `generate` and `--resume` use (issue 23, item 5;
the policy — stop, do not skip and roll back — is in docs/reliability.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from lmlab.cli import main
from lmlab.config import TrainConfig
from lmlab.model.load import load_run, load_weights
from lmlab.model.transformer import Transformer
from lmlab.runs import MANIFEST_FILE, CheckpointError, NonFiniteError, latest_checkpoint
from lmlab.train.checkpoint import save_checkpoint
from lmlab.train.loop import Dist, Objective, Trainer
from tests.conftest import tiny_model_config, user_error
from tests.reliability.conftest import copy_run, digest, error_after_progress, pretrain_argv


def test_a_learning_rate_of_1e4_stops_with_the_last_good_checkpoint(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = pretrain_argv(corpus_file, out, 8, "--train.lr", "1e4", "--train.min-lr", "1e3")
    err = error_after_progress(capsys, argv)
    assert "training diverged" in err and "lower --train.lr" in err
    good = latest_checkpoint(out)
    assert good.name in err
    step = json.loads((good / "state.json").read_text())["step"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["step"] <= step + 1 for r in rows)  # nothing logged past the bad step
    model, _, _ = load_run(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert main(["generate", str(out), "--prompt", "def", "--max-new-tokens", "3"]) == 0


def _trainer(run: Path, grad_clip: float) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainConfig(max_steps=6, warmup_steps=1, eval_every=1, ckpt_every=1, grad_clip=grad_clip)
    return Trainer(Transformer(tiny_model_config()), cfg, run, Dist(), torch.device("cpu"), False)


def _batch(step: int, micro: int) -> Tensor:
    return torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(step))


def _poisoned(bad_step: int, where: str) -> Objective:
    """A next-token objective whose loss (or gradient) is NaN (or inf) from `bad_step` on."""
    calls = [0]

    def objective(model: nn.Module, ids: Tensor) -> tuple[Tensor, dict[str, float]]:
        calls[0] += 1
        logits = model(ids[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        if calls[0] >= bad_step:
            if where == "loss":
                loss = loss * float("nan")
            else:  # the loss stays finite; its gradient does not
                logits.register_hook(lambda g: g * float("inf"))
        return loss, {}

    return objective


@pytest.mark.parametrize("where", ["loss", "grad"])
@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_a_non_finite_step_stops_before_the_update(
    where: str, grad_clip: float, tmp_path: Path
) -> None:
    trainer = _trainer(tmp_path, grad_clip)
    with pytest.raises(NonFiniteError, match="diverged at step 3"):
        trainer.fit(_poisoned(3, where), _batch, 16)
    assert latest_checkpoint(tmp_path).name == "step_000002" and trainer.step_count == 2
    saved = Transformer(tiny_model_config())
    load_weights(saved, latest_checkpoint(tmp_path))
    for name, p in trainer.model.state_dict().items():  # step 3 never touched the weights
        assert torch.equal(p, saved.state_dict()[name]), name


def test_non_finite_weights_are_never_checkpointed(tmp_path: Path) -> None:
    model = Transformer(tiny_model_config())
    save_checkpoint(tmp_path, model, None, {"step": 1, "tokens": 0})
    with torch.no_grad():
        model.norm.weight[0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"norm\.weight"):
        save_checkpoint(tmp_path, model, None, {"step": 2, "tokens": 0})
    assert latest_checkpoint(tmp_path).name == "step_000001"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest",
        "step_000001",
    ]


def test_non_finite_weights_are_never_loaded(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint diverged before this check existed (all NaN, no manifest) is refused by
    everything that reads weights."""
    run = copy_run(trained_run, tmp_path)
    ckpt = latest_checkpoint(run)
    model, _, _ = load_run(run)
    nan = {k: torch.full_like(v, float("nan")) for k, v in model.state_dict().items()}
    nan.pop("lm_head.weight")  # tied to embed.weight: stored once
    save_file(nan, str(ckpt / "model.safetensors"))
    (ckpt / MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match="NaN"):
        load_run(run)
    before = digest(run)
    for argv in (
        ["generate", str(run), "--prompt", "def", "--max-new-tokens", "2"],
        ["pretrain", "--resume", str(run), "--train.max-steps", "6", "--quiet"],
        ["export", str(run), "--out", str(tmp_path / "hf")],
    ):
        assert "NaN" in user_error(capsys, argv)
    assert digest(run) == before and not (tmp_path / "hf").exists()
