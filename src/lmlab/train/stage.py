"""The one stage scaffold: what every training stage does before and after its own work.

A stage — pretrain, sft, rm, dpo, grpo, ppo — is a function that takes its configuration and
returns a `StageResult` (its run directory and summary metrics). Each one begins with
`start_stage`, which in this order

- validates the loop settings (the stage has validated its own),
- decides device, rank and autocast once (`init_distributed`): every Trainer, scoring pass and
  rollout of the stage uses `Stage.device`, `Stage.dist` and `Stage.autocast()`,
- refuses an occupied, unwritable or locked output directory, or on `resume` locks it and checks
  that it holds a run of this stage whose latest checkpoint reads back whole,
- seeds torch,
- records the stage in `stage.json` (name, base run, settings, status "running"),

and ends with `Stage.finish(summary)`, which writes the summary, the wall time and status "done".
One process writes a run at a time: the stage holds the run's lock (`lmlab.runs.lock_dir`) from
its first write (at once on resume; with the run files on a fresh start, so that bad input
leaves nothing behind) until `finish`; a second writer gets one error naming the holder's pid.
`--resume` rebuilds the call from `stage.json` (see each stage's `resume`), each Trainer picks up
its latest checkpoint, and values measured before training started (`Stage.once`) are read back
instead of being measured again on trained weights. `lmlab run` reads the same records to skip
finished stages and to build its report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from lmlab.config import TrainConfig
from lmlab.data.tokenizer import Tokenizer
from lmlab.model.load import load_run
from lmlab.model.transformer import Transformer
from lmlab.runs import (
    METRICS_FILE,
    STAGE_FILE,
    Lock,
    Saveable,
    check_checkpoint,
    check_new_run_dir,
    has_checkpoint,
    latest_checkpoint,
    lock_dir,
    read_stage,
    require_stage,
    start_stage_record,
    update_stage_record,
    write_run_files,
)
from lmlab.train.loop import Dist, Trainer, autocast_for, init_distributed, truncate_metrics

T = TypeVar("T")


@dataclass
class StageResult:
    """What a stage hands back: its run directory and its summary metrics."""

    out: Path
    summary: dict[str, Any]


@dataclass
class Stage:
    """A running stage: where it writes, on which device and rank, and its stage.json record."""

    name: str
    out: Path
    train: TrainConfig
    dist: Dist
    device: torch.device
    resume: bool
    show_progress: bool
    record: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    lock: Lock | None = None
    """The run's lock while this (main) process writes it."""

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast every forward of this stage runs under (bf16 on CUDA), the same one
        the Trainer trains in: scores computed outside training must match it."""
        return autocast_for(self.device)

    def load_base(self, base: Path) -> tuple[Transformer, Tokenizer, Any]:
        """The base run's model (on this stage's device), tokenizer and RunConfig."""
        return load_run(base, self.device)

    def write_run_files(self, cfg: Saveable, tok: Saveable, run_dir: Path | None = None) -> None:
        """config.json and tokenizer.json of the stage's run (rank 0 only). The first call also
        writes stage.json: nothing is written to `out` before the stage's inputs have been
        loaded and checked, so bad input leaves no half-made run behind."""
        if not self.is_main:
            return
        if self.lock is None and not self.resume:  # take the lock, then check again under it
            self.lock = lock_dir(self.out)
            try:
                check_new_run_dir(self.out, self.name)
            except ValueError:
                self.release()
                raise
        if not self._recorded:
            self.record = start_stage_record(self.out, **self.record)
        elif self.record.get("status") != "running":  # a resume: running again from here on
            self.record = update_stage_record(self.out, status="running")
        write_run_files(run_dir or self.out, cfg, tok)

    @property
    def _recorded(self) -> bool:
        return "started" in self.record

    def trainer(
        self,
        model: nn.Module,
        run_dir: Path | None = None,
        train: TrainConfig | None = None,
        show_progress: bool | None = None,
    ) -> Trainer:
        """A Trainer on this stage's device and rank; on resume, restored from the latest
        checkpoint of its run directory when there is one (a run killed before its first
        checkpoint starts again from step 0)."""
        run_dir = run_dir or self.out
        trainer = Trainer(
            model,
            train or self.train,
            run_dir,
            self.dist,
            self.device,
            self.show_progress if show_progress is None else show_progress,
        )
        if self.resume and has_checkpoint(run_dir):
            trainer.resume()
        elif self.resume and self.is_main:  # rows logged before the kill are written again
            truncate_metrics(run_dir / METRICS_FILE, 0)
        return trainer

    def once(self, key: str, compute: Callable[[], T]) -> T:
        """`compute()` the first time a stage runs, read back from stage.json on resume: for
        values measured before training (a baseline accuracy, the loss before fine-tuning)."""
        state = self.record.setdefault("state", {})
        if key not in state:
            state[key] = compute()
            if self.is_main and self._recorded:
                update_stage_record(self.out, state=state)
        return state[key]

    def finish(self, summary: dict[str, Any]) -> StageResult:
        """Record the summary, the wall time (over all resumes) and status "done"."""
        seconds = float(self.record.get("seconds", 0.0)) + time.perf_counter() - self.started
        if self.is_main:
            self.record = update_stage_record(
                self.out,
                status="done",
                summary=summary,
                seconds=round(seconds, 2),
                finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
            )
        self.release()
        if self.dist.world > 1:
            dist.barrier()
        return StageResult(self.out, summary)

    def release(self) -> None:
        """Let go of the run's lock (`finish` does; the kernel does when the process ends)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def settings_of(**configs: Any) -> dict[str, Any]:
    """A stage's settings for stage.json: dataclasses as dicts, paths as strings."""
    out: dict[str, Any] = {}
    for name, value in configs.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[name] = dataclasses.asdict(value)
        elif isinstance(value, Path):
            out[name] = str(value)
        else:
            out[name] = value
    return out


def start_stage(
    name: str,
    out: Path,
    train: TrainConfig,
    settings: dict[str, Any],
    base: Path | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> Stage:
    """Begin stage `name` writing to `out` (see the module docstring for what this does)."""
    train.validate()
    rank, device = init_distributed(train.device)
    lock = None
    if resume:
        lock = lock_dir(out) if rank.is_main and out.is_dir() else None
        try:
            record = read_stage(out) if name == "pretrain" else require_stage(out, name)
            if has_checkpoint(out):  # a damaged checkpoint is found before anything is written
                check_checkpoint(latest_checkpoint(out))
        except ValueError:
            if lock is not None:
                lock.release()
            raise
    else:
        check_new_run_dir(out, name)
        record = None
    if rank.world > 1:
        dist.barrier()  # every rank has checked `out` before rank 0 writes into it
    torch.manual_seed(train.seed)
    if record is None:  # written with the run files (Stage.write_run_files)
        record = {"stage": name, "base": base, "settings": settings, "state": {}}
    show = show_progress and rank.is_main
    return Stage(name, out, train, rank, device, resume, show, record, lock=lock)


def finished_summary(out: Path) -> dict[str, Any] | None:
    """The summary of a run whose stage finished, else None."""
    record = read_stage(out) if (out / STAGE_FILE).is_file() else None
    if record is None or record.get("status") != "done":
        return None
    return dict(record.get("summary", {}))
