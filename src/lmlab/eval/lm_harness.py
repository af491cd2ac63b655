"""lm-evaluation-harness on an lmlab run: the run is exported to a temporary Hugging Face folder
(the `lmlab export` code path, `model/hf.py`) and evaluated by lm-eval's own `hf` model, so the
scores are lm-eval's, computed as for any other checkpoint and comparable with published ones
(litgpt's `evaluate` works the same way).

lm-eval is an optional dependency (`pip install 'lmlab[eval]'`), imported only here and only
when an evaluation runs. Tasks are lm-eval's (hellaswag, arc_easy, ...; they download their
data sets) or your own YAML tasks in `include_path` (e.g. on local JSONL files, docs/evaluate.md).
A run whose tasks are all found in `include_path` skips indexing lm-eval's thousands of
built-in tasks (about 14 s on 2 CPU cores).

Token inputs: lmlab puts <|bos|> before every text it reads, so `add_bos_token` (default on)
asks lm-eval to add the exported tokenizer's BOS; what the tokenizer then adds is the export's
decision (`model/hf.py`).
"""

from __future__ import annotations

import difflib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmlab.model.hf import export_hf
from lmlab.model.load import load_run

EXTRA = "pip install 'lmlab[eval]'"


class HarnessError(ValueError):
    """Bad input to an lm-eval run (a one-line message naming the fix)."""


@dataclass
class HarnessConfig:
    """What lm-evaluation-harness runs on the exported model."""

    tasks: list[str] = field(default_factory=list)
    """lm-eval task, group or tag names (hellaswag, arc_easy, ...) or tasks in --include-path."""
    include_path: Path | None = None
    """A folder of lm-eval task YAML files to add to lm-eval's own tasks."""
    num_fewshot: int | None = None
    """Few-shot examples per prompt (default: each task's own)."""
    limit: float | None = None
    """At most this many documents per task (a fraction of each task if below 1)."""
    batch_size: int = 8
    """Documents scored together by lm-eval's `hf` model."""
    device: str = "cpu"
    """cpu or cuda[:N]."""
    seed: int = 0
    """Seed of lm-eval's sampling of few-shot examples, Python, NumPy and torch."""
    add_bos_token: bool = True
    """Ask the exported tokenizer for its BOS before every input, as lmlab reads text."""
    log_samples: bool = False
    """Keep every document's inputs, outputs and scores (under "samples")."""


def lm_eval_module() -> Any:
    """The `lm_eval` package, or a HarnessError naming the extra to install."""
    try:
        import lm_eval
    except ImportError as e:
        raise HarnessError(
            f"lm-evaluation-harness is not installed ({e.name} is missing): {EXTRA}"
        ) from None
    return lm_eval


def task_manager(tasks: list[str], include_path: Path | None, metadata: dict[str, Any]) -> Any:
    """An lm-eval TaskManager that knows every task asked for (lm-eval's own tasks are indexed
    only when `include_path` does not hold them all); a HarnessError names an unknown one."""
    lm_eval_module()
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise HarnessError("give at least one task: --tasks NAME [NAME ...]")
    if include_path is not None and not include_path.is_dir():
        raise HarnessError(f"--include-path {include_path} is not a folder of task YAML files")
    if include_path is not None:
        own = TaskManager(include_path=str(include_path), include_defaults=False, metadata=metadata)
        if all(t in own.all_tasks for t in tasks):
            return own
    manager = TaskManager(
        include_path=str(include_path) if include_path else None, metadata=metadata
    )
    for t in tasks:
        if t not in manager.all_tasks:
            near = difflib.get_close_matches(t, manager.all_tasks, n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise HarnessError(
                f"unknown lm-eval task {t!r}{hint}; list them with `lm-eval ls tasks`, or give "
                "your own with --include-path DIR"
            )
    return manager


def evaluate_harness(run: Path, cfg: HarnessConfig) -> dict[str, Any]:
    """lm-eval's results dict for `run` on `cfg.tasks` (its `samples` too with log_samples)."""
    lm_eval = lm_eval_module()
    model, tok, _ = load_run(Path(run))
    with tempfile.TemporaryDirectory(prefix="lmlab-evaluate-") as tmp:
        folder = Path(tmp) / "hf"
        args: dict[str, Any] = {
            "pretrained": str(folder),
            "dtype": "float32",
            "add_bos_token": cfg.add_bos_token,
        }
        manager = task_manager(cfg.tasks, cfg.include_path, metadata=dict(args))
        export_hf(model, tok, folder)  # type: ignore[arg-type]
        del model
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args=args,
            tasks=cfg.tasks,
            num_fewshot=cfg.num_fewshot,
            batch_size=cfg.batch_size,
            device=cfg.device,
            limit=cfg.limit,
            log_samples=cfg.log_samples,
            task_manager=manager,
            random_seed=cfg.seed,
            numpy_random_seed=cfg.seed,
            torch_random_seed=cfg.seed,
            fewshot_random_seed=cfg.seed,
        )
    if results is None:  # lm-eval answers None on ranks other than 0 of a distributed run
        raise HarnessError("lm-eval returned no results (not rank 0 of a distributed run?)")
    return results
