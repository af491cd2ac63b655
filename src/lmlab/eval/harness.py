"""Run a suite of world tasks through the engine and score the answers.

For each task spec (`arith:3`, `icl:k=8`, ...) the harness draws `n` test-split problems (new
problems in held-out phrasings), asks each — plainly for `direct`, with the step-by-step request
for `cot` — generates greedily in batches with the one `Engine`, extracts the answer and scores
it: verifier accuracy, exact match, per-character (per-digit) accuracy, normalised edit
distance, and the log-likelihood of the gold response by teacher forcing. Results are a
JSON-ready dict; `print_table` shows them.

Two prompt styles: `chat` (a one-turn chat, for fine-tuned models) and `plain` (for base
models: the question as the pretraining corpus writes it, `Question: ...` then `Answer:` or the
worked solution, after `shots` solved train-split problems of the same task, each its own
document). Each task's result also counts the tokens the engine prefilled and generated and
their forward FLOPs, for compute ledgers.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from torch import nn

from lmlab.data import world
from lmlab.data.tokenizer import Tokenizer
from lmlab.data.world import ANSWER_PREFIX
from lmlab.eval.metrics import (
    char_accuracy,
    exact_match,
    gold_logprobs,
    normalized_edit_distance,
)
from lmlab.infer import Engine, SamplingParams
from lmlab.model.transformer import FlopModel

STRATEGIES = ("direct", "cot")
STYLES = ("chat", "plain")


def check_strategy(strategy: str) -> bool:
    """Whether `strategy` asks for worked solutions (ValueError if it is unknown)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    return strategy == "cot"


def score(problem: world.Problem, completion: str) -> dict[str, Any]:
    """Metrics of one completion graded by its problem's family: the verdict, and the string
    metrics of the normalised answer against the normalised gold one."""
    fam = world.family(problem.task)
    g = fam.grade(problem, completion)
    return {
        "correct": float(g.correct),
        "exact_match": exact_match(g.pred, g.gold),
        "char_accuracy": char_accuracy(g.pred, g.gold, right_align=fam.numeric),
        "edit_distance": normalized_edit_distance(g.pred, g.gold),
        "extracted": g.extracted,
    }


def plain_prompt(tok: Tokenizer, problem: world.Problem, cot: bool, shots: list[int]) -> list[int]:
    """A base model's prompt: solved exemplars (token ids of whole documents, each opening with
    <|bos|> as in pretraining), then the question as a document begins."""
    opening = f"Question: {world.prompt(problem, cot)}\n" + ("" if cot else ANSWER_PREFIX)
    return [*shots, tok.bos_id, *tok.encode(opening)]


def plain_gold(problem: world.Problem, cot: bool) -> str:
    """What follows a plain prompt in a pretraining document: the worked solution, or a space
    and the answer; then the line break that ends the document."""
    return f"{problem.trace}\n" if cot else f" {problem.answer}\n"


def _exemplars(tok: Tokenizer, spec: str, cot: bool, shots: int, seed: int) -> list[int]:
    name, knobs = world.parse_task(spec)
    solved = world.generate(name, shots, seed=seed + 7919, split="train", **knobs)
    ids: list[int] = []
    for p in solved:
        ids += [tok.bos_id, *tok.encode(world.render(p, cot))]
    return ids


def evaluate_task(
    engine: Any,
    model: nn.Module,
    tok: Tokenizer,
    spec: str,
    strategy: str = "direct",
    n: int = 100,
    seed: int = 0,
    max_new_tokens: int | None = None,
    batch_size: int = 32,
    n_examples: int = 3,
    style: str = "chat",
    shots: int = 0,
) -> dict[str, Any]:
    """Metrics of one task spec (averages over `n` test problems) and a few example outputs."""
    cot = check_strategy(strategy)
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose from {', '.join(STYLES)}")
    name, knobs = world.parse_task(spec)
    problems = world.generate(name, n, seed=seed, split="test", **knobs)
    stop: list[str] | None = None
    if style == "chat":
        prompts = [world.prompt_ids(tok, p, cot) for p in problems]
        golds = [[*tok.encode(world.response(p, cot)), tok.end_id] for p in problems]
    else:
        exemplars = _exemplars(tok, spec, cot, shots, seed) if shots else []
        prompts = [plain_prompt(tok, p, cot, exemplars) for p in problems]
        if prompts and max(map(len, prompts)) >= model.cfg.context_length // 2:
            prompts = [plain_prompt(tok, p, cot, []) for p in problems]  # exemplars do not fit
        golds = [tok.encode(plain_gold(p, cot)) for p in problems]
        stop = ["\nQuestion:"] if cot else ["\n"]
    context = model.cfg.context_length
    room = context - max(map(len, prompts))
    budget = max_new_tokens or 2 * max(map(len, golds)) + 8
    budget = min(budget, room)
    if budget < 1:
        raise ValueError(
            f"{spec}: prompts of {context - room} tokens leave no room to answer in the "
            f"context of {context}; lower the difficulty"
        )
    params = SamplingParams(
        max_new_tokens=budget,
        temperature=0.0,
        seed=seed,
        stop=stop,
        stop_token_ids=[tok.bos_id] if style == "plain" else None,  # a base model's next document
    )
    texts: list[str] = []
    cut_off = 0  # completions that hit the token budget before <|end|>
    generated: list[int] = []
    for start in range(0, len(prompts), batch_size):
        outs = engine.generate(prompts[start : start + batch_size], params)
        texts += [o[0].text for o in outs]
        generated += [len(o[0].token_ids) for o in outs]
        cut_off += sum(o[0].finish_reason == "length" for o in outs)
    flop_model = FlopModel.of(model)
    logps = gold_logprobs(model, prompts, golds, batch_size)
    rows = [score(p, t) for p, t in zip(problems, texts, strict=True)]
    scored = [lp for lp in logps if lp is not None]
    n_gold_tokens = [len(g) for g, lp in zip(golds, logps, strict=True) if lp is not None]
    result: dict[str, Any] = {
        "task": name,
        "knobs": knobs,
        "n": n,
        **{
            k: statistics.fmean(r[k] for r in rows) if rows else math.nan
            for k in ("correct", "exact_match", "char_accuracy", "edit_distance")
        },
        "gold_logprob": statistics.fmean(scored) if scored else math.nan,
        "gold_logprob_per_token": sum(scored) / sum(n_gold_tokens) if scored else math.nan,
        "max_new_tokens": budget,
        "cut_off": cut_off,
        "style": style,
        "prompt_tokens": sum(map(len, prompts)),
        "generated_tokens": sum(generated),
        "flops": sum(
            flop_model.request(len(p), [g]) for p, g in zip(prompts, generated, strict=True)
        ),
        "examples": [
            {
                "question": p.question,
                "gold": p.answer,
                "output": t,
                "extracted": r["extracted"],
                "correct": bool(r["correct"]),
            }
            for p, t, r in list(zip(problems, texts, rows, strict=True))[:n_examples]
        ],
    }
    result["accuracy"] = result.pop("correct")
    return result


def evaluate(
    model: nn.Module,
    tok: Tokenizer,
    tasks: list[str],
    strategy: str = "direct",
    n: int = 100,
    seed: int = 0,
    max_new_tokens: int | None = None,
    batch_size: int = 32,
    engine: Any = None,
    style: str = "chat",
    shots: int = 0,
) -> dict[str, Any]:
    """Evaluate every task spec; `engine` defaults to the one `Engine` over `model`; `style`
    and `shots` as in the module docstring."""
    check_strategy(strategy)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not tasks:
        raise ValueError("no tasks given; e.g. --tasks arith:3,chain,strings,icl")
    for spec in tasks:  # fail on a bad spec before any generation
        world.parse_task(spec)
    if engine is None:
        engine = Engine(model, tok, max_batch=batch_size)
    t0 = time.perf_counter()
    results = {
        spec: evaluate_task(
            engine,
            model,
            tok,
            spec,
            strategy,
            n,
            seed,
            max_new_tokens,
            batch_size,
            style=style,
            shots=shots,
        )
        for spec in tasks
    }
    return {
        "strategy": strategy,
        "style": style,
        "n": n,
        "seed": seed,
        "split": "test",
        "seconds": round(time.perf_counter() - t0, 2),
        "tasks": results,
    }


def print_table(report: dict[str, Any], console: Console | None = None) -> None:
    """The report's metrics as one table row per task."""
    table = Table(title=f"lmlab eval  strategy={report['strategy']}  n={report['n']}")
    cols = [
        ("task", None),
        ("accuracy", "{:.3f}"),
        ("exact", "{:.3f}"),
        ("char acc", "{:.3f}"),
        ("edit dist", "{:.3f}"),
        ("gold logp/tok", "{:.3f}"),
    ]
    for c, _ in cols:
        table.add_column(c, justify="left" if c == "task" else "right")
    for spec, r in report["tasks"].items():
        values = [
            r["accuracy"],
            r["exact_match"],
            r["char_accuracy"],
            r["edit_distance"],
            r["gold_logprob_per_token"],
        ]
        table.add_row(spec, *(fmt.format(v) for (_, fmt), v in zip(cols[1:], values, strict=True)))
    (console or Console()).print(table)
