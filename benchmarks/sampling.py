"""Independent samples against the old coupled ones, on one model, in one run (issue 18).

Until the fix, every prompt of one seeded `Engine.generate` call drew the same noise: prompt i's
sample j used stream j of the seed, whatever i. This script measures what that did to figures
that rest on seeded sampling, by running the same work both ways on the same model and seed:

- the coupled way is the old behaviour exactly: every prompt's samples take streams 0..n-1
  (`Engine.add_request(..., first_stream=0)`);
- the independent way is today's `Engine.generate` (prompt i's sample j is stream i*n + j).

Measured: how often two different prompts' samples pick the same token at the same step
(chance level is what independence should give), self-consistency accuracy (`sc@K`), and
best-of-n's gold reward under the world's judge (proxy: the sample's own mean log-probability).

    python benchmarks/sampling.py RUN [--task arith:3:op=add] [--n 100] [--k 8]

The last line is one JSON object: agreement_independent, agreement_coupled, sc_independent,
sc_coupled, bon_gold_independent, bon_gold_coupled.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmlab.data import world
from lmlab.infer import Engine, SamplingParams
from lmlab.infer.engine import Completion
from lmlab.reason import parse_strategy
from lmlab.reason.base import is_correct


class CoupledEngine:
    """The engine with the old noise: every prompt of a call samples streams 0..n-1."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tokenizer, self.max_len, self.cfg = engine.tokenizer, engine.max_len, engine.cfg

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        reqs = [self.engine.add_request(list(p), params, first_stream=0) for p in prompts]
        while not all(r.finished for r in reqs):
            self.engine.step()
        return [r.completions(self.tokenizer) for r in reqs]


def agreement(outs: list[list[Completion]]) -> float:
    """Share of (prompt pair, sample, step) triples at which two different prompts' samples
    chose the same token."""
    same = total = 0
    for a in range(len(outs)):
        for b in range(a + 1, len(outs)):
            for ca, cb in zip(outs[a], outs[b], strict=True):
                steps = min(len(ca.token_ids), len(cb.token_ids))
                pairs = zip(ca.token_ids[:steps], cb.token_ids[:steps], strict=True)
                same += sum(x == y for x, y in pairs)
                total += steps
    return same / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--task", default="arith:3:op=add")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    engine = Engine.from_checkpoint(args.run, max_batch=64)
    coupled = CoupledEngine(engine)
    name, knobs = world.parse_task(args.task)
    problems = world.generate(name, args.n, seed=args.seed, split="test", **knobs)
    prompts = [world.prompt_ids(engine.tokenizer, p, True) for p in problems]
    params = SamplingParams(
        max_new_tokens=160, temperature=0.7, n=args.k, seed=args.seed, logprobs=True
    )
    out: dict[str, Any] = {"run": str(args.run), "task": args.task, "n": args.n, "k": args.k}
    for label, eng in (("independent", engine), ("coupled", coupled)):
        outs: list[list[Completion]] = []
        for i in range(0, len(prompts), 8):  # 8 prompts x k samples per call
            outs += eng.generate(prompts[i : i + 8], params)
        out[f"agreement_{label}"] = round(agreement(outs), 4)
        results = parse_strategy(f"sc@{args.k}", task=args.task, seed=args.seed).run(eng, problems)
        acc = sum(is_correct(p, r.answer) for p, r in zip(problems, results, strict=True))
        out[f"sc_{label}"] = acc / args.n
        # best-of-n by the samples' own likelihood, scored by the hidden gold judge
        gold = []
        for p, comps in zip(problems, outs, strict=True):
            best = max(comps, key=lambda c: sum(c.logprobs or [0.0]) / max(len(c.token_ids), 1))
            gold.append(world.gold_score(p, best.text))
        out[f"bon_gold_{label}"] = round(sum(gold) / len(gold), 4)
    se = math.sqrt(0.25 / args.n)
    print(
        f"self-consistency sc@{args.k} on {args.task}: independent {out['sc_independent']:.3f}, "
        f"coupled {out['sc_coupled']:.3f} (one standard error at most {se:.3f}); agreement "
        f"between prompts {out['agreement_independent']:.4f} vs {out['agreement_coupled']:.4f}; "
        f"ratio sc independent/coupled "
        f"{out['sc_independent'] / max(out['sc_coupled'], 1e-9):.3f}"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
