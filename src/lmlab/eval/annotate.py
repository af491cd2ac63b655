"""Who labels preferences: the world's gold annotator, or a person in the terminal.

Both sample answers to world prompts (train split; half ask to think step by step) with the one
engine and write `lmlab.data.prefs` rows.

- `generate_prefs` (`lmlab prefs`) samples `k` responses per prompt and lets a judge label
  pairs: by default the world's hidden gold preference (`world.gold_score`, documented in
  docs/rlhf.md: correctness first, then a final answer line and brevity). The best response is
  paired with up to two strictly worse ones; `noise` flips each label with that probability, to
  mimic the disagreement of human annotators; two responses whose scores differ by less than
  `margin` are a tie to the annotator (two wrong answers a few characters apart) and make no
  pair, since a label there would teach only noise.
- `label_session` (`lmlab label`) shows a person two sampled answers and appends their choice
  as one row, flushed and fsynced before the next question appears, so killing the process
  never loses a label that was given. Running it again with the same output skips every prompt
  already labelled (rows carry the prompt's id), so a session can be resumed at any time; a
  last line torn by a kill mid-write is repaired (or, if incomplete, dropped and its prompt
  asked again) before anything is appended.

Both check their output before any sampling and hold a lock on it (`.NAME.lock` beside it)
while they write: a second process writing the same file gets one error naming the first.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress

from lmlab.data import world
from lmlab.data.prefs import DEFAULT_MARGIN, Pair, PrefsError, world_prompts
from lmlab.infer import Engine, SamplingParams
from lmlab.runs import check_output_file, lock_file

Judge = Callable[[world.Problem, str], float]
"""A score of a response to a world problem; the higher-scored response is preferred."""


def label_pairs(
    problem: world.Problem,
    prompt: str,
    responses: list[str],
    rng: random.Random,
    noise: float = 0.0,
    max_pairs: int = 2,
    margin: float = 0.0,
    judge: Judge = world.gold_score,
) -> list[Pair]:
    """Pairs (best response, a worse one) labelled by `judge`, with label noise; only responses
    at least `margin` below the best are paired with it."""
    scored = sorted(
        {r: judge(problem, r) for r in responses if r.strip()}.items(), key=lambda kv: -kv[1]
    )
    pairs: list[Pair] = []
    if len(scored) < 2:
        return pairs
    best = scored[0]
    candidates = [s for s in scored[1:] if s[1] < best[1] and best[1] - s[1] >= margin]
    rng.shuffle(candidates)
    for worse in candidates[:max_pairs]:
        chosen, rejected = best, worse
        flipped = rng.random() < noise
        if flipped:
            chosen, rejected = rejected, chosen
        pairs.append(
            Pair(
                prompt,
                chosen[0],
                rejected[0],
                {
                    "task": problem.task,
                    "gold_chosen": chosen[1],
                    "gold_rejected": rejected[1],
                    "flipped": flipped,
                    "source": "world",
                },
            )
        )
    return pairs


def generate_prefs(
    run_dir: Path,
    tasks: list[str],
    n_prompts: int,
    k: int,
    out: Path,
    noise: float = 0.0,
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    margin: float = DEFAULT_MARGIN,
    batch: int = 16,
    show_progress: bool = True,
    judge: Judge = world.gold_score,
) -> dict[str, Any]:
    """Sample `k` responses per world prompt from run `run_dir` and write pairs labelled by
    `judge` (the world's gold annotator unless another is given)."""
    if k < 2:
        raise PrefsError(f"k must be >= 2 responses per prompt, got {k}")
    if not 0 <= noise < 0.5:
        raise PrefsError(f"label noise must be in [0, 0.5), got {noise}")
    if margin < 0:
        raise PrefsError(f"margin must be >= 0, got {margin}")
    _check_new_output(out)
    with lock_file(out):
        _check_new_output(out)  # again, under the lock
        return _generate_prefs(
            run_dir,
            tasks,
            n_prompts,
            k,
            out,
            noise,
            seed,
            temperature,
            max_new_tokens,
            margin,
            batch,
            show_progress,
            judge,
        )


def _check_new_output(out: Path) -> None:
    check_output_file(out)
    if out.exists():
        raise PrefsError(f"{out} exists; choose another --out (nothing was overwritten)")


def _generate_prefs(
    run_dir: Path,
    tasks: list[str],
    n_prompts: int,
    k: int,
    out: Path,
    noise: float,
    seed: int,
    temperature: float,
    max_new_tokens: int,
    margin: float,
    batch: int,
    show_progress: bool,
    judge: Judge,
) -> dict[str, Any]:
    eng = Engine.from_checkpoint(run_dir)
    tok = eng.tokenizer
    problems = world_prompts(tasks, n_prompts, seed)
    rng = random.Random(seed)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=k, seed=seed)
    n_pairs, tmp = 0, out.with_name(out.name + ".partial")
    with tmp.open("w") as f, Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("sampling preferences", total=len(problems))
        for i in range(0, len(problems), batch):
            chunk = problems[i : i + batch]
            cot = [rng.random() < 0.5 for _ in chunk]
            # one seed per call: the engine numbers the noise streams within a call only
            outs = eng.generate(
                [world.prompt_ids(tok, p, c) for p, c in zip(chunk, cot, strict=True)],
                replace(params, seed=seed + i),
            )
            for p, c, comps in zip(chunk, cot, outs, strict=True):
                question = world.prompt(p, c)
                texts = [x.text for x in comps]
                for pair in label_pairs(p, question, texts, rng, noise, margin=margin, judge=judge):
                    f.write(pair.to_json() + "\n")
                    n_pairs += 1
            progress.advance(task, len(chunk))
    tmp.replace(out)
    return {"prompts": len(problems), "pairs": n_pairs, "margin": margin, "out": str(out)}


# --- a person -----------------------------------------------------------------------------------


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


def repair_tail(path: Path) -> str | None:
    """Make `path` end with a complete line before rows are appended to it. A last line left
    without its newline by a kill mid-write gets the newline if it is a whole JSON row, and is
    dropped otherwise (its prompt was never recorded as labelled, so it is asked again).
    Returns what was done, or None when the file was whole."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:])
    except ValueError:  # torn mid-row (or not UTF-8): keep only the complete lines
        with path.open("r+b") as f:
            f.truncate(cut)
            os.fsync(f.fileno())
        return f"dropped a torn last line of {path} ({len(data) - cut} bytes)"
    with path.open("ab") as f:
        f.write(b"\n")
        os.fsync(f.fileno())
    return f"completed the last line of {path}"


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
    """Ask a person about up to `n` prompts; returns counts of labelled/skipped prompts.
    `out` is checked, locked and repaired (`repair_tail`) before the first question."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_output_file(out)
    console = console or Console()
    with lock_file(out):
        note = repair_tail(out)
        if note:
            console.print(note)
        return _label(run_dir, out, n, tasks, seed, max_new_tokens, temperature, ask, console)


def _label(
    run_dir: Path,
    out: Path,
    n: int,
    tasks: list[str],
    seed: int,
    max_new_tokens: int,
    temperature: float,
    ask: Callable[[str], str],
    console: Console,
) -> dict[str, int]:
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
        cot = rng.random() < 0.5
        question = world.prompt(problem, cot)
        params = SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, n=2, seed=rng.randrange(2**31)
        )
        a, b = (c.text for c in engine.generate([world.prompt_ids(tok, problem, cot)], params)[0])
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
