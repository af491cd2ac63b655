"""`lmlab label`: a person picks the better of two sampled answers, in the terminal.

Each label is appended to the output JSONL as one `{"prompt", "chosen", "rejected", "id", ...}`
row, flushed and fsynced before the next question appears, so killing the process never loses a
label that was given. Running the command again with the same `--out` skips every prompt already
labelled (rows carry the prompt's id), so a session can be resumed at any time.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

from lmlab.data.prefs import chat_prompt_ids, world_prompts


def labelled_ids(path: Path) -> set[str]:
    """Ids of the prompts already labelled in `path` (a torn last line is ignored)."""
    if not path.exists():
        return set()
    ids = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def label_session(
    run_dir: Path,
    out: Path,
    n: int,
    tasks: list[str],
    seed: int = 0,
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    ask: Callable[[str], str] = input,
    console: Console | None = None,
) -> dict[str, int]:
    """Ask a person about up to `n` prompts; returns counts of labelled/skipped prompts."""
    from lmlab.data import world
    from lmlab.infer import Engine, SamplingParams

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    console = console or Console()
    done = labelled_ids(out)
    engine = Engine.from_checkpoint(run_dir)
    tok = engine.tokenizer
    problems = world_prompts(tasks, n, seed)
    counts = {"labelled": 0, "skipped": 0, "already": 0}
    for i, problem in enumerate(problems):
        key = f"{problem.task}:{problem.key}:{seed}:{i}"
        if key in done:
            counts["already"] += 1
            continue
        rng = random.Random(key)
        question = world.prompt(problem, step_by_step=rng.random() < 0.5)
        params = SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, n=2, seed=rng.randrange(2**31)
        )
        a, b = (c.text for c in engine.generate([chat_prompt_ids(tok, question)], params)[0])
        if not a.strip() or not b.strip() or a == b:
            counts["skipped"] += 1
            continue
        console.rule(f"prompt {i + 1} of {len(problems)}")
        console.print(Panel(question, title="user"))
        console.print(Panel(a, title="[bold]A"))
        console.print(Panel(b, title="[bold]B"))
        while True:
            try:
                choice = ask("Which is better? [a/b], s to skip, q to quit: ").strip().lower()
            except EOFError:
                choice = "q"
            if choice in ("a", "b", "s", "q"):
                break
        if choice == "q":
            break
        if choice == "s":
            counts["skipped"] += 1
            continue
        chosen, rejected = (a, b) if choice == "a" else (b, a)
        _append(
            out,
            {
                "prompt": question,
                "chosen": chosen,
                "rejected": rejected,
                "id": key,
                "task": problem.task,
                "source": "human",
            },
        )
        counts["labelled"] += 1
    return counts
