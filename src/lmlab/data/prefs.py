"""Preference data: sampling responses, the world's programmatic "gold" annotator, and the
`{"prompt", "chosen", "rejected"}` JSONL format.

The gold preference (documented in docs/rlhf.md) stands in for a careful human labeller:

    gold(response) = correct + 0.2 * final_answer_line + 0.2 * brevity

`correct` (0/1) is the world verifier on the extracted answer, `final_answer_line` (0/1) whether
the reply ends with a line `Answer: ...`, and `brevity` = clip(1 - characters / 400, 0, 1).
Correctness dominates (1 > 0.4): a right answer always beats a wrong one, and between equally
right answers the one with a clear final line and fewer words wins. `noise` flips each label with
that probability, to mimic the disagreement of human annotators. Two responses whose gold scores
differ by less than `margin` are a tie to the annotator (two wrong answers a few characters
apart): no pair is written for them, since a label there would teach only noise.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.progress import Progress

from lmlab.data.jsonl import read_jsonl
from lmlab.data.tokenizer import Tokenizer

BREVITY_CHARS = 400
DEFAULT_MARGIN = 0.02  # gold difference below which the annotator has no preference (40 chars)


class PrefsError(ValueError):
    """Unusable preference data (shown as one line, with file and line number)."""


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    meta: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected, **self.meta}
        )


def gold_score(problem: Any, response: str) -> float:
    """The hidden gold reward of `response` to world `problem` (see the module docstring)."""
    from lmlab.data import world

    fam = world.family(problem.task)
    correct = float(fam.check(problem, world.extract_answer(response)))
    lines = [ln for ln in response.strip().splitlines() if ln.strip()]
    answer_line = float(bool(lines) and lines[-1].strip().startswith(world.ANSWER_PREFIX))
    brevity = min(1.0, max(0.0, 1.0 - len(response) / BREVITY_CHARS))
    return correct + 0.2 * answer_line + 0.2 * brevity


def chat_prompt_ids(tok: Tokenizer, prompt: str) -> list[int]:
    """Token ids of a single-turn chat prompt, ending with <|assistant|>."""
    return tok.encode_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)[0]


def response_ids(tok: Tokenizer, response: str) -> list[int]:
    """Token ids of a reply as the model writes it: the text, then <|end|>."""
    return [*tok.encode(response), tok.end_id]


def world_prompts(tasks: list[str], n: int, seed: int, split: str = "train") -> list[Any]:
    """`n` world problems interleaved evenly over task specs (`chain`, `arith:3`, ...)."""
    from lmlab.data import world

    if not tasks:
        raise PrefsError("no tasks given; e.g. --task chain,strings")
    specs = [world.parse_task(t) for t in tasks]
    per_task = -(-n // len(specs))
    groups = [world.generate(name, per_task, seed, split, **knobs) for name, knobs in specs]
    return [p for row in zip(*groups, strict=True) for p in row][:n]


def label_pairs(
    problem: Any,
    prompt: str,
    responses: list[str],
    rng: random.Random,
    noise: float = 0.0,
    max_pairs: int = 2,
    margin: float = 0.0,
) -> list[Pair]:
    """Pairs (best response, a worse one) labelled by the gold annotator, with label noise;
    only responses at least `margin` below the best in gold are paired with it."""
    scored = sorted(
        {r: gold_score(problem, r) for r in responses if r.strip()}.items(), key=lambda kv: -kv[1]
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
) -> dict[str, Any]:
    """Sample `k` responses per world prompt from run `run_dir` and write labelled pairs."""
    from lmlab.data import world
    from lmlab.infer import Engine, SamplingParams

    if k < 2:
        raise PrefsError(f"k must be >= 2 responses per prompt, got {k}")
    if not 0 <= noise < 0.5:
        raise PrefsError(f"label noise must be in [0, 0.5), got {noise}")
    if margin < 0:
        raise PrefsError(f"margin must be >= 0, got {margin}")
    if out.exists():
        raise PrefsError(f"{out} exists; choose another --out (nothing was overwritten)")
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
            prompts = [world.prompt(p, step_by_step=rng.random() < 0.5) for p in chunk]
            # one seed per call: the engine numbers the noise streams within a call only
            outs = eng.generate(
                [chat_prompt_ids(tok, q) for q in prompts], replace(params, seed=seed + i)
            )
            for p, q, comps in zip(chunk, prompts, outs, strict=True):
                for pair in label_pairs(p, q, [c.text for c in comps], rng, noise, margin=margin):
                    f.write(pair.to_json() + "\n")
                    n_pairs += 1
            progress.advance(task, len(chunk))
    tmp.replace(out)
    return {"prompts": len(problems), "pairs": n_pairs, "margin": margin, "out": str(out)}


def read_prefs(path: Path) -> list[Pair]:
    """Preference pairs from JSONL; malformed rows raise PrefsError naming file and line."""
    pairs = []
    for where, row in read_jsonl(path, PrefsError):
        if not isinstance(row, dict) or not all(
            isinstance(row.get(key), str) for key in ("prompt", "chosen", "rejected")
        ):
            raise PrefsError(f"{where}: needs string fields prompt, chosen and rejected")
        if not row["chosen"].strip() or not row["rejected"].strip():
            raise PrefsError(f"{where}: empty response")
        if row["chosen"] == row["rejected"]:
            raise PrefsError(f"{where}: chosen and rejected are identical")
        meta = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
        pairs.append(Pair(row["prompt"], row["chosen"], row["rejected"], meta))
    return pairs
