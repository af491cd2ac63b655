"""`lmlab pretrain`: pretrain a model on a corpus, or continue a run with --resume."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.commands.common import preset_name
from lmlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig, preset
from lmlab.runs import CONFIG_FILE
from lmlab.train.pretrain import pretrain


@dataclass
class PretrainArgs:
    """Pretrain a model on a corpus (or continue a run with --resume)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: Annotated[DataConfig, tyro.conf.arg(name="")] = field(default_factory=DataConfig)
    preset: str = "tiny"
    """Named preset whose settings are the defaults: tiny, tiny-moe, small, small-bpe, gpt2-124m."""
    out: Path | None = None
    """Run directory (default runs/<preset>)."""
    resume: Path | None = None
    """Continue the run in this directory from its latest checkpoint."""
    quiet: bool = False
    """No progress bar."""


def parse_args(argv: list[str]) -> PretrainArgs:
    """The arguments, every flag defaulting to the preset's setting; with --resume, to the
    run's own setting instead, so that --train.max-steps moves the run's target only when it
    is given (to any value, the preset's default included)."""
    name = preset_name(argv)
    base = preset(name)
    default = PretrainArgs(model=base.model, train=base.train, data=base.data, preset=name)
    args = parse(PretrainArgs, argv, "lmlab pretrain", default=default)
    if args.resume is None or not (args.resume / CONFIG_FILE).is_file():
        return args  # nothing to resume: `pretrain` says so in one line
    saved = RunConfig.load(args.resume / CONFIG_FILE)
    default = dataclasses.replace(default, model=saved.model, train=saved.train, data=saved.data)
    return parse(PretrainArgs, argv, "lmlab pretrain", default=default)


def run(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.resume is None:
        cfg = RunConfig(model=args.model, train=args.train, data=args.data)
        pretrain(cfg, args.out or Path("runs") / args.preset, show_progress=not args.quiet)
        return
    pretrain(
        None, args.resume, resume=True, show_progress=not args.quiet, max_steps=args.train.max_steps
    )
