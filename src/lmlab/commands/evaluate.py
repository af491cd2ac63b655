"""`lmlab evaluate`: a run on lm-evaluation-harness tasks (lm-eval's `hf` model on a temporary
export of the run), writing lm-eval's results JSON. Needs the eval extra."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.commands.common import check_writable, console
from lmlab.eval.lm_harness import HarnessConfig, evaluate_harness, lm_eval_module
from lmlab.runs import CONFIG_FILE, write_atomic


@dataclass
class EvaluateArgs:
    """Evaluate a run on lm-evaluation-harness tasks (pip install 'lmlab[eval]')."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    harness: Annotated[HarnessConfig, tyro.conf.arg(name="")] = field(default_factory=HarnessConfig)
    out: Path | None = None
    """lm-eval's results JSON (default: RUN/lm_eval.json); --log-samples adds
    OUT_STEM_samples_TASK.jsonl beside it."""


def run(argv: list[str]) -> None:
    args = parse(EvaluateArgs, argv, "lmlab evaluate")
    if not (args.run / CONFIG_FILE).is_file():
        raise ValueError(f"{args.run} is not an lmlab run (no {CONFIG_FILE})")
    out = args.out or args.run / "lm_eval.json"
    check_writable(out)
    lm_eval_module()  # the missing extra is a one-line error before any work
    from lm_eval.utils import handle_non_serializable, make_table

    results = evaluate_harness(args.run, args.harness)
    samples = results.pop("samples", None)
    write_atomic(
        out, json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
    )
    for task, rows in (samples or {}).items():
        lines = [json.dumps(r, default=handle_non_serializable, ensure_ascii=False) for r in rows]
        write_atomic(out.with_name(f"{out.stem}_samples_{task}.jsonl"), "\n".join(lines) + "\n")
    console.print(make_table(results), markup=False, highlight=False)
    console.print(f"wrote {out}")
