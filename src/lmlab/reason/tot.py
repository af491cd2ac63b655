"""Tree of thoughts (Yao et al. 2023): search over partial solutions, one line at a time.

A state is the question plus the lines of a worked solution written so far; a thought is the
next line. Three parts, each replaceable:

- a thought generator: `sample` draws k next lines independently at a temperature (Yao's
  "sample" mode); `propose` branches on the k most likely first tokens of the next line and
  completes each greedily, so the k thoughts are distinct and deterministic (what a proposal
  prompt gives a model that was never trained to list proposals);
- a state evaluator, which scores the children of each expansion:
  - `value` (Yao et al. sec. 3, "value each state independently"): the model reads a value
    prompt built from the question and the state and ends its reply with sure, likely or
    impossible; the prompt is sampled `n` times and the labels' values summed (20, 1 and 0.001,
    the map of the paper's Game of 24 code); a reply whose last line ends with no label counts
    as nothing, and a solution that ended without an answer is 0 without asking;
  - `vote` (sec. 3, "vote across states"): the model is shown the candidate states of the step
    numbered and ends its reply with "The best choice is N"; sampled `n` times, a state's value
    is the number of votes it got (replies naming no candidate count as nothing);
  - `likelihood`: the path's own probability, exp of the mean token log-probability (free, the
    logprobs come with the thoughts). This is not an evaluation of the state: with it the
    search is a beam search by likelihood;
  - `verifier`: the world's checker where a family has one that needs no gold answer: a final
    answer must verify, and a partial solution is judged by the family's step checker where it
    has one (countdown: every written step must be valid arithmetic on numbers still in hand,
    the last number left must be the target), else valued 0.5;
  - `reward`: any scorer of (problem, partial solution), such as a reward model;
- a search: BFS keeps the `breadth` best states per depth; DFS follows the best child first,
  prunes states valued below a threshold and stops at the first accepted answer. Ties in value
  (e.g. every evaluator reply unparseable) are broken by the path's likelihood.

The value and vote prompts go through the same engine and ledger as the thoughts, so their
prompt tokens and replies are charged to the question. The world's SFT models were trained on
worked solutions, never on these evaluation prompts: their replies are whatever such a model
writes after an unfamiliar request, and how many replies parsed is in each result's `info`.

Every search respects a per-question token budget: a state is expanded only if the worst case
of its expansion (k thoughts of the longest allowed length) and of evaluating its children
(every evaluator reply at its longest) still fits.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from lmlab.data import world
from lmlab.data.world import ANSWER_PREFIX, Problem
from lmlab.infer.engine import Completion, SamplingParams
from lmlab.model.load import load_reward_model
from lmlab.model.scoring import score_rows
from lmlab.reason.base import (
    EngineLike,
    Ledger,
    ReasonError,
    chat_ids,
    extract,
    family_of,
    has_verifier,
    is_correct,
)

EVALUATORS = ("likelihood", "value", "vote", "verifier", "reward")
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

    k: int
    """Most children one expansion gives."""
    cost: int
    """Most tokens one expansion of one state may generate."""

    def expand(
        self, ledger: Ledger, problems: Sequence[Problem], states: Sequence[tuple[int, Node]]
    ) -> list[list[Node]]: ...


Groups = Sequence[tuple[int, list[Node]]]
"""(question index, candidate states) pairs: the children a search step asks to be scored."""
StateEvaluator = Callable[[Ledger, Sequence[Problem], Groups], list[list[float]]]
"""Scores every group's states (one list of values per group, in order)."""


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
        ids = world.prompt_ids(tok, problem, True)
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
        banned = list(tok.special_ids)
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


def likelihood_evaluator(
    ledger: Ledger, problems: Sequence[Problem], groups: Groups
) -> list[list[float]]:
    """Each path's own likelihood (beam search, not an evaluation of the state); a solution that
    ended without an answer is 0."""
    return [
        [0.0 if n.done and n.answer is None else n.likelihood for n in nodes] for _, nodes in groups
    ]


VALUE_LABELS = {"sure": 20.0, "likely": 1.0, "impossible": 0.001}
"""Value of each label of the value prompt, as in Yao et al.'s Game of 24 code: one "sure"
outweighs many "likely", and "impossible" is almost, not exactly, nothing."""

_LAST_WORD = re.compile(r"([A-Za-z]+)[^A-Za-z]*$")
_CHOICE = re.compile(r"best choice is\s*(?:choice\s*)?(\d+)", re.IGNORECASE)


def parse_value(reply: str) -> str | None:
    """The label a value reply ends with: the last word of its last non-empty line, if it is
    sure, likely or impossible (any case, trailing punctuation ignored); else None."""
    lines = [ln for ln in reply.splitlines() if ln.strip()]
    m = _LAST_WORD.search(lines[-1]) if lines else None
    label = m[1].lower() if m else None
    return label if label in VALUE_LABELS else None


def parse_vote(reply: str, n_choices: int) -> int | None:
    """The 0-based choice a vote reply names in its last "The best choice is N" (N counts from
    1), or None when it names none of the `n_choices`."""
    found = _CHOICE.findall(reply)
    choice = int(found[-1]) - 1 if found else -1
    return choice if 0 <= choice < n_choices else None


def _state(node: Node) -> str:
    return node.text if node.lines else "(nothing written yet)"


def _asked(engine: EngineLike, text: str) -> list[int]:
    """Token ids of an evaluation request: one clean user turn, the assistant to reply."""
    return chat_ids(engine.tokenizer, [{"role": "user", "content": text}])


def value_prompt(problem: Problem, node: Node) -> str:
    """The value prompt: the question, the state, and a request to judge it with one label."""
    if node.done:
        return (
            f"{problem.question}\n\nSolution:\n{_state(node)}\n\n"
            "Is this solution correct? End with one word: sure, likely or impossible."
        )
    return (
        f"{problem.question}\n\nPartial solution:\n{_state(node)}\n\n"
        "Can this still lead to a correct answer? End with one word: sure, likely or impossible."
    )


def vote_prompt(problem: Problem, nodes: Sequence[Node]) -> str:
    """The vote prompt: the question, the candidate states numbered from 1, and a request to
    name the most promising one."""
    choices = "\n".join(f"Choice {i}:\n{_state(n)}\n" for i, n in enumerate(nodes, 1))
    return (
        f"{problem.question}\n\n{choices}\nWhich choice is most promising? "
        'End with "The best choice is N", N the number of the choice.'
    )


@dataclass
class PromptEvaluator:
    """What the model-judged evaluators share: `n` replies sampled per prompt through the
    ledger (charged to the question like every other call), and the tally of replies."""

    n: int = 3
    """Replies sampled per evaluation prompt."""
    temperature: float = 0.7
    max_tokens: int = 32
    """Most tokens of one reply."""
    seed: int = 0
    replies: Counter[int] = field(default_factory=Counter)
    """Replies received, per question."""
    parsed: Counter[int] = field(default_factory=Counter)
    """Replies that gave a label or a vote, per question."""
    _calls: int = 0

    def worst_tokens(self, n_states: int) -> int:
        """Most tokens evaluating `n_states` candidate states of one question may generate."""
        raise NotImplementedError

    def _ask(
        self, ledger: Ledger, items: Sequence[tuple[int, list[int]]]
    ) -> list[list[Completion]]:
        """`n` replies to each (question, prompt ids), in one engine call; a prompt that leaves
        no room for a reply of `max_tokens` in the context is not asked (no replies)."""
        fits = [len(ids) + self.max_tokens <= ledger.engine.max_len for _, ids in items]
        self._calls += 1
        params = SamplingParams(
            max_new_tokens=self.max_tokens,
            temperature=self.temperature,
            n=self.n,
            seed=self.seed + 7919 * self._calls,
        )
        asked = iter(
            ledger.generate([it for it, ok in zip(items, fits, strict=True) if ok], params)
        )
        outs = [next(asked) if ok else [] for ok in fits]
        for (qi, _), comps in zip(items, outs, strict=True):
            self.replies[qi] += len(comps)
        return outs


@dataclass
class ValueEvaluator(PromptEvaluator):
    """Yao et al.'s value prompt: each state judged on its own, the labels of `n` replies
    summed (see `VALUE_LABELS`); an unparseable reply adds nothing."""

    def worst_tokens(self, n_states: int) -> int:
        return n_states * self.n * self.max_tokens

    def __call__(
        self, ledger: Ledger, problems: Sequence[Problem], groups: Groups
    ) -> list[list[float]]:
        values = [[0.0] * len(nodes) for _, nodes in groups]
        items, where = [], []
        for g, (qi, nodes) in enumerate(groups):
            for j, node in enumerate(nodes):
                if node.done and node.answer is None:
                    continue  # ended without an answer: 0, as the paper values such a trajectory
                items.append((qi, _asked(ledger.engine, value_prompt(problems[qi], node))))
                where.append((g, j))
        for (qi, _), (g, j), comps in zip(items, where, self._ask(ledger, items), strict=True):
            labels = [lb for lb in (parse_value(c.text) for c in comps) if lb is not None]
            self.parsed[qi] += len(labels)
            values[g][j] = sum(VALUE_LABELS[lb] for lb in labels)
        return values


@dataclass
class VoteEvaluator(PromptEvaluator):
    """Yao et al.'s vote prompt: the candidate states of a step shown together, numbered; a
    state's value is the number of the `n` replies that name it the best choice."""

    n: int = 5

    def worst_tokens(self, n_states: int) -> int:
        return self.n * self.max_tokens if n_states else 0

    def __call__(
        self, ledger: Ledger, problems: Sequence[Problem], groups: Groups
    ) -> list[list[float]]:
        items = [(qi, _asked(ledger.engine, vote_prompt(problems[qi], ns))) for qi, ns in groups]
        values = []
        for (qi, nodes), comps in zip(groups, self._ask(ledger, items), strict=True):
            votes = [0.0] * len(nodes)
            for c in comps:
                choice = parse_vote(c.text, len(nodes))
                if choice is not None:
                    votes[choice] += 1.0
                    self.parsed[qi] += 1
            values.append(votes)
        return values


def evaluation_tokens(evaluate: StateEvaluator, n_states: int) -> int:
    """Most tokens `evaluate` may generate scoring `n_states` states of one question (0 for the
    evaluators that do not ask the model)."""
    return evaluate.worst_tokens(n_states) if isinstance(evaluate, PromptEvaluator) else 0


def verifier_evaluator(
    ledger: Ledger, problems: Sequence[Problem], groups: Groups
) -> list[list[float]]:
    """1 for a verified answer or a partial solution whose steps all check, 0 for a wrong answer
    or a broken step; families without a step checker score partial solutions 0.5."""
    out = []
    for qi, nodes in groups:
        problem, values = problems[qi], []
        fam = family_of(problem)
        steps_valid = fam.step_check if fam else None
        for n in nodes:
            if n.done:
                values.append(float(is_correct(problem, n.answer)))
            elif steps_valid is not None:
                values.append(float(steps_valid(problem, n.lines)))
            else:
                values.append(0.5)
        out.append(values)
    return out


def reward_evaluator(fn: RewardFn) -> StateEvaluator:
    """A state evaluator from a scorer of (problem, partial solution text), e.g. a reward model."""

    def evaluate(ledger: Ledger, problems: Sequence[Problem], groups: Groups) -> list[list[float]]:
        return [[float(fn(problems[qi], n.text)) for n in nodes] for qi, nodes in groups]

    return evaluate


def make_evaluator(
    name: str,
    problems: Sequence[Problem],
    reward_fn: RewardFn | None = None,
    *,
    n_evaluate: int = 3,
    n_vote: int = 5,
    temperature: float = 0.7,
    max_tokens: int = 32,
    seed: int = 0,
) -> StateEvaluator:
    """The evaluator called `name`, checked against the problems it will judge; `value` samples
    its prompt `n_evaluate` times per state, `vote` its prompt `n_vote` times per step."""
    if name not in EVALUATORS:
        raise ReasonError(f"unknown evaluator {name!r}; choose from {', '.join(EVALUATORS)}")
    if name == "verifier":
        bad = sorted({p.task or "plain question" for p in problems if not has_verifier(p)})
        if bad:
            have = [f.name for f in world.FAMILIES.values() if f.verifies_without_gold]
            raise ReasonError(
                f"the verifier evaluator needs a task with a verifier ({', '.join(have)}); "
                f"{', '.join(bad)} has none: use --evaluator value"
            )
        return verifier_evaluator
    if name == "reward":
        if reward_fn is None:
            raise ReasonError("the reward evaluator needs a reward function (reward_fn=...)")
        return reward_evaluator(reward_fn)
    if name == "value":
        return ValueEvaluator(n_evaluate, temperature, max_tokens, seed)
    if name == "vote":
        return VoteEvaluator(n_vote, temperature, max_tokens, seed)
    return likelihood_evaluator


# --- searches ---------------------------------------------------------------------------------


def _rank(nodes: list[Node]) -> list[Node]:
    return sorted(nodes, key=lambda n: (n.value, n.likelihood), reverse=True)


def _scored(
    evaluate: StateEvaluator, ledger: Ledger, problems: Sequence[Problem], groups: Groups
) -> list[list[Node]]:
    """Every group's states with their values (one evaluator call for all the groups)."""
    asked = [(qi, nodes) for qi, nodes in groups if nodes]
    values = iter(evaluate(ledger, problems, asked) if asked else [])
    out = []
    for _, nodes in groups:
        vs = next(values) if nodes else []
        out.append(
            [
                Node(n.lines, n.logprob, n.tokens, n.done, n.answer, v)
                for n, v in zip(nodes, vs, strict=True)
            ]
        )
    return out


def affordable(
    ledger: Ledger, qi: int, n_states: int, generator: ThoughtGenerator, evaluate: StateEvaluator
) -> int:
    """How many of `n_states` states question `qi` can expand, and have their children
    evaluated, in the worst case, within its budget."""
    room = ledger.room(qi)
    for m in range(n_states, 0, -1):
        if m * generator.cost + evaluation_tokens(evaluate, m * generator.k) <= room:
            return m
    return 0


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
    """Breadth-first search, all questions in lockstep (one generation call and at most one
    evaluation call per depth).

    Each depth expands every open state of each question's frontier (best first, as many as
    its budget allows), scores all the children of the question together (the vote evaluator
    compares them) and keeps the `breadth` best states (finished solutions compete with
    partial ones). A question stops once a finished solution's value reaches `accept` or its
    frontier holds only finished solutions.
    """
    out = [SearchOutcome(None) for _ in problems]
    frontier: dict[int, list[Node]] = {qi: [Node()] for qi in range(len(problems))}
    finished: dict[int, list[Node]] = {qi: [] for qi in frontier}
    for _ in range(max_depth):
        items: list[tuple[int, Node]] = []
        for qi, nodes in frontier.items():
            open_ = [n for n in nodes if not n.done]
            m = affordable(ledger, qi, len(open_), generator, evaluate)
            items += [(qi, n) for n in open_[:m]]
        if not items:
            break
        children = generator.expand(ledger, problems, items)
        grown: dict[int, list[Node]] = {}
        for (qi, _), kids in zip(items, children, strict=True):
            grown.setdefault(qi, []).extend(kids)
            out[qi].expanded += 1
            out[qi].generated += len(kids)
        groups = list(grown.items())
        for (qi, _), scored in zip(
            groups, _scored(evaluate, ledger, problems, groups), strict=True
        ):
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
    for qi in range(len(problems)):
        out = SearchOutcome(None)
        stack, found = [Node()], []
        while stack and affordable(ledger, qi, 1, generator, evaluate) >= 1:
            node = stack.pop()
            grown = generator.expand(ledger, problems, [(qi, node)])[0]
            [kids] = _scored(evaluate, ledger, problems, [(qi, grown)])
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
    model, tok = load_reward_model(Path(run_dir))
    context = model.cfg.context_length

    def score(problem: Problem, text: str) -> float:
        ids = world.prompt_ids(tok, problem, True) + tok.encode(text)
        return float(score_rows(model, [ids[-context:]], tok.pad_id)[0])

    return score
