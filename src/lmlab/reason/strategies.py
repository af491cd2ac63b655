"""The reasoning strategies: direct, zero-shot CoT, few-shot CoT, self-consistency, tree of
thoughts and adaptive compute, each a small dataclass with `run(engine, questions)`.

`get_strategy(name, **settings)` and `parse_strategy("sc@8")` build them by name (the CLI and
the server use these). Every strategy batches all its questions into shared engine calls and
returns one `Result` per question with the answer, the traces and the compute spent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from lmlab import bounds
from lmlab.bounds import MAX_DEPTH, MAX_NEW_TOKENS, MAX_SAMPLES
from lmlab.data import world
from lmlab.data.world import ANSWER_PREFIX, Problem
from lmlab.infer.engine import Completion, SamplingParams
from lmlab.reason.base import (
    EngineLike,
    Ledger,
    Question,
    ReasonError,
    Result,
    as_problem,
    chat_ids,
    extract,
    has_verifier,
    is_correct,
    length_budget,
    mean_logprob,
    normalize,
    room_for,
    sequence_weight,
    vote,
)
from lmlab.reason.tot import (
    EVALUATORS,
    GENERATORS,
    SEARCHES,
    EngineThoughts,
    PromptEvaluator,
    RewardFn,
    StateEvaluator,
    bfs,
    dfs,
    evaluation_tokens,
    make_evaluator,
)

# --- shared stages (also the steps of `Adaptive`) ---------------------------------------------


def _problems(questions: Sequence[Question]) -> list[Problem]:
    if isinstance(questions, (str, Problem)) or not questions:
        raise ReasonError("questions must be a non-empty list of world Problems or strings")
    return [as_problem(q) for q in questions]


def _check_task(task: str | None) -> None:
    if task:
        world.parse_task(task)


def _budget_ok(budget: int | None) -> None:
    if budget is not None and (not isinstance(budget, int) or budget < 1):
        raise ReasonError(f"budget must be a positive number of tokens, got {budget!r}")


def sample_chains(
    ledger: Ledger,
    prompts: dict[int, list[int]],
    n: int,
    temperature: float,
    max_new: int,
    seed: int,
    stop: list[str] | None = None,
) -> dict[int, list[Completion]]:
    """`n` completions of each question's prompt (n lowered to what each budget affords; a
    question that cannot afford one sample gets none). Questions sharing n share one call; each
    call gets its own seed (the engine numbers the noise streams of one call, so two calls with
    one seed would repeat each other's samples)."""
    if not prompts:
        return {}
    max_new = room_for(ledger.engine, list(prompts.values()), max_new)
    groups: dict[int, list[int]] = {}
    for qi in prompts:
        m = min(n, ledger.afford(qi, max_new))
        if m >= 1:
            groups.setdefault(m, []).append(qi)
    out: dict[int, list[Completion]] = {qi: [] for qi in prompts}
    for m, qis in groups.items():
        params = SamplingParams(
            max_new_tokens=max_new,
            temperature=temperature,
            n=m,
            seed=seed + 7919 * m,
            stop=stop,
            logprobs=True,
        )
        for qi, comps in zip(
            qis, ledger.generate([(qi, prompts[qi]) for qi in qis], params), strict=True
        ):
            out[qi] = comps
    return out


def direct_prompts(
    tok: Any, problems: Sequence[Problem], idx: Sequence[int]
) -> dict[int, list[int]]:
    return {qi: world.prompt_ids(tok, problems[qi], False) for qi in idx}


def cot_prompts(tok: Any, problems: Sequence[Problem], idx: Sequence[int]) -> dict[int, list[int]]:
    return {qi: world.prompt_ids(tok, problems[qi], True) for qi in idx}


def answers_of(problem: Problem, comps: Sequence[Completion], strict: bool) -> list[str | None]:
    return [normalize(problem, extract(c.text, strict)) for c in comps]


def _result(
    ledger: Ledger,
    qi: int,
    answer: str | None,
    comps: Sequence[Completion],
    confidence: float,
    **info: Any,
) -> Result:
    return Result(answer, [c.text for c in comps], ledger.spent[qi], confidence, dict(info))


@dataclass
class _Common:
    task: str | None = None
    """Task spec the questions come from (sets default lengths and few-shot exemplars)."""
    max_new_tokens: int | None = None
    """New-token cap per response (default: from the task's train-split replies)."""
    budget: int | None = None
    """Most tokens generated per question (None: no cap)."""
    seed: int = 0
    """Sampling seed."""

    def _validate(self) -> None:
        _check_task(self.task)
        _budget_ok(self.budget)
        if self.max_new_tokens is not None:
            _count("max_new_tokens", self.max_new_tokens, MAX_NEW_TOKENS)

    def _len(self, engine: EngineLike, cot: bool) -> int:
        return self.max_new_tokens or length_budget(
            engine.tokenizer, self.task, cot, 256 if cot else 32
        )


# --- strategies -------------------------------------------------------------------------------


@dataclass
class Direct(_Common):
    """Greedy answer with no reasoning; confidence = the answer's probability per token."""

    name = "direct"

    def run(self, engine: EngineLike, questions: Sequence[Question]) -> list[Result]:
        self._validate()
        probs = _problems(questions)
        ledger = Ledger(engine, len(probs), self.budget)
        outs = sample_chains(
            ledger,
            direct_prompts(engine.tokenizer, probs, range(len(probs))),
            1,
            0.0,
            self._len(engine, False),
            self.seed,
        )
        return [
            _result(
                ledger,
                qi,
                (answers_of(probs[qi], c, False) or [None])[0],
                c,
                math.exp(mean_logprob(c)) if c else 0.0,
            )
            for qi, c in outs.items()
        ]


@dataclass
class ZeroShotCoT(_Common):
    """Zero-shot chain of thought in two stages (Kojima et al. 2022): the step-by-step cue
    elicits reasoning (stopped at `Answer:`), then the reasoning followed by `Answer:` is the
    prompt that extracts the answer (one line)."""

    name = "cot"

    def run(self, engine: EngineLike, questions: Sequence[Question]) -> list[Result]:
        self._validate()
        probs = _problems(questions)
        tok = engine.tokenizer
        ledger = Ledger(engine, len(probs), self.budget)
        first = cot_prompts(tok, probs, range(len(probs)))
        reasoning = sample_chains(
            ledger, first, 1, 0.0, self._len(engine, True), self.seed, stop=[ANSWER_PREFIX]
        )
        second = {
            qi: first[qi] + tok.encode(_line_end(c[0].text) + ANSWER_PREFIX)
            for qi, c in reasoning.items()
            if c and engine.max_len - len(first[qi]) - len(tok.encode(c[0].text)) > 8
        }
        answer_len = self.max_new_tokens or length_budget(tok, self.task, False, 32)
        answers = sample_chains(ledger, second, 1, 0.0, answer_len, self.seed, stop=["\n"])
        results = []
        for qi, p in enumerate(probs):
            comps = reasoning[qi] + answers.get(qi, [])
            ans = answers.get(qi)
            answer = normalize(p, ans[0].text.strip()) if ans else None
            results.append(
                _result(ledger, qi, answer, comps, math.exp(mean_logprob(comps)) if comps else 0.0)
            )
        return results


def _line_end(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


@dataclass
class FewShotCoT(_Common):
    """Few-shot chain of thought (Wei et al. 2022): `shots` worked train-split problems as
    earlier chat turns, then the question with the step-by-step cue; greedy. Exemplars that
    would overflow the context are dropped (the number used is in `info`)."""

    name = "fewshot-cot"
    shots: int = 3
    """Worked exemplars in the prompt."""

    def _validate(self) -> None:
        super()._validate()
        _count("shots", self.shots, MAX_SAMPLES)

    def run(self, engine: EngineLike, questions: Sequence[Question]) -> list[Result]:
        self._validate()
        probs = _problems(questions)
        ledger = Ledger(engine, len(probs), self.budget)
        max_new = self._len(engine, True)
        prompts, used = {}, {}
        for qi, p in enumerate(probs):
            prompts[qi], used[qi] = self._prompt(engine, p, max_new)
        outs = sample_chains(ledger, prompts, 1, 0.0, max_new, self.seed)
        return [
            _result(
                ledger,
                qi,
                (answers_of(probs[qi], c, True) or [None])[0],
                c,
                math.exp(mean_logprob(c)) if c else 0.0,
                shots=used[qi],
            )
            for qi, c in outs.items()
        ]

    def _prompt(self, engine: EngineLike, p: Problem, max_new: int) -> tuple[list[int], int]:
        name, knobs = world.parse_task(self.task) if self.task else (p.task, {})
        if name != p.task:
            knobs = {}
        examples = (
            world.generate(name, self.shots, seed=self.seed + 1, split="train", **knobs)
            if (name in world.FAMILIES)
            else []
        )
        room = engine.max_len - min(max_new, engine.max_len // 2)
        for s in range(len(examples), -1, -1):
            msgs: list[Any] = []
            for ex in examples[:s]:
                reply = world.response(ex, True)
                msgs += [*world.messages(ex, True), {"role": "assistant", "content": reply}]
            ids = chat_ids(engine.tokenizer, [*msgs, *world.messages(p, True)])
            if len(ids) <= room or s == 0:
                return ids, s
        raise AssertionError("unreachable")


@dataclass
class SelfConsistency(_Common):
    """Self-consistency (Wang et al. 2022): k chains of thought sampled at a temperature, the
    answer by plurality vote over extracted answers, or by a likelihood-weighted vote
    (`weighted`). Both winners are in `info`; chains cut off before `Answer:` abstain."""

    name = "sc"
    k: int = 8
    """Chains sampled per question."""
    temperature: float = 0.7
    """Sampling temperature of the chains."""
    weighted: bool = False
    """Weight each vote by the chain's probability per token instead of 1."""

    def _validate(self) -> None:
        super()._validate()
        _count("k", self.k, MAX_SAMPLES)
        if not _number("temperature", self.temperature) > 0:
            raise ReasonError(
                f"self-consistency samples need temperature > 0, got {self.temperature}"
            )

    def run(self, engine: EngineLike, questions: Sequence[Question]) -> list[Result]:
        self._validate()
        probs = _problems(questions)
        ledger = Ledger(engine, len(probs), self.budget)
        outs = sample_chains(
            ledger,
            cot_prompts(engine.tokenizer, probs, range(len(probs))),
            self.k,
            self.temperature,
            self._len(engine, True),
            self.seed,
        )
        results = []
        for qi, comps in outs.items():
            answers = answers_of(probs[qi], comps, True)
            plain = vote(answers)
            weighted = vote(answers, [sequence_weight(c) for c in comps])
            win = weighted if self.weighted else plain
            results.append(
                _result(
                    ledger,
                    qi,
                    win.answer,
                    comps,
                    win.share,
                    majority=plain.answer,
                    weighted=weighted.answer,
                    votes=answers,
                    samples=len(comps),
                )
            )
        return results


def _counts_ok(**counts: Any) -> None:
    """Sample counts (k, breadth, evaluator replies) within `bounds.MAX_SAMPLES`: each is a
    number of sequences one request may ask the engine for at once."""
    for name, value in counts.items():
        _count(name, value, MAX_SAMPLES)


def _count(name: str, value: Any, high: int) -> int:
    """`bounds.check_count`, failing as every bad setting of a strategy does: a ReasonError."""
    try:
        return bounds.check_count(name, value, high)
    except bounds.BoundsError as e:
        raise ReasonError(str(e)) from None


def _number(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """`bounds.check_number`, failing with a ReasonError."""
    try:
        return bounds.check_number(name, value, low, high)
    except bounds.BoundsError as e:
        raise ReasonError(str(e)) from None


@dataclass
class TreeOfThoughts(_Common):
    """Tree of thoughts (Yao et al. 2023); see `reason/tot.py`."""

    name = "tot"
    breadth: int = 3
    """States kept per depth (BFS)."""
    k: int = 3
    """Thoughts generated per expanded state."""
    generator: str = "sample"
    """Thought generator: sample or propose."""
    evaluator: str = "value"
    """State evaluator: value (the model rates each state sure/likely/impossible), vote (the
    model picks the most promising state of a step), likelihood (the path's probability: beam
    search), verifier (the world's checker) or reward (a reward model)."""
    n_evaluate: int = 3
    """value: replies sampled per state, their labels summed (3 in Yao et al.'s Game of 24)."""
    n_vote: int = 5
    """vote: replies sampled per step, votes counted per state (5 in Yao et al.'s writing)."""
    eval_tokens: int = 32
    """value, vote: most tokens of one evaluator reply."""
    search: str = "bfs"
    """bfs or dfs."""
    temperature: float = 0.7
    """Temperature of sampled thoughts."""
    max_depth: int | None = None
    """Most lines per solution (default: the task's longest train-split solution + 2)."""
    threshold: float = 0.5
    """DFS: prune states valued below this; accept the first answer valued at least this."""
    reward_fn: RewardFn | None = field(default=None, repr=False)
    """Scorer of (problem, partial solution) for the reward evaluator."""

    def _validate(self) -> None:
        super()._validate()
        _counts_ok(breadth=self.breadth, k=self.k, n_evaluate=self.n_evaluate, n_vote=self.n_vote)
        for value, options, what in (
            (self.generator, GENERATORS, "generator"),
            (self.evaluator, EVALUATORS, "evaluator"),
            (self.search, SEARCHES, "search"),
        ):
            if value not in options:
                raise ReasonError(f"unknown {what} {value!r}; choose from {', '.join(options)}")
        if self.max_depth is not None:
            _count("max_depth", self.max_depth, MAX_DEPTH)
        _count("eval_tokens", self.eval_tokens, MAX_NEW_TOKENS)
        _number("temperature", self.temperature, low=0)
        _number("threshold", self.threshold)

    def shape(self, engine: EngineLike) -> tuple[int, int]:
        """(tokens per thought, most lines): from the task's train-split solutions."""
        if not self.task:
            return self.max_new_tokens or 48, self.max_depth or 12
        name, knobs = world.parse_task(self.task)
        refs = world.generate(name, 16, seed=7919, split="train", **knobs)
        tok = engine.tokenizer
        line = max(len(tok.encode(ln)) for p in refs for ln in p.trace.splitlines())
        depth = max(len(p.trace.splitlines()) for p in refs) + 2
        return self.max_new_tokens or int(1.5 * line) + 4, self.max_depth or depth

    def evaluator_for(self, problems: Sequence[Problem]) -> StateEvaluator:
        """The state evaluator of these settings, checked against the problems it will judge."""
        return make_evaluator(
            self.evaluator,
            problems,
            self.reward_fn,
            n_evaluate=self.n_evaluate,
            n_vote=self.n_vote,
            temperature=self.temperature,
            max_tokens=self.eval_tokens,
            seed=self.seed + 1,
        )

    def expansion_cost(self, engine: EngineLike, problems: Sequence[Problem]) -> int:
        """Most tokens one state's expansion and the evaluation of its children may generate."""
        return self.shape(engine)[0] * self.k + evaluation_tokens(
            self.evaluator_for(problems), self.k
        )

    def run(self, engine: EngineLike, questions: Sequence[Question]) -> list[Result]:
        self._validate()
        probs = _problems(questions)
        ledger = Ledger(engine, len(probs), self.budget)
        return self.run_on(ledger, probs, list(range(len(probs))))

    def run_on(self, ledger: Ledger, probs: Sequence[Problem], idx: list[int]) -> list[Result]:
        """Search for the questions `idx` on an existing ledger (Adaptive's last stage)."""
        evaluate = self.evaluator_for([probs[i] for i in idx])
        line, depth = self.shape(ledger.engine)
        gen = EngineThoughts(
            ledger.engine, self.generator, self.k, line, self.temperature, self.seed
        )
        sub = _SubLedger(ledger, idx)
        sub_probs = [probs[i] for i in idx]
        if self.search == "bfs":
            accept = 1.0 if self.evaluator == "verifier" else math.inf
            found = bfs(sub, sub_probs, gen, evaluate, self.breadth, depth, accept)
        else:
            found = dfs(sub, sub_probs, gen, evaluate, depth, self.threshold)
        results = []
        for j, qi in enumerate(idx):
            best = found[j].best
            answer = normalize(probs[qi], best.answer) if best else None
            info: dict[str, Any] = {"expanded": found[j].expanded, "thoughts": found[j].generated}
            if isinstance(evaluate, PromptEvaluator):  # how many judgements the model gave
                info.update(eval_replies=evaluate.replies[j], eval_parsed=evaluate.parsed[j])
            results.append(
                Result(
                    answer,
                    [best.text] if best else [],
                    ledger.spent[qi],
                    best.value if best else 0.0,
                    info,
                )
            )
        return results


class _SubLedger(Ledger):
    """A view of a ledger for a subset of its questions (local index j = global idx[j])."""

    def __init__(self, parent: Ledger, idx: list[int]) -> None:
        self.parent, self.idx = parent, idx
        self.engine = parent.engine
        self.budget = parent.budget
        self.n_questions = len(idx)
        self.flop_model = parent.flop_model
        self.spent = [parent.spent[i] for i in idx]


@dataclass
class Adaptive(_Common):
    """Adaptive compute: per question, escalate direct -> greedy CoT -> self-consistency ->
    tree of thoughts, stopping as soon as the answer is trusted, never past `budget`.

    An answer is trusted when the family's verifier accepts it (countdown), else when direct's
    or CoT's probability per token reaches its threshold, or when self-consistency's votes agree
    (Aggarwal et al. 2023, adaptive-consistency): chains are sampled `step` at a time until the
    leader holds an `agree` share of at least 3 votes, no longer can be caught, or `k` are
    drawn. The greedy CoT answer counts as a vote, and so does the ToT answer unless verified
    (ToT runs by default only on tasks with a verifier; see `tot`).
    """

    name = "adaptive"
    budget: int | None = 2048
    k: int = 8
    """Most chains sampled in the self-consistency stage."""
    step: int = 2
    """Chains added per self-consistency round."""
    temperature: float = 0.7
    direct_threshold: float = 0.95
    """Trust a direct answer whose probability per token reaches this."""
    cot_threshold: float = 0.98
    """Trust a greedy chain whose probability per token reaches this."""
    agree: float = 0.75
    """Stop sampling once the leading answer holds this share of the votes."""
    tot: bool | None = None
    """Escalate to tree of thoughts when the votes still disagree (None: only on tasks with a
    verifier, where ToT's answer can be checked; elsewhere it is one more vote at a high cost)."""
    breadth: int = 3
    evaluator: str | None = None
    """ToT evaluator (default: verifier where the family has one, else value)."""
    n_evaluate: int = 3
    """ToT value evaluator: replies sampled per state."""
    n_vote: int = 5
    """ToT vote evaluator: replies sampled per step."""

    def _validate(self) -> None:
        super()._validate()
        _counts_ok(
            k=self.k,
            step=self.step,
            breadth=self.breadth,
            n_evaluate=self.n_evaluate,
            n_vote=self.n_vote,
        )
        if not 0 < _number("agree", self.agree) <= 1:
            raise ReasonError(f"agree must be in (0, 1], got {self.agree}")
        _number("temperature", self.temperature, low=0)
        _number("direct_threshold", self.direct_threshold, 0, 1)
        _number("cot_threshold", self.cot_threshold, 0, 1)
        if self.evaluator is not None and self.evaluator not in EVALUATORS:
            raise ReasonError(
                f"unknown evaluator {self.evaluator!r}; choose from {', '.join(EVALUATORS)}"
            )

    def run(self, engine: EngineLike, questions: Sequence[Question]) -> list[Result]:
        self._validate()
        probs = _problems(questions)
        tok = engine.tokenizer
        ledger = Ledger(engine, len(probs), self.budget)
        n = len(probs)
        traces: list[list[Completion]] = [[] for _ in range(n)]
        votes: list[list[str | None]] = [[] for _ in range(n)]
        final: dict[int, tuple[str | None, float, str]] = {}
        verif = [has_verifier(p) for p in probs]

        def settle(qi: int, answer: str | None, conf: float, stage: str) -> None:
            final[qi] = (answer, conf, stage)

        # 1. direct
        outs = sample_chains(
            ledger,
            direct_prompts(tok, probs, range(n)),
            1,
            0.0,
            self.max_new_tokens or length_budget(tok, self.task, False, 32),
            self.seed,
        )
        for qi, comps in outs.items():
            traces[qi] += comps
            if not comps:
                continue
            ans = answers_of(probs[qi], comps, False)[0]
            conf = math.exp(mean_logprob(comps))
            if is_correct(probs[qi], ans) if verif[qi] else conf >= self.direct_threshold:
                settle(qi, ans, conf, "direct")
        # 2. greedy chain of thought (its answer is the first vote)
        cot_len = self._len(engine, True)
        todo = [qi for qi in range(n) if qi not in final]
        prompts = cot_prompts(tok, probs, todo)
        outs = sample_chains(ledger, prompts, 1, 0.0, cot_len, self.seed)
        for qi, comps in outs.items():
            traces[qi] += comps
            if not comps:
                continue
            ans = answers_of(probs[qi], comps, True)[0]
            votes[qi].append(ans)
            conf = math.exp(mean_logprob(comps))
            if ans is not None and (
                is_correct(probs[qi], ans) if verif[qi] else conf >= self.cot_threshold
            ):
                settle(qi, ans, conf, "cot")
        # 3. self-consistency, `step` chains per round until the votes agree
        drawn = dict.fromkeys(range(n), 0)
        rounds = 0
        while True:
            todo = [
                qi
                for qi in prompts
                if qi not in final and drawn[qi] < self.k and ledger.afford(qi, cot_len) >= 1
            ]
            if not todo:
                break
            rounds += 1
            size = {qi: min(self.step, self.k - drawn[qi]) for qi in todo}
            for m in sorted(set(size.values())):
                group = {qi: prompts[qi] for qi in todo if size[qi] == m}
                outs = sample_chains(
                    ledger, group, m, self.temperature, cot_len, self.seed + 104729 * rounds
                )
                for qi, comps in outs.items():
                    if not comps:
                        drawn[qi] = self.k  # the budget cannot pay for another chain
                        continue
                    traces[qi] += comps
                    drawn[qi] += len(comps)
                    answers = answers_of(probs[qi], comps, True)
                    votes[qi] += answers
                    if verif[qi]:
                        good = [a for a in answers if is_correct(probs[qi], a)]
                        if good:
                            settle(qi, good[0], 1.0, "sc")
                        continue
                    if self._agreed(votes[qi], self.k + 1 - len(votes[qi])):
                        v = vote(votes[qi])
                        settle(qi, v.answer, v.share, "sc")
        # 4. tree of thoughts for what is still unsettled
        todo = [qi for qi in range(n) if qi not in final]
        if self.tot is None:
            todo = [qi for qi in todo if verif[qi]]
        if self.tot is not False and todo:
            evaluator = self.evaluator or ("verifier" if all(verif[q] for q in todo) else "value")
            tot = TreeOfThoughts(
                task=self.task,
                budget=self.budget,
                seed=self.seed + 1,
                breadth=self.breadth,
                evaluator=evaluator,
                n_evaluate=self.n_evaluate,
                n_vote=self.n_vote,
                temperature=self.temperature,
            )
            tot._validate()
            cost = tot.expansion_cost(engine, [probs[q] for q in todo])
            idx = [q for q in todo if ledger.afford(q, cost) >= 1]
            for qi, r in zip(idx, tot.run_on(ledger, probs, idx) if idx else [], strict=True):
                if verif[qi] and is_correct(probs[qi], r.answer):
                    settle(qi, r.answer, 1.0, "tot")
                elif r.answer is not None:
                    votes[qi].append(r.answer)
        results = []
        for qi in range(n):
            if qi in final:
                answer, conf, stage = final[qi]
            else:
                v = vote(votes[qi]) if votes[qi] else None
                answer, conf, stage = (
                    (v.answer, v.share, "vote")
                    if v and v.answer
                    else (
                        answers_of(probs[qi], traces[qi][:1], False)[0] if traces[qi] else None,
                        0.0,
                        "fallback",
                    )
                )
            results.append(
                _result(ledger, qi, answer, traces[qi], conf, stage=stage, votes=votes[qi])
            )
        return results

    def _agreed(self, votes: list[str | None], remaining: int) -> bool:
        v = vote(votes)
        if v.answer is None:
            return False
        lead = v.tally[v.answer]
        second = max((c for a, c in v.tally.items() if a != v.answer), default=0.0)
        if lead - second > max(remaining, 0):
            return True  # nobody can catch up
        return lead >= 3 and lead / len(votes) >= self.agree


# --- registry ---------------------------------------------------------------------------------

STRATEGIES: dict[str, type] = {
    "direct": Direct,
    "cot": ZeroShotCoT,
    "fewshot-cot": FewShotCoT,
    "sc": SelfConsistency,
    "sc-weighted": SelfConsistency,
    "tot": TreeOfThoughts,
    "adaptive": Adaptive,
}

_AT = {"sc": "k", "sc-weighted": "k", "fewshot-cot": "shots", "tot": "breadth", "adaptive": "k"}
"""What the number in NAME@N sets."""


def get_strategy(name: str, **settings: Any) -> Any:
    """A strategy by name with settings (unknown names and settings are ReasonErrors);
    settings the strategy does not have are ignored only if None."""
    if name not in STRATEGIES:
        raise ReasonError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    known = {f.name for f in fields(cls)}
    bad = [k for k, v in settings.items() if k not in known and v is not None]
    if bad:
        raise ReasonError(f"strategy {name} has no setting {bad[0]!r}; it has {', '.join(known)}")
    kw = {k: v for k, v in settings.items() if k in known and v is not None}
    if name == "sc-weighted":
        kw["weighted"] = True
    strategy = cls(**kw)
    strategy._validate()
    return strategy


def parse_strategy(spec: str, **settings: Any) -> Any:
    """'sc@8' -> self-consistency with k=8; the number after @ sets k (sc, adaptive), shots
    (fewshot-cot) or breadth (tot)."""
    name, at, count = spec.strip().partition("@")
    if at:
        if name not in _AT:
            if name in STRATEGIES:
                raise ReasonError(f"strategy {name} takes no @N; use it as {name!r}")
            raise ReasonError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        try:
            value = int(count)
        except ValueError:
            raise ReasonError(f"{spec!r}: the number after @ must be an integer") from None
        settings = {**settings, _AT[name]: value}
    return get_strategy(name, **settings)
