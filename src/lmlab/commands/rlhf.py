"""`lmlab rlhf`: RLHF experiments; `rlhf overopt` measures reward over-optimisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.bounds import MAX_PROBLEMS, MAX_SAMPLES, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import console
from lmlab.config import PPOConfig
from lmlab.experiments.overopt import run_overopt
from lmlab.runs import check_output_dir, require_run

USAGE = "usage: lmlab rlhf overopt RUN --out DIR [options] (--help after the verb)"


@dataclass
class OveroptArgs:
    """Reward over-optimisation: proxy RM on noisy labels, best-of-n and PPO against it."""

    run: Annotated[Path, tyro.conf.Positional]
    """The SFT run."""
    out: Path
    """Output directory (prefs, proxy RM, PPO run, summary.json, overopt.png)."""
    n_pref_prompts: int = 300
    """Prompts for the proxy's (few) preference labels."""
    noise: float = 0.25
    """Label noise of the proxy's training data."""
    bon_prompts: int = 64
    """Prompts for the best-of-n curve."""
    bon_max: int = 16
    """Largest n of best-of-n."""
    ppo: Annotated[PPOConfig, tyro.conf.arg(name="")] = field(
        default_factory=lambda: PPOConfig(iterations=60, kl_beta=0.0)
    )
    seed: int = 0
    """Seed."""
    quiet: bool = False
    """No progress bars."""


def run(argv: list[str]) -> None:
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return
    if not argv or argv[0] != "overopt":
        raise ValueError(USAGE)
    args = parse(OveroptArgs, argv[1:], "lmlab rlhf overopt")
    check_count("--n-pref-prompts", args.n_pref_prompts, MAX_PROBLEMS)
    check_count("--bon-prompts", args.bon_prompts, MAX_PROBLEMS)
    check_count("--bon-max", args.bon_max, MAX_SAMPLES)
    check_output_dir(args.out)
    require_run(args.run)  # before the study makes its folder
    summary = run_overopt(
        args.run,
        args.out,
        args.ppo.tasks,  # one task list: the proxy's preference prompts, best-of-n and PPO
        args.n_pref_prompts,
        args.noise,
        ppo=args.ppo,
        bon_prompts=args.bon_prompts,
        bon_max=args.bon_max,
        seed=args.seed,
        show_progress=not args.quiet,
    )
    console.print_json(data={k: v for k, v in summary.items() if not k.startswith("samples")})
