"""Where a PPO iteration's time goes: generation, scoring and training, in one run.

    python benchmarks/ppo.py [--iterations 4] [--prompts 32]

A random-weight model of the `small-bpe` preset's shape (char tokenizer over world text) stands in
for an SFT policy — the timing depends on the shapes and on how long responses run, and a random
model nearly always runs to --max-new-tokens (the mean length is printed). The reward and
value models share that shape. Generation goes through the one engine (KV cache, batched);
scoring is the forward passes of policy, reference, reward and value models over the rollouts;
training is the PPO epochs of minibatch updates of policy and value models.
The last output line is one JSON object with the mean seconds per phase and their fractions.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from lmlab.config import PPOConfig, RunConfig, TrainConfig, preset
from lmlab.data import world
from lmlab.data.tokenizer import char_tokenizer
from lmlab.model.heads import ScalarHeadModel
from lmlab.model.transformer import Transformer
from lmlab.train.checkpoint import save_checkpoint
from lmlab.train.ppo import train_ppo


def make_runs(root: Path) -> tuple[Path, Path]:
    tok = char_tokenizer([p.question + p.trace for p in world.mixed(500, seed=0)])
    cfg = RunConfig(model=preset("small-bpe").model)
    cfg.model.vocab_size = -(-tok.vocab_size // 64) * 64
    torch.manual_seed(0)
    policy = Transformer(cfg.model)
    paths = []
    for name, model in (("sft", policy), ("rm", ScalarHeadModel(Transformer(cfg.model)))):
        run = root / name
        run.mkdir()
        cfg.save(run / "config.json")
        tok.save(run / "tokenizer.json")
        save_checkpoint(run, model, None, {"step": 0, "tokens": 0})
        paths.append(run)
    (paths[1] / "reward.json").write_text("{}")
    return paths[0], paths[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sft, rm = make_runs(Path(tmp))
        cfg = PPOConfig(
            tasks=["chain", "strings"],
            prompts_per_iter=args.prompts,
            iterations=args.iterations,
            epochs=2,
            minibatch=8,
            max_new_tokens=args.max_new_tokens,
        )
        train_ppo(sft, rm, Path(tmp) / "ppo", TrainConfig(lr=1e-5, min_lr=1e-5), cfg)
        rows = [
            json.loads(x) for x in (Path(tmp) / "ppo" / "metrics.jsonl").read_text().splitlines()
        ]
    rows = rows[1:] if len(rows) > 1 else rows  # the first iteration includes warm-up
    phases = {
        k: sum(r[f"time_{k}_s"] for r in rows) / len(rows) for k in ("generate", "score", "train")
    }
    total = sum(phases.values())
    mean_len = sum(r["response_len"] for r in rows) / len(rows)
    for k, v in phases.items():
        print(f"{k:>9}: {v:6.2f} s/iteration  ({100 * v / total:4.1f}%)")
    print(
        f"    total: {total:6.2f} s/iteration for {args.prompts} rollouts of "
        f"{mean_len:.1f} tokens on average"
    )
    print(
        json.dumps(
            {
                **{f"{k}_s": round(v, 3) for k, v in phases.items()},
                **{f"{k}_fraction": round(v / total, 3) for k, v in phases.items()},
                "iteration_s": round(total, 3),
                "rollouts": args.prompts,
                "mean_response_len": round(mean_len, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
