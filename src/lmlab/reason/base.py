"""What every reasoning strategy shares: questions, results, compute accounting, prompts, votes.

A strategy asks the one `Engine` for completions through a `Ledger`, which charges every call to
the question it belongs to: tokens generated (every token of every sample, stop tokens
included), prompt tokens prefilled (once per request: the `n` samples of a request share one
prefill) and forward FLOPs. FLOPs count the matmul weights (2 FLOPs per weight per token, the
`n_matmul` of `model/transformer.py`) plus causal attention (QK^T and AV over the keys a token
actually attends to: 4 * L * d_attn * position), for every token the model runs forward.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lmlab.data import world
from lmlab.data.tokenizer import Message, Tokenizer
from lmlab.data.world import ANSWER_PREFIX, Family, Problem
from lmlab.infer.engine import Completion, SamplingParams
from lmlab.model.transformer import FlopModel


class ReasonError(ValueError):
    """Bad reasoning settings or input (shown to the user as one line)."""


class EngineLike(Protocol):
    """What strategies need from the engine (the real `Engine`, or a scripted one in tests)."""

    tokenizer: Tokenizer
    max_len: int

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]: ...


Question = Problem | str


def as_problem(q: Question) -> Problem:
    """A plain question becomes a Problem with no family (no verifier, no gold answer)."""
    if isinstance(q, Problem):
        return q
    if not isinstance(q, str) or not q.strip():
        raise ReasonError(f"a question must be a world Problem or a non-empty string, got {q!r}")
    return Problem(task="", question=q, answer="", trace="", key=q)


def family_of(problem: Problem) -> Family | None:
    """The world family a question comes from (None for a plain question)."""
    return world.FAMILIES.get(problem.task)


def normalize(problem: Problem, answer: str | None) -> str | None:
    """The answer in its family's canonical form (stripped text for plain questions)."""
    if answer is None:
        return None
    fam = family_of(problem)
    out = fam.normalize(answer) if fam else answer.strip()
    return out or None


def extract(text: str, strict: bool) -> str | None:
    """The answer in a response: after the last `Answer:`; without one, the first non-empty
    line unless `strict` (a chain of thought cut off before its answer line abstains)."""
    if ANSWER_PREFIX not in text and strict:
        return None
    return world.extract_answer(text) or None


def is_correct(problem: Problem, answer: str | None) -> bool:
    """Whether `answer` solves a world problem (its family's verifier or exact match); a plain
    question has no gold answer, so nothing solves it."""
    fam = family_of(problem)
    return answer is not None and fam is not None and fam.check(problem, answer)


def has_verifier(problem: Problem) -> bool:
    """Whether the family can check an answer without the gold one (e.g. countdown)."""
    fam = family_of(problem)
    return fam is not None and fam.verifies_without_gold


# --- compute accounting -----------------------------------------------------------------------


@dataclass
class Compute:
    """Inference compute spent on one question."""

    tokens: int = 0
    """Tokens generated (all samples, all stages)."""
    prompt_tokens: int = 0
    """Prompt tokens prefilled (once per request)."""
    flops: float = 0.0
    """Forward FLOPs of every token run through the model."""
    calls: int = 0
    """Engine requests made."""

    def add(self, other: Compute) -> None:
        self.tokens += other.tokens
        self.prompt_tokens += other.prompt_tokens
        self.flops += other.flops
        self.calls += other.calls


@dataclass
class Ledger:
    """Runs engine calls for many questions at once and charges each its own compute."""

    engine: EngineLike
    n_questions: int
    budget: int | None = None
    """Most tokens a question may generate (None: no cap)."""
    spent: list[Compute] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spent = [Compute() for _ in range(self.n_questions)]
        self.flop_model = FlopModel.of(self.engine)

    def room(self, qi: int) -> int | float:
        """Tokens question `qi` may still generate."""
        return math.inf if self.budget is None else self.budget - self.spent[qi].tokens

    def afford(self, qi: int, cost: int) -> int:
        """How many calls of up to `cost` tokens question `qi` can still pay for."""
        room = self.room(qi)
        return sys.maxsize if room == math.inf else int(room // max(cost, 1))

    def charge(self, qi: int, prompt_len: int, generated: Sequence[int]) -> None:
        c = self.spent[qi]
        c.tokens += sum(generated)
        c.prompt_tokens += prompt_len
        c.flops += self.flop_model.request(prompt_len, generated)
        c.calls += 1

    def generate(
        self, items: Sequence[tuple[int, list[int]]], params: SamplingParams
    ) -> list[list[Completion]]:
        """Completions of (question index, prompt ids) items; refuses a call that could take a
        question over its budget (a strategy sizes its calls with `room` first)."""
        if not items:
            return []
        for qi, count in Counter(qi for qi, _ in items).items():
            need = count * params.n * params.max_new_tokens
            if need > self.room(qi):
                raise ReasonError(
                    f"question {qi}: a call of up to {need} tokens exceeds the budget"
                )
        for _, ids in items:
            if len(ids) + params.max_new_tokens > self.engine.max_len:
                raise ReasonError(
                    f"a prompt of {len(ids)} tokens + {params.max_new_tokens} new tokens exceeds "
                    f"the context of {self.engine.max_len}; lower the difficulty or the shots"
                )
        outs = self.engine.generate([ids for _, ids in items], params)
        for (qi, ids), comps in zip(items, outs, strict=True):
            self.charge(qi, len(ids), [len(c.token_ids) for c in comps])
        return outs


# --- prompts ----------------------------------------------------------------------------------


def chat_ids(tok: Tokenizer, messages: list[Message]) -> list[int]:
    """Token ids of a chat ending with the assistant role token (the model continues): for
    few-shot turns and evaluation requests; a question alone is `world.prompt_ids`."""
    return tok.encode_chat(messages, add_generation_prompt=True)[0]


def mean_logprob(completions: Sequence[Completion]) -> float:
    """Mean log-probability per generated token over some completions (0 if none)."""
    lps = [lp for c in completions for lp in (c.logprobs or [])]
    return sum(lps) / len(lps) if lps else 0.0


def room_for(engine: EngineLike, ids: Sequence[Sequence[int]], want: int) -> int:
    """`want` new tokens, lowered to what the longest prompt leaves of the context."""
    room = engine.max_len - max(map(len, ids))
    if room < 1:
        raise ReasonError(
            f"a prompt of {max(map(len, ids))} tokens leaves no room to answer in the context "
            f"of {engine.max_len}; lower the difficulty or the number of shots"
        )
    return min(want, room)


def length_budget(tok: Tokenizer, task: str | None, cot: bool, default: int) -> int:
    """Default new-token budget: 1.5x the longest reply among 16 train-split problems of the
    task (never the test problem's own gold reply), plus 8; `default` for plain questions."""
    if not task:
        return default
    name, knobs = world.parse_task(task)
    refs = world.generate(name, 16, seed=7919, split="train", **knobs)
    longest = max(len(tok.encode(world.response(p, cot))) for p in refs)
    return int(1.5 * longest) + 8


# --- votes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vote:
    """Outcome of a vote: the winner, its share of all the weight, and the tally."""

    answer: str | None
    share: float
    tally: dict[str, float]


def vote(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> Vote:
    """Plurality vote over (normalised) answers; None abstains but still counts in the total.

    Majority voting (Wang et al. 2022) uses unit weights; the likelihood-weighted variant
    passes each sample's probability. Ties go to the answer seen first.
    """
    ws = [1.0] * len(answers) if weights is None else list(weights)
    if len(ws) != len(answers):
        raise ReasonError(f"{len(answers)} answers but {len(ws)} weights")
    if any(w < 0 or math.isnan(w) for w in ws):
        raise ReasonError("vote weights must be non-negative numbers")
    tally: dict[str, float] = {}
    for a, w in zip(answers, ws, strict=True):
        if a is not None:
            tally[a] = tally.get(a, 0.0) + w
    total = sum(ws)
    if not tally:
        return Vote(None, 0.0, {})
    order = list(tally)
    best = max(order, key=lambda a: (tally[a], -order.index(a)))
    return Vote(best, tally[best] / total if total > 0 else 0.0, tally)


def sequence_weight(c: Completion) -> float:
    """exp(mean token log-probability): the length-normalised probability of a sample, the
    weighting Wang et al. (2022) found best among the weighted votes."""
    if not c.logprobs:
        return 1.0
    return math.exp(sum(c.logprobs) / len(c.logprobs))


@dataclass
class Result:
    """A strategy's outcome for one question."""

    answer: str | None
    """Normalised final answer (None: no answer found)."""
    traces: list[str]
    """Every response the model wrote for this question, in order."""
    compute: Compute
    confidence: float = 0.0
    """Strategy-specific confidence in [0, 1] (vote share, sequence probability, value)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Extras: stage reached, votes, search statistics."""
