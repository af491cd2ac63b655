"""Tests for lmlab.commands.args: tyro's error box as one line, and the checks every flag gets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pytest
import tyro

from lmlab.commands.args import UsageError, check_args, flag_fields, parse, tyro_message
from lmlab.commands.pretrain import PretrainArgs
from lmlab.commands.sft import SFTArgs
from lmlab.config import TrainConfig

# tyro draws its box with Unicode borders or with plain rules, depending on the console
BOX = """\
╭─ Unrecognized options ───────────────────────────────────────────────────────╮
│ Unrecognized options: --train.max-step, 3                                    │
│ ──────────────────────────────────────────────────────────────────────────── │
│ Perhaps you meant:                                                           │
│     --train.max-steps INT                                                    │
│         Optimizer steps in the run (the LR schedule ends here). (default:    │
│         600)                                                                 │
│ ──────────────────────────────────────────────────────────────────────────── │
│ For full helptext, run lmlab pretrain --help                                 │
╰──────────────────────────────────────────────────────────────────────────────╯
"""
PLAIN = """\
 Required options
 -----------------------------------
  Missing from lmlab eval:
      PATH
          Run directory. (required)
      --out PATH
          Where to write. (required)
  -----------------------------------
  For full helptext, run:
      lmlab eval --help
"""
VALUE = """\
╭─ Value error ────────────────────────────────────────────────────────────────╮
│ Error parsing --train.max-steps: invalid literal for int() with base 10:     │
│ 'abc'                                                                        │
│ ──────────────────────────────────────────────────────────────────────────── │
│ Argument helptext:                                                           │
│     --train.max-steps INT                                                    │
│     Optimizer steps in the run (the LR schedule ends here). (default: 600)   │
│ ──────────────────────────────────────────────────────────────────────────── │
│ For full helptext, see lmlab pretrain --help                                 │
╰──────────────────────────────────────────────────────────────────────────────╯
"""


def test_tyro_boxes_become_one_line() -> None:
    assert tyro_message(BOX, "lmlab pretrain") == (
        "unrecognized options: --train.max-step, 3; perhaps you meant --train.max-steps "
        "(see lmlab pretrain --help)"
    )
    assert tyro_message(PLAIN, "lmlab eval") == "missing PATH, --out PATH (see lmlab eval --help)"
    assert tyro_message(VALUE, "lmlab pretrain") == (
        "cannot parse --train.max-steps: invalid literal for int() with base 10: 'abc' "
        "(see lmlab pretrain --help)"
    )
    assert tyro_message("", "lmlab x") == "bad arguments (see lmlab x --help)"


def test_parse_turns_what_tyro_rejects_into_one_line() -> None:
    with pytest.raises(UsageError) as err:
        parse(PretrainArgs, ["--train.max-step", "3"], "lmlab pretrain")
    assert "\n" not in str(err.value)
    assert "perhaps you meant --train.max-steps" in str(err.value)
    with pytest.raises(SystemExit) as done:  # --help is not an error
        parse(PretrainArgs, ["--help"], "lmlab pretrain")
    assert done.value.code == 0


def test_flag_fields_name_flags_as_tyro_does() -> None:
    flags = {f.flag: f.path for f in flag_fields(PretrainArgs)}
    assert flags["--train.log-every"] == ("train", "log_every")
    assert flags["--model.moe.top-k"] == ("model", "moe", "top_k")
    assert flags["--corpus"] == ("data", "corpus")  # a flat group (tyro.conf.arg(name=""))
    # every flag named here is one tyro accepts
    for flag, path in flags.items():
        if path[-1] in ("log_every", "top_k", "corpus"):
            value = "world" if path[-1] == "corpus" else "3"
            tyro.cli(PretrainArgs, args=[flag, value])
    sft = {f.flag for f in flag_fields(SFTArgs)}
    assert {"--n-world", "--train.max-steps", "run"} <= sft


@dataclass
class _Inner:
    rate: float = 0.5
    count: int = 1


@dataclass
class _Args:
    inner: _Inner = field(default_factory=_Inner)
    flat: Annotated[_Inner, tyro.conf.arg(name="")] = field(default_factory=_Inner)
    seed: int = 0
    out: Path | None = None
    train: TrainConfig = field(default_factory=TrainConfig)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inner": _Inner(rate=math.nan)}, "--inner.rate must be a finite number, got nan"),
        ({"flat": _Inner(rate=-math.inf)}, "--rate must be a finite number, got -inf"),
        ({"inner": _Inner(count=-1)}, "--inner.count must be >= 0, got -1"),
        ({"train": TrainConfig(log_every=0)}, "--train.log-every must be in [1,"),
        ({"train": TrainConfig(grad_accum=10**12)}, "--train.grad-accum must be in [1, 100000]"),
        ({"train": TrainConfig(max_steps=0)}, "max steps"),  # TrainConfig.validate
    ],
)
def test_check_args_names_the_flag(change: dict[str, object], message: str) -> None:
    check_args(_Args())
    with pytest.raises(ValueError) as err:
        check_args(_Args(**change))  # type: ignore[arg-type]
    assert message in str(err.value)


def test_seeds_may_be_negative_and_outputs_may_not_be_under_a_file(tmp_path: Path) -> None:
    check_args(_Args(seed=-5))
    check_args(_Args(out=tmp_path / "new" / "deeper"))  # folders that can still be made
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check_args(_Args(out=tmp_path / "f" / "out"))
