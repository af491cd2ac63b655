"""Tree of thoughts (Yao et al. 2023): search over partial solutions, one line at a time.

A state is the question plus the lines of a worked solution written so far; a thought is the
next line. Three parts, each replaceable:

- a thought generator: `sample` draws k next lines independently at a temperature (Yao's
  "sample" mode); `propose` branches on the k most likely first tokens of the next line and
  completes each greedily, so the k thoughts are distinct and deterministic (what a proposal
  prompt gives a model that was never trained to list proposals);
- a state evaluator: `value` is the model's own confidence in the path (exp of the mean token
  log-probability, the self-evaluation signal of Xie et al. 2023, free since the logprobs come
  with the samples); `verifier` is the world's checker where a family has one that needs no
  gold answer (countdown: every written step must be valid arithmetic on numbers still in
  hand, the last number left must be the target, a final answer must verify); `reward` calls
  any scorer of (problem, partial solution), such as a reward model;
- a search: BFS keeps the `breadth` best states per depth; DFS follows the best child first,
  prunes states valued below a threshold and stops at the first accepted answer.

Every search respects a per-question token budget: a state is expanded only if the worst case
of its expansion (k thoughts of the longest allowed length) still fits.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import torch

from lmlab.data.world import ANSWER_PREFIX, Problem
from lmlab.infer.engine import SamplingParams
from lmlab.reason.base import (
    EngineLike,
    Ledger,
    ReasonError,
    chat_ids,
    extract,
    has_verifier,
    is_correct,
    user,
)

EVALUATORS = ("value", "verifier", "reward")
GENERATORS = ("sample", "propose")
SEARCHES = ("bfs", "dfs")

RewardFn = Callable[[Problem, str], float]


@dataclass(frozen=True)
class Node:
    """A partial (or, when `done`, complete) solution."""

    lines: tuple[str, ...] = ()
    logprob: float = 0.0
    """Sum of the model's log-probabilities of the thought tokens."""
    tokens: int = 0
    done: bool = False
    answer: str | None = None
    """Extracted answer of a done node (None: the solution ended without one)."""
    value: float = field(default=0.0, compare=False)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def likelihood(self) -> float:
        """exp(mean token log-probability) of the path (1 for the root)."""
        return math.exp(self.logprob / self.tokens) if self.tokens else 1.0

    def child(self, line: str, logprob: float, tokens: int, ended: bool) -> Node:
        done = ended or line.lstrip().startswith(ANSWER_PREFIX)
        return Node(
            (*self.lines, line),
            self.logprob + logprob,
            self.tokens + tokens,
            done,
            extract(line, strict=True) if done else None,
        )


class ThoughtGenerator(Protocol):
    """Expands states into their next-line children, charging the ledger."""

    cost: int
    """Most tokens one expansion of one state may generate."""

    def expand(
        self, ledger: Ledger, problems: Sequence[Problem], states: Sequence[tuple[int, Node]]
    ) -> list[list[Node]]: ...


StateEvaluator = Callable[[Ledger, Problem, int, list[Node]], list[float]]


# --- thought generators -----------------------------------------------------------------------


@dataclass
class EngineThoughts:
    """Thoughts from the engine: `sample` or `propose` (see the module docstring)."""

    engine: EngineLike
    mode: str = "sample"
    k: int = 3
    max_tokens: int = 48
    temperature: float = 0.7
    seed: int = 0
    _calls: int = 0

    @property
    def cost(self) -> int:
        return self.k * self.max_tokens

    def _prefix(self, problem: Problem, node: Node) -> list[int]:
        tok = self.engine.tokenizer
        ids = chat_ids(tok, [user(problem, True)])
        return ids + tok.encode(node.text + "\n") if node.lines else ids

    def expand(
        self, ledger: Ledger, problems: Sequence[Problem], states: Sequence[tuple[int, Node]]
    ) -> list[list[Node]]:
        if not states:
            return []
        self._calls += 1
        prefixes = [self._prefix(problems[qi], node) for qi, node in states]
        room = self.engine.max_len - max(map(len, prefixes))
        max_new = min(self.max_tokens, room - 1)
        if max_new < 1:  # no room left in the context: these states cannot grow
            return [[] for _ in states]
        end = self.engine.tokenizer.end_id
        if self.mode == "sample":
            params = SamplingParams(
                max_new_tokens=max_new,
                temperature=self.temperature,
                n=self.k,
                stop=["\n"],
                logprobs=True,
                seed=self.seed + 7919 * self._calls,
            )
            outs = ledger.generate(
                [(qi, ids) for (qi, _), ids in zip(states, prefixes, strict=True)], params
            )
            firsts: list[list[tuple[str, float]]] = [[("", 0.0)] * self.k for _ in states]
        else:
            firsts, items = [], []
            for (qi, _), ids in zip(states, prefixes, strict=True):
                top = self._top_first_tokens(ledger, qi, ids)
                firsts.append([(self.engine.tokenizer.decode([t]), lp) for t, lp in top])
                items += [(qi, [*ids, t]) for t, _ in top]
            params = SamplingParams(
                max_new_tokens=max_new, temperature=0.0, stop=["\n"], logprobs=True
            )
            flat = ledger.generate(items, params) if items else []
            outs, pos = [], 0
            for f in firsts:
                outs.append([c[0] for c in flat[pos : pos + len(f)]])
                pos += len(f)
        children: list[list[Node]] = []
        for (_, node), comps, first in zip(states, outs, firsts, strict=True):
            kids: list[Node] = []
            seen: set[str] = set()
            for c, (head, head_lp) in zip(comps, first, strict=False):
                line = (head + c.text).split("\n")[0].rstrip()
                ended = bool(c.token_ids) and c.token_ids[-1] == end
                if not line.strip() or line in seen:
                    continue
                if c.finish_reason == "length" and not ended and ANSWER_PREFIX not in line:
                    continue  # a cut-off line is not a thought
                seen.add(line)
                lp = head_lp + sum(c.logprobs or [])
                kids.append(node.child(line, lp, len(c.token_ids) + bool(head), ended))
            children.append(kids)
        return children

    @torch.inference_mode()
    def _top_first_tokens(self, ledger: Ledger, qi: int, ids: list[int]) -> list[tuple[int, float]]:
        """The k most likely first tokens of the next line, by one forward pass (charged as a
        prefill that generates nothing)."""
        model = self.engine.model  # type: ignore[attr-defined]
        device = next(model.parameters()).device
        logits = model(torch.tensor([ids], device=device))[0, -1].float()
        tok = self.engine.tokenizer
        banned = [tok.pad_id, tok.bos_id, tok.system_id, tok.user_id, tok.assistant_id, tok.end_id]
        logits[banned] = -math.inf
        logits[tok.vocab_size :] = -math.inf
        newline = tok.encode("\n")
        if len(newline) == 1:
            logits[newline[0]] = -math.inf  # an empty line is not a thought
        logp = logits.log_softmax(-1)
        top = logp.topk(self.k)
        ledger.charge(qi, len(ids), [])
        return list(zip(top.indices.tolist(), top.values.tolist(), strict=True))


# --- state evaluators -------------------------------------------------------------------------


def value_evaluator(ledger: Ledger, problem: Problem, qi: int, nodes: list[Node]) -> list[float]:
    """The model's confidence in each path; a solution that ended without an answer is 0."""
    return [0.0 if n.done and n.answer is None else n.likelihood for n in nodes]


_STEP = re.compile(r"^\s*(\d+(?:/\d+)?)\s*([-+*/])\s*(\d+(?:/\d+)?)\s*=\s*(-?\d+(?:/\d+)?)\s*$")


def countdown_steps_valid(problem: Problem, lines: Sequence[str]) -> bool:
    """Whether every written step `a op b = c` is exact arithmetic on numbers still in hand
    (the result goes back into the hand), as in countdown's worked solutions, and a hand down
    to one number holds the target (no search ahead: an open state is never judged hopeless)."""
    hand = Counter(Fraction(n) for n in problem.data["numbers"])
    for line in lines:
        if line.lstrip().startswith(ANSWER_PREFIX):
            continue
        m = _STEP.match(line)
        if m is None:
            return False
        a, op, b, c = Fraction(m[1]), m[2], Fraction(m[3]), Fraction(m[4])
        for x in (a, b):
            if hand[x] < 1:
                return False
            hand[x] -= 1
        if op == "/" and b == 0:
            return False
        exact = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
        if exact != c:
            return False
        hand[c] += 1
    left = [x for x, count in hand.items() for _ in range(count)]
    return len(left) > 1 or left == [problem.data["target"]]


def verifier_evaluator(ledger: Ledger, problem: Problem, qi: int, nodes: list[Node]) -> list[float]:
    """1 for a verified answer or a partial solution whose steps all check, 0 for a wrong answer
    or a broken step; families without step checks score partial solutions 0.5."""
    out = []
    for n in nodes:
        if n.done:
            out.append(float(is_correct(problem, n.answer)))
        elif problem.task == "countdown":
            out.append(float(countdown_steps_valid(problem, n.lines)))
        else:
            out.append(0.5)
    return out


def reward_evaluator(fn: RewardFn) -> StateEvaluator:
    """A state evaluator from a scorer of (problem, partial solution text), e.g. a reward model."""

    def evaluate(ledger: Ledger, problem: Problem, qi: int, nodes: list[Node]) -> list[float]:
        return [float(fn(problem, n.text)) for n in nodes]

    return evaluate


def make_evaluator(
    name: str, problems: Sequence[Problem], reward_fn: RewardFn | None = None
) -> StateEvaluator:
    """The evaluator called `name`, checked against the problems it will judge."""
    if name not in EVALUATORS:
        raise ReasonError(f"unknown evaluator {name!r}; choose from {', '.join(EVALUATORS)}")
    if name == "verifier":
        bad = sorted({p.task or "plain question" for p in problems if not has_verifier(p)})
        if bad:
            raise ReasonError(
                f"the verifier evaluator needs a task with a verifier (countdown); "
                f"{', '.join(bad)} has none: use --evaluator value"
            )
        return verifier_evaluator
    if name == "reward":
        if reward_fn is None:
            raise ReasonError("the reward evaluator needs a reward function (reward_fn=...)")
        return reward_evaluator(reward_fn)
    return value_evaluator


# --- searches ---------------------------------------------------------------------------------


def _rank(nodes: list[Node]) -> list[Node]:
    return sorted(nodes, key=lambda n: (n.value, n.likelihood), reverse=True)


def _scored(
    evaluate: StateEvaluator, ledger: Ledger, problem: Problem, qi: int, nodes: list[Node]
) -> list[Node]:
    if not nodes:
        return []
    values = evaluate(ledger, problem, qi, nodes)
    return [
        Node(n.lines, n.logprob, n.tokens, n.done, n.answer, v)
        for n, v in zip(nodes, values, strict=True)
    ]


@dataclass
class SearchOutcome:
    """What a search found for one question."""

    best: Node | None
    expanded: int = 0
    """States expanded."""
    generated: int = 0
    """Thoughts generated."""


def bfs(
    ledger: Ledger,
    problems: Sequence[Problem],
    generator: ThoughtGenerator,
    evaluate: StateEvaluator,
    breadth: int,
    max_depth: int,
    accept: float = math.inf,
) -> list[SearchOutcome]:
    """Breadth-first search, all questions in lockstep (one engine call per depth).

    Each depth expands every open state of each question's frontier (best first, as many as
    its budget allows), scores the children and keeps the `breadth` best states (finished
    solutions compete with partial ones). A question stops once a finished solution's value
    reaches `accept` or its frontier holds only finished solutions.
    """
    out = [SearchOutcome(None) for _ in problems]
    frontier: dict[int, list[Node]] = {qi: [Node()] for qi in range(len(problems))}
    finished: dict[int, list[Node]] = {qi: [] for qi in frontier}
    for _ in range(max_depth):
        items: list[tuple[int, Node]] = []
        for qi, nodes in frontier.items():
            open_ = [n for n in nodes if not n.done]
            items += [(qi, n) for n in open_[: ledger.afford(qi, generator.cost)]]
        if not items:
            break
        children = generator.expand(ledger, problems, items)
        grown: dict[int, list[Node]] = {}
        for (qi, _), kids in zip(items, children, strict=True):
            grown.setdefault(qi, []).extend(kids)
            out[qi].expanded += 1
            out[qi].generated += len(kids)
        for qi, kids in grown.items():
            scored = _scored(evaluate, ledger, problems[qi], qi, kids)
            finished[qi] += [n for n in scored if n.done]
            kept = [n for n in frontier[qi] if n.done] + scored
            frontier[qi] = _rank(kept)[:breadth]
            if any(n.done and n.value >= accept for n in finished[qi]) or all(
                n.done for n in frontier[qi]
            ):
                frontier[qi] = [n for n in frontier[qi] if n.done]
        frontier = {qi: ns for qi, ns in frontier.items() if any(not n.done for n in ns)}
    for qi, done in finished.items():
        answered = [n for n in done if n.answer is not None]
        out[qi].best = _rank(answered)[0] if answered else None
    return out


def dfs(
    ledger: Ledger,
    problems: Sequence[Problem],
    generator: ThoughtGenerator,
    evaluate: StateEvaluator,
    max_depth: int,
    threshold: float,
) -> list[SearchOutcome]:
    """Depth-first search per question: best child first, children valued below `threshold`
    pruned, stopping at the first finished solution valued at least `threshold` (or when the
    budget cannot pay for another expansion)."""
    outcomes = []
    for qi, problem in enumerate(problems):
        out = SearchOutcome(None)
        stack, found = [Node()], []
        while stack and ledger.afford(qi, generator.cost) >= 1:
            node = stack.pop()
            kids = _scored(
                evaluate, ledger, problem, qi, generator.expand(ledger, problems, [(qi, node)])[0]
            )
            out.expanded += 1
            out.generated += len(kids)
            hits = [n for n in kids if n.done and n.answer is not None and n.value >= threshold]
            if hits:
                found = hits
                break
            found += [n for n in kids if n.done and n.answer is not None]
            alive = [n for n in kids if not n.done and n.value >= threshold]
            if len(node.lines) + 1 < max_depth:
                stack += _rank(alive)[::-1]  # best child on top
        out.best = _rank(found)[0] if found else None
        outcomes.append(out)
    return outcomes


def reward_model_fn(run_dir: str | Path) -> RewardFn:
    """A `RewardFn` scoring (problem, partial solution) with a reward model run (`lmlab rm`),
    read at the last token of the user's question plus the solution so far (on the CPU)."""
    from lmlab.train.reward import load_reward_model, score_rows

    model, tok = load_reward_model(Path(run_dir))
    context = model.cfg.context_length

    def score(problem: Problem, text: str) -> float:
        ids = chat_ids(tok, [user(problem, True)]) + tok.encode(text)
        return float(score_rows(model, [ids[-context:]], tok.pad_id)[0])

    return score
