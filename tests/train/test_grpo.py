"""Tests for lmlab.train.grpo: group advantages and the token-level loss pinned by hand, and a
run that learns what an injected reward asks for."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from lmlab.config import GRPOConfig, TrainConfig
from lmlab.data import world
from lmlab.model.load import load_run
from lmlab.model.transformer import Transformer
from lmlab.runs import read_metrics
from lmlab.train.grpo import group_advantages, grpo_objective, resume, train_grpo
from tests.conftest import run_killed, tiny_model_config


def test_group_advantages_zero_mean_per_group() -> None:
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    a = group_advantages(r)
    torch.testing.assert_close(a.mean(1), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(a[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5, rtol=0)
    assert torch.count_nonzero(a[2]) == 0  # a group that ties teaches nothing


def test_group_advantages_use_the_population_std() -> None:
    # mean 1/4; population std sqrt(3)/4 (the sample std, 1/2, would give 1.5 and -0.5)
    a = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    s3 = math.sqrt(3.0)
    torch.testing.assert_close(
        a, torch.tensor([[s3, -1 / s3, -1 / s3, -1 / s3]]), atol=1e-5, rtol=0
    )


class LogitsModel(nn.Module):
    """A 'model' whose logits are its only parameter, so log-probs and gradients are known."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, ids: Tensor) -> Tensor:
        return self.logits


def test_grpo_loss_is_token_level_hand_computed() -> None:
    """Two responses of 3 and 1 tokens, uniform logits over 3 tokens (every log-prob -log 3).

    Token-level: loss = -(A_0 * 3 + A_1 * 1) / 4 + beta * mean of k3 over the 4 tokens. (The
    paper's per-response mean would give -(A_0 + A_1) / 2 for the first term instead.)"""
    ids = torch.tensor([[0, 1, 2, 0, 1], [0, 2, 1, 0, 0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    ref_logp = torch.tensor([[0.0, -0.5, -1.5, -2.0], [0.0, -0.8, 0.0, 0.0]])
    model = LogitsModel(torch.zeros(2, 5, 3))
    beta = 0.5
    loss, metrics = grpo_objective(1.0, beta)(
        model, {"ids": ids, "mask": mask, "adv": adv, "ref_logp": ref_logp}
    )
    logp = -math.log(3.0)
    tokens = [(0, 1), (0, 2), (0, 3), (1, 1)]  # (row, position) of every response token

    def k3(ref: float) -> float:  # (r - 1) - log r with r = ref / pi
        return math.exp(ref - logp) - 1 - (ref - logp)

    kl = sum(k3(float(ref_logp[b, t])) for b, t in tokens) / 4
    assert metrics["kl"] == pytest.approx(kl, rel=1e-6)
    assert loss.item() == pytest.approx(-(1.0 * 3 - 2.0 * 1) / 4 + beta * kl, rel=1e-6)
    loss.backward()
    # d loss / d logit[b, t, v] = w_bt * (1[v = next token] - 1/3), where each response token
    # weighs w_bt = (-A_b + beta * (1 - ref / pi)) / 4 and every other position 0
    want = torch.zeros(2, 5, 3)
    for b, t in tokens:
        w = (-float(adv[b]) + beta * (1 - math.exp(float(ref_logp[b, t]) - logp))) / 4
        want[b, t] = w * (torch.nn.functional.one_hot(ids[b, t + 1], 3).float() - 1 / 3)
    assert model.logits.grad is not None
    torch.testing.assert_close(model.logits.grad, want)


def test_grpo_objective_gradient_is_advantage_weighted() -> None:
    """With A = 0 for every response the loss and its gradient vanish."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    ids = torch.randint(0, 128, (2, 6))
    b = {"ids": ids, "mask": torch.ones(2, 5), "adv": torch.zeros(2)}
    loss, _ = grpo_objective(1.0, 0.0)(model, b)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.parameters())


REWARDED = "0123456789abcdefghijklmnopqrstuvwxyz"


def rewarded_probability(run: Path, problems: list[world.Problem]) -> float:
    """Mean probability that the reply's first token is in REWARDED, over the problems."""
    model, tok, _ = load_run(run)
    chars = [tok.encode(c)[0] for c in REWARDED]
    with torch.no_grad():
        probs = [
            model(torch.tensor([world.prompt_ids(tok, p, True)]))[0, -1].softmax(-1)[chars].sum()
            for p in problems
        ]
    return float(torch.stack(probs).mean())


def test_grpo_raises_the_probability_of_the_rewarded_response(
    chat_run: Path, tmp_path: Path
) -> None:
    """An injected reward (1 when the reply starts with a digit or a lower-case letter) is what
    GRPO climbs: on the random model that first token has probability 0.09; 30 steps took it to
    0.46-0.79 over four seeds (with and without per-prompt noise streams in the engine)."""
    cfg = GRPOConfig(task="arith:1", k=8, prompts_per_step=4, max_new_tokens=1, eval_n=1)
    train = TrainConfig(max_steps=30, lr=1e-2, min_lr=1e-2, warmup_steps=1, batch_size=1)

    def reward(problem: object, text: str) -> float:
        return float(text[:1] != "" and text[0] in REWARDED)

    out = tmp_path / "grpo"
    summary = train_grpo(chat_run, out, train, cfg, show_progress=False, reward=reward).summary
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31)) and summary["steps"] == 30
    assert {"reward", "train_loss", "response_len"} <= rows[0].keys()
    problems = world.generate("arith", 16, seed=5, split="test", digits=1)  # unseen prompts
    before, after = rewarded_probability(chat_run, problems), rewarded_probability(out, problems)
    assert after > 3 * before


def test_grpo_killed_and_resumed_equals_uninterrupted(chat_run: Path, tmp_path: Path) -> None:
    """6 straight steps == SIGKILL inside step 5 (after the step-3 checkpoint), then `resume`:
    the same metrics row for row and the same before/after accuracies (the SFT accuracy is read
    back from stage.json, not measured again on trained weights)."""
    cfg = GRPOConfig(task="arith:1", k=4, prompts_per_step=2, max_new_tokens=4, eval_n=4)
    train = TrainConfig(
        max_steps=6, lr=1e-2, min_lr=1e-3, warmup_steps=1, batch_size=1, ckpt_every=3, seed=3
    )
    straight = train_grpo(chat_run, tmp_path / "straight", train, cfg, show_progress=False)
    code = (
        "from pathlib import Path; from lmlab.config import GRPOConfig, TrainConfig;"
        "from lmlab.train.grpo import train_grpo;"
        f"train_grpo(Path({str(chat_run)!r}), Path({str(tmp_path / 'killed')!r}), "
        f"TrainConfig(**{dataclasses.asdict(train)!r}), GRPOConfig(**{dataclasses.asdict(cfg)!r}),"
        " show_progress=False)"
    )
    run_killed("lmlab.train.grpo", "token_logprobs", 5, code)  # one call per step (no KL term)
    killed = tmp_path / "killed"
    assert read_metrics(killed)[-1]["step"] == 4
    result = resume(killed, show_progress=False)
    assert read_metrics(killed) == read_metrics(tmp_path / "straight")
    assert result.summary == straight.summary
