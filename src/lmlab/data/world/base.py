"""What every task family shares: the problem record, difficulty knobs, the train/test split,
what a task gives (the prompt of a problem, its gold reply, the grading of a reply) and answer
extraction.

A family is a `Family` record: its knobs, a `make` function drawing one problem from a seeded
`random.Random`, a verifier, an answer normaliser and, where it has one, a step checker for
partial solutions. The input side is the same for every family — a problem is asked as its
question (`prompt`, `messages`, `prompt_ids`) and answered by its gold reply (`response`) — and
the output side is the family's: `Family.grade` (extracted answer, normalised prediction and
gold, verdict), `Family.reward` (0/1 for RL) and `Family.gold_score` (the hidden judge of
preferences). Splits are decided twice over, so that a test problem is new in both content and
wording:

- by content: a problem belongs to the split its canonical key (the numbers and operations, never
  names or wording) hashes into, so train and test never share a problem;
- by phrasing: every family's instruction templates are divided (every fourth one is held out),
  and test problems are always worded with held-out templates.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lmlab.data.tokenizer import Message, Tokenizer

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

TEST_FRACTION = 0.2
"""Fraction of the problem space (by key hash) reserved for evaluation."""

STEP_BY_STEP = "Think step by step."
"""What a user appends to ask for a worked solution (SFT data and `--strategy cot` use it)."""

ANSWER_PREFIX = "Answer:"
"""Every worked solution ends with a line `Answer: <answer>`."""

BREVITY_CHARS = 400
"""Length at which a reply's brevity bonus in the gold preference reaches 0."""


class WorldError(ValueError):
    """A bad task name, task spec or difficulty setting (shown to the user as one line)."""


@dataclass(frozen=True)
class Problem:
    """One generated problem with its gold answer and a worked solution."""

    task: str
    """Family name (arith, chain, ...)."""
    question: str
    """The instruction as a user would write it."""
    answer: str
    """Canonical gold answer (what a direct response says)."""
    trace: str
    """Step-by-step solution ending with the line `Answer: <answer>`."""
    key: str
    """Canonical identity of the problem (content only); decides its split."""
    data: dict[str, Any] = field(default_factory=dict, compare=False)
    """Structured inputs the verifier needs (numbers, target, ...)."""


@dataclass(frozen=True)
class Knob:
    """One difficulty or content setting of a family."""

    doc: str
    default: int | str
    lo: int = 0
    """Smallest allowed value (integer knobs)."""
    hi: int = 0
    """Largest allowed value (integer knobs)."""
    choices: tuple[str, ...] = ()
    """Allowed values (choice knobs); 'any' draws one per problem."""
    mix: tuple[int, int] | None = None
    """Range drawn from, per problem, in the pretraining and SFT mixes (integer knobs)."""

    def check(self, family: str, name: str, value: int | str) -> int | str:
        """The value converted to the knob's type, or WorldError if it is out of range."""
        if self.choices:
            if value not in self.choices:
                raise WorldError(
                    f"{family}: {name} must be one of {', '.join(self.choices)}, got {value!r}"
                )
            return str(value)
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise WorldError(f"{family}: {name} must be an integer, got {value!r}") from None
        if not self.lo <= v <= self.hi:
            raise WorldError(f"{family}: {name} must be in {self.lo}..{self.hi}, got {v}")
        return v


Maker = Callable[[random.Random, dict[str, Any], Split], Problem]
StepCheck = Callable[[Problem, Sequence[str]], bool]
"""Whether the lines of a partial worked solution are all valid steps of a problem."""


@dataclass(frozen=True)
class Grade:
    """A reply graded against its problem."""

    extracted: str
    """The answer found in the reply (`extract_answer`)."""
    pred: str
    """The extracted answer, normalised."""
    gold: str
    """The gold answer, normalised."""
    correct: bool
    """The family's verdict on the extracted answer."""


@dataclass(frozen=True)
class Family:
    """A task family: generator, knobs, verifier, answer normaliser and step checker."""

    name: str
    doc: str
    knobs: dict[str, Knob]
    primary: str
    """The knob a bare value in a task spec sets (`arith:3` means digits=3)."""
    make: Maker
    """Draw one problem (of either content split; `generate` rejects the wrong one)."""
    normalize: Callable[[str], str]
    """Canonical form of an answer string (exact match compares normalised strings)."""
    verify: Callable[[Problem, str], bool] | None = None
    """Whether an answer is correct, judged from the problem's data alone (no gold answer
    needed); None means normalised equality with the gold answer."""
    numeric: bool = False
    """Answers are integers (continuous metric: per-digit accuracy, right-aligned)."""
    step_check: StepCheck | None = None
    """Checks the lines of a partial worked solution (tree of thoughts' verifier evaluator);
    None: the family has no step checker."""

    @property
    def verifies_without_gold(self) -> bool:
        """Whether an answer can be checked without the gold one (countdown: any expression
        that reaches the target with the given numbers is right)."""
        return self.verify is not None

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether `answer` (an answer, not a whole reply) solves `problem`."""
        if self.verify is not None:
            return self.verify(problem, answer)
        return self.normalize(answer) == self.normalize(problem.answer)

    def grade(self, problem: Problem, reply: str) -> Grade:
        """The answer in a model's reply, normalised beside the gold answer, and the verdict."""
        extracted = extract_answer(reply)
        return Grade(
            extracted,
            self.normalize(extracted),
            self.normalize(problem.answer),
            self.check(problem, extracted),
        )

    def reward(self, problem: Problem, reply: str) -> float:
        """The verifiable RL reward of a reply: 1 if its answer is right, else 0."""
        return float(self.grade(problem, reply).correct)

    def gold_score(self, problem: Problem, reply: str) -> float:
        """The world's hidden gold preference, a stand-in for a careful human labeller:

            gold = correct + 0.2 * final_answer_line + 0.2 * brevity

        `correct` (0/1) is the verdict on the extracted answer, `final_answer_line` (0/1)
        whether the reply's last non-empty line starts with `Answer:`, and `brevity` =
        clip(1 - characters / BREVITY_CHARS, 0, 1). Correctness dominates (1 > 0.4): a right
        answer always beats a wrong one, and between equally right answers the one with a clear
        final line and fewer words wins."""
        lines = [ln for ln in reply.strip().splitlines() if ln.strip()]
        answer_line = float(bool(lines) and lines[-1].strip().startswith(ANSWER_PREFIX))
        brevity = min(1.0, max(0.0, 1.0 - len(reply) / BREVITY_CHARS))
        return self.reward(problem, reply) + 0.2 * answer_line + 0.2 * brevity

    def resolve(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Defaults updated with `overrides`, every value checked against its knob."""
        for name in overrides:
            if name not in self.knobs:
                raise WorldError(
                    f"{self.name}: unknown setting {name!r}; it has {', '.join(self.knobs)}"
                )
        return {
            name: knob.check(self.name, name, overrides.get(name, knob.default))
            for name, knob in self.knobs.items()
        }


# --- what a problem asks: the same for every family (and for a plain question) ---------------


def prompt(problem: Problem, step_by_step: bool = False) -> str:
    """The user's request: the question, followed by STEP_BY_STEP when a worked solution is
    wanted (on its own line after a multi-line question such as an ICL episode)."""
    if not step_by_step:
        return problem.question
    sep = "\n" if "\n" in problem.question else " "
    return f"{problem.question}{sep}{STEP_BY_STEP}"


def messages(problem: Problem, step_by_step: bool = False) -> list[Message]:
    """The one-turn chat asking `problem`."""
    return [{"role": "user", "content": prompt(problem, step_by_step)}]


def response(problem: Problem, step_by_step: bool = False) -> str:
    """The gold reply: the worked solution when asked to think step by step, else the answer."""
    return problem.trace if step_by_step else problem.answer


def prompt_ids(tok: Tokenizer, problem: Problem, step_by_step: bool = False) -> list[int]:
    """Token ids of the one-turn chat asking `problem`, ending with the assistant role token
    (the model writes the reply next)."""
    return tok.encode_chat(messages(problem, step_by_step), add_generation_prompt=True)[0]


def key_split(task: str, key: str) -> Split:
    """The split a problem belongs to, by a hash of its canonical key."""
    h = int(hashlib.sha256(f"{task}|{key}".encode()).hexdigest()[:8], 16) / 16**8
    return "test" if h < TEST_FRACTION else "train"


def held_out(index: int) -> bool:
    """Whether instruction template number `index` is reserved for the test split."""
    return index % 4 == 3


def phrase(
    rng: random.Random, templates: list[str], split: Split, extra: Sequence[str] = ()
) -> str:
    """A template of the split's own phrasing (every fourth one is held out for test); `extra`
    are further phrasings that only ever word training problems (half of them, when given)."""
    if split == "train" and extra and rng.random() < 0.5:
        return rng.choice(extra)  # half the time, however long the extra list
    pool = [t for i, t in enumerate(templates) if held_out(i) == (split == "test")]
    return rng.choice(pool)


def split_templates(templates: list[str], extra: Sequence[str] = ()) -> dict[Split, list[str]]:
    """Train and test templates of a list plus its training-only `extra` (for tests and
    documentation)."""
    return {
        "train": [t for i, t in enumerate(templates) if not held_out(i)] + list(extra),
        "test": [t for i, t in enumerate(templates) if held_out(i)],
    }


def expand(frame: str, **slots: Sequence[str]) -> list[str]:
    """Every filling of the `<slot>`s in `frame` with the given alternatives, in order
    (`expand("<v> it <adv>.", v=["Do", "Say"], adv=["now"])` -> ["Do it now.", "Say it now."])."""
    out = [frame]
    for name, values in slots.items():
        out = [t.replace(f"<{name}>", v) for t in out for v in values]
    # an empty alternative leaves no double space and no space before punctuation
    return [re.sub(r" ([.,?!:])", r"\1", " ".join(t.split())) for t in out]


def word_distance(a: str, b: str) -> int:
    """Levenshtein distance between two phrasings counted in words (punctuation and quotes
    ignored, placeholders such as {s} kept as words)."""
    return _distance(_words(a), _words(b))


def _distance(x: list[str], y: list[str]) -> int:
    row = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        prev, row[0] = row[0], i
        for j, wy in enumerate(y, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (wx != wy))
    return row[-1]


def _words(text: str) -> list[str]:
    return re.findall(r"\{[a-z]+\}|[a-z0-9-]+", text.lower())


def far_from(candidates: Iterable[str], held: Iterable[str], min_distance: int) -> list[str]:
    """The candidates (deduplicated, in order) at least `min_distance` words away from every
    held-out phrasing: training phrasings may share words with test ones, never a sentence
    within a word or two of one."""
    held_words = [(_words(h), set(_words(h))) for h in held]
    out: list[str] = []
    for c in dict.fromkeys(candidates):
        w = _words(c)
        ws = set(w)
        # every distinct word of one side missing from the other costs an edit: a lower bound
        # of the distance that settles most pairs without the quadratic comparison
        if all(
            max(len(ws - hs), len(hs - ws)) >= min_distance or _distance(w, h) >= min_distance
            for h, hs in held_words
        ):
            out.append(c)
    return out


_ANSWER_RE = re.compile(re.escape(ANSWER_PREFIX) + r"[ \t]*([^\n]*)")


def extract_answer(text: str) -> str:
    """The answer in a model's response: after the last `Answer:` if there is one (worked
    solutions), else the first non-empty line (direct answers)."""
    found = _ANSWER_RE.findall(text)
    if found:
        return found[-1].strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def normalize_int(answer: str) -> str:
    """'1,234 ' -> '1234', '-07' -> '-7'; anything that is not an integer is left stripped."""
    s = answer.strip().rstrip(".").replace(",", "").replace(" ", "")
    if re.fullmatch(r"[+-]?\d+", s):
        return str(int(s))
    return s


def normalize_text(answer: str) -> str:
    """Strip whitespace, a trailing full stop and surrounding quotes."""
    s = answer.strip().removesuffix(".")
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'`":
        s = s[1:-1]
    return s
