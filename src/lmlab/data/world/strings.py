"""`strings`: instruction following on short strings, with many phrasings per instruction.

Operations: reverse, sort, count a letter, upper case, lower case, deduplicate, first k, last k,
repeat k times, length. Every operation has twelve phrasings; three of them (every fourth) are held
out and only ever appear in the test split, so evaluation measures following an instruction
worded in a way never seen in training. Training problems are also worded by a grammar of
synonyms (`extra_phrasings`, half of them), kept at least `MIN_DISTANCE` words from every held-out
phrasing. Worked solutions take the string apart one letter per line (see `solve`).
"""

from __future__ import annotations

import functools
import random
import string
from typing import Any

from lmlab.data.world.base import (
    ANSWER_PREFIX,
    Family,
    Knob,
    Problem,
    Split,
    expand,
    far_from,
    normalize_text,
    phrase,
    split_templates,
)

TEMPLATES: dict[str, list[str]] = {
    "reverse": [
        'Reverse the string "{s}".',
        'Write "{s}" backwards.',
        'Spell "{s}" in reverse order.',
        'What is "{s}" reversed?',
        'Give the letters of "{s}" from last to first.',
        'Turn "{s}" around so it reads from the end.',
        'Print "{s}" with its characters in reverse.',
        'Flip the order of the letters in "{s}".',
        'Please reverse "{s}".',
        '"{s}" backwards, please.',
        'Read "{s}" from right to left.',
        'Reverse the order of the characters in "{s}".',
    ],
    "sort": [
        'Sort the letters of "{s}" alphabetically.',
        'Put the characters of "{s}" in alphabetical order.',
        'Arrange the letters in "{s}" from a to z.',
        'What is "{s}" with its letters sorted?',
        'Rewrite "{s}" with the letters in sorted order.',
        'Order the characters of "{s}" alphabetically.',
        'Sort "{s}" letter by letter, a first.',
        'Alphabetize the letters of "{s}".',
        'Please sort the letters of "{s}".',
        '"{s}" sorted alphabetically, please.',
        'List the letters of "{s}" in alphabetical order.',
        'Sort the characters in "{s}".',
    ],
    "count": [
        'How many times does "{c}" appear in "{s}"?',
        'Count the letter "{c}" in "{s}".',
        'How many "{c}" are there in "{s}"?',
        'What is the number of occurrences of "{c}" in "{s}"?',
        'Count how often "{c}" occurs in "{s}".',
        'In "{s}", how many letters are "{c}"?',
        'Tell me how many "{c}" characters "{s}" contains.',
        'How frequently does "{c}" show up in "{s}"?',
        'Please count "{c}" in "{s}".',
        '"{s}": how many times is "{c}" in it?',
        'Find how many "{c}" letters "{s}" has.',
        'Count the occurrences of "{c}" in "{s}".',
    ],
    "upper": [
        'Convert "{s}" to upper case.',
        'Write "{s}" in capital letters.',
        'Make every letter of "{s}" uppercase.',
        'What is "{s}" in all caps?',
        'Change "{s}" to uppercase.',
        'Capitalize all the letters of "{s}".',
        'Rewrite "{s}" using upper-case letters.',
        'Give "{s}" in block capitals.',
        'Please make "{s}" uppercase.',
        '"{s}" in capital letters, please.',
        'Turn "{s}" into upper case.',
        'Write "{s}" in uppercase letters.',
    ],
    "lower": [
        'Convert "{s}" to lower case.',
        'Write "{s}" in small letters.',
        'Make every letter of "{s}" lowercase.',
        'What is "{s}" in all lowercase?',
        'Change "{s}" to lowercase.',
        'Rewrite "{s}" using lower-case letters.',
        'Turn the capitals in "{s}" into small letters.',
        'Give "{s}" without capital letters.',
        'Please make "{s}" lowercase.',
        '"{s}" in small letters, please.',
        'Turn "{s}" into lower case.',
        'Write "{s}" in lowercase letters.',
    ],
    "dedupe": [
        'Remove repeated letters from "{s}", keeping the first of each.',
        'Delete duplicate characters in "{s}" (keep first occurrences).',
        'Write "{s}" with each letter only once, in order of first appearance.',
        'Drop every repeated character from "{s}", keeping first appearances.',
        'Deduplicate the letters of "{s}", keeping their first occurrences.',
        'Keep only the first occurrence of each letter in "{s}".',
        'Strip the duplicates out of "{s}" so each letter appears once.',
        'Rewrite "{s}" without repeating any letter (first occurrences stay).',
        'Please remove the repeated letters from "{s}".',
        '"{s}" without duplicate letters, please.',
        'Drop the letters of "{s}" that were seen before.',
        'Remove duplicate letters from "{s}", keeping first occurrences.',
    ],
    "first": [
        'Give the first {k} characters of "{s}".',
        'What are the first {k} letters of "{s}"?',
        'Take the first {k} letters of "{s}".',
        'Write the opening {k} characters of "{s}".',
        'Keep only the first {k} characters of "{s}".',
        'Return the first {k} letters in "{s}".',
        'Print the leading {k} characters of "{s}".',
        'Show the start of "{s}", {k} characters long.',
        'Please give the first {k} letters of "{s}".',
        '"{s}": the first {k} characters, please.',
        'Cut "{s}" down to its first {k} letters.',
        'Give the first {k} letters from "{s}".',
    ],
    "last": [
        'Give the last {k} characters of "{s}".',
        'What are the last {k} letters of "{s}"?',
        'Take the last {k} letters of "{s}".',
        'Write the final {k} characters of "{s}".',
        'Keep only the last {k} characters of "{s}".',
        'Return the last {k} letters in "{s}".',
        'Print the trailing {k} characters of "{s}".',
        'Show the end of "{s}", {k} characters long.',
        'Please give the last {k} letters of "{s}".',
        '"{s}": the last {k} characters, please.',
        'Cut "{s}" down to its last {k} letters.',
        'Give the last {k} letters from "{s}".',
    ],
    "repeat": [
        'Repeat "{s}" {k} times.',
        'Write "{s}" {k} times in a row.',
        'Give "{s}" repeated {k} times, without spaces.',
        'Concatenate {k} copies of "{s}".',
        'Say "{s}" {k} times with nothing in between.',
        'Output {k} copies of "{s}" joined together.',
        'Chain "{s}" together {k} times.',
        'Duplicate "{s}" so it appears {k} times back to back.',
        'Please repeat "{s}" {k} times.',
        '"{s}" {k} times in a row, please.',
        'Write out "{s}" {k} times, joined.',
        'Repeat the string "{s}" {k} times.',
    ],
    "length": [
        'How many characters are in "{s}"?',
        'What is the length of "{s}"?',
        'Count the characters of "{s}".',
        'How long is the string "{s}"?',
        'Tell me the number of letters in "{s}".',
        'How many letters does "{s}" have?',
        'Give the character count of "{s}".',
        'What length does "{s}" have, in characters?',
        'Please count the characters in "{s}".',
        '"{s}": how many characters?',
        'Find the number of characters in "{s}".',
        'Count the letters in "{s}".',
    ],
}
OPS = tuple(TEMPLATES)

_GIVE = ["Give", "Write", "Print", "Show", "Return", "Output", "Type", "Tell me", "Produce"]
_LETTERS = ["letters", "characters", "chars", "symbols"]
_STR = ['"{s}"', 'the string "{s}"', 'the word "{s}"']
_FIRST = ["first", "opening", "leading", "initial", "beginning", "starting", "front"]
_LAST = ["last", "final", "trailing", "ending", "closing", "end", "rearmost"]
_START = ["start", "beginning", "front", "head", "left end"]
_END = ["end", "back", "tail", "right end", "close"]
_JOINED = [
    "joined",
    "back to back",
    "one after another",
    "with no spaces",
    "in a row",
    "end to end",
]


def _grammar() -> dict[str, list[str]]:
    """Training-only phrasings of every operation: sentence frames crossed with synonyms, so
    that an operation is recognised by its meaning, not by one wording. A word of a held-out
    phrasing (`final`, `opening`, `caps`, ...) may appear here in other sentences; a sentence
    within two words of a held-out phrasing may not (`MIN_DISTANCE`)."""
    e = expand
    return {
        "reverse": [
            *e(
                "<give> <str> <back>.",
                give=[*_GIVE, "Spell", "Say"],
                str=_STR,
                back=[
                    "backwards",
                    "in reverse",
                    "in reverse order",
                    "reversed",
                    "back to front",
                    "from right to left",
                    "from end to start",
                    "the other way round",
                    "from its last letter to its first",
                    "mirrored",
                ],
            ),
            *e(
                "<rev> <str>.",
                rev=[
                    "Reverse",
                    "Invert",
                    "Mirror",
                    "Flip",
                    "Turn around",
                    "Read backwards",
                    "Spell backwards",
                    "Write backwards",
                ],
                str=_STR,
            ),
            *e(
                "<rev> the order of the <letters> <prep> <str>.",
                rev=["Reverse", "Invert", "Swap", "Turn around", "Mirror", "Flip", "Switch"],
                letters=_LETTERS,
                prep=["in", "of"],
                str=_STR,
            ),
            *e(
                "What is <str> <back>?",
                str=_STR,
                back=[
                    "backwards",
                    "in reverse",
                    "written backwards",
                    "spelled backwards",
                    "read from the end",
                    "back to front",
                    "mirrored",
                    "inverted",
                ],
            ),
            *e(
                "How does <str> read <back>?",
                str=_STR,
                back=["backwards", "from the end", "from right to left", "in reverse"],
            ),
        ],
        "sort": [
            *e(
                "<sort> the <letters> of <str> <order>.",
                sort=["Sort", "Order", "Arrange", "Rearrange", "Put", "Place", "List"],
                letters=_LETTERS,
                str=_STR,
                order=[
                    "alphabetically",
                    "in alphabetical order",
                    "from a to z",
                    "in order",
                    "by the alphabet",
                    "in dictionary order",
                    "a first",
                ],
            ),
            *e(
                "<give> <str> <sorted>.",
                give=_GIVE,
                str=_STR,
                sorted=[
                    "sorted",
                    "in sorted order",
                    "with its letters sorted",
                    "in alphabetical order",
                    "alphabetized",
                    "sorted from a to z",
                    "with the letters in order",
                    "with its characters in order",
                ],
            ),
            *e("<alpha> <str>.", alpha=["Alphabetize", "Alphabetise", "Sort", "Order"], str=_STR),
            *e(
                "What is <str> <sorted>?",
                str=_STR,
                sorted=[
                    "sorted",
                    "in alphabetical order",
                    "alphabetized",
                    "sorted from a to z",
                    "in order",
                    "in dictionary order",
                ],
            ),
        ],
        "count": [
            *e(
                'How many times does "{c}" <appear> in <str>?',
                str=_STR,
                appear=["appear", "occur", "show up", "come up", "turn up", "feature"],
            ),
            *e(
                'How often does "{c}" <appear> in <str>?',
                str=_STR,
                appear=["appear", "occur", "show up", "come up", "turn up"],
            ),
            *e(
                '<count> the <occ> of "{c}" in <str>.',
                str=_STR,
                count=["Count", "Tally", "Count up", "Add up"],
                occ=["occurrences", "appearances", "instances", "copies"],
            ),
            *e(
                '<give> the <number> of "{c}" in <str>.',
                str=_STR,
                give=["Find", "Give", "Tell me", "Report", "Work out"],
                number=[
                    "number of occurrences",
                    "count",
                    "number of copies",
                    "frequency",
                    "number of appearances",
                ],
            ),
            *e(
                'What is the <number> of "{c}" in <str>?',
                str=_STR,
                number=[
                    "count",
                    "number",
                    "tally",
                    "frequency",
                    "number of copies",
                    "number of appearances",
                ],
            ),
            *e(
                'How many "{c}" <letters> <are> in <str>?',
                str=_STR,
                letters=["", "letters", "characters", "symbols"],
                are=["are there", "are", "appear", "occur"],
            ),
        ],
        "upper": [
            *e(
                "<conv> <str> <up>.",
                str=_STR,
                conv=["Convert", "Change", "Turn"],
                up=[
                    "to upper case",
                    "to uppercase",
                    "into capitals",
                    "into capital letters",
                    "into uppercase",
                    "into block capitals",
                    "to all caps",
                ],
            ),
            *e(
                "<give> <str> <up>.",
                str=_STR,
                give=[*_GIVE, "Rewrite", "Put", "Spell"],
                up=[
                    "in capitals",
                    "in capital letters",
                    "in all caps",
                    "in block capitals",
                    "in uppercase",
                    "in upper-case letters",
                    "in big letters",
                    "all in capitals",
                ],
            ),
            *e(
                "What is <str> <up>?",
                str=_STR,
                up=[
                    "in capitals",
                    "in upper case",
                    "in uppercase",
                    "capitalized",
                    "in capital letters",
                    "in big letters",
                    "in block letters",
                ],
            ),
            *e(
                "<cap> <all> <letters> <of> <str>.",
                str=_STR,
                cap=["Capitalize", "Capitalise", "Uppercase"],
                all=["all the", "all", "the"],
                letters=_LETTERS,
                of=["of", "in"],
            ),
        ],
        "lower": [
            *e(
                "<conv> <str> <down>.",
                str=_STR,
                conv=["Convert", "Change", "Turn"],
                down=[
                    "to lower case",
                    "to lowercase",
                    "into small letters",
                    "into lowercase",
                    "into lower-case letters",
                    "to all lowercase",
                ],
            ),
            *e(
                "<give> <str> <down>.",
                str=_STR,
                give=[*_GIVE, "Rewrite", "Put", "Spell"],
                down=[
                    "in small letters",
                    "in lowercase",
                    "in lower-case letters",
                    "with no capitals",
                    "without capitals",
                    "without any capital letters",
                    "in all lowercase",
                    "all in small letters",
                    "in little letters",
                ],
            ),
            *e(
                "What is <str> <down>?",
                str=_STR,
                down=[
                    "in small letters",
                    "in lower case",
                    "in lowercase",
                    "without capitals",
                    "with no capital letters",
                    "in little letters",
                ],
            ),
            *e(
                "<low> <all> <letters> <of> <str>.",
                str=_STR,
                low=["Lowercase", "Uncapitalize", "Decapitalize"],
                all=["all the", "all", "the"],
                letters=_LETTERS,
                of=["of", "in"],
            ),
        ],
        "dedupe": [
            *e(
                "<remove> <rep> <letters> from <str>, keeping <firsts>.",
                str=_STR,
                remove=["Remove", "Delete", "Drop", "Strip", "Cut", "Take out", "Erase"],
                rep=["repeated", "duplicate", "doubled", "recurring", "repeating"],
                letters=_LETTERS,
                firsts=[
                    "the first of each",
                    "first occurrences",
                    "first appearances",
                    "the first copy of each",
                    "the earliest of each",
                ],
            ),
            *e(
                "<write> <str> with <once>.",
                str=_STR,
                write=["Write", "Rewrite", "Give", "Print", "Show", "Return"],
                once=[
                    "each letter only once",
                    "every letter once",
                    "no letter twice",
                    "no repeated letters",
                    "no duplicates",
                    "duplicates removed",
                ],
            ),
            *e(
                "Keep only the <first> <occ> of each <letter> in <str>.",
                str=_STR,
                first=["first", "earliest"],
                occ=["occurrence", "appearance", "copy"],
                letter=["letter", "character", "symbol"],
            ),
            *e("<dedupe> <str>.", dedupe=["Deduplicate", "De-duplicate", "Dedupe"], str=_STR),
        ],
        "first": [
            *e(
                "<give> the <first> {k} <letters> <of> <str>.",
                str=_STR,
                give=[*_GIVE, "Take", "Keep", "Copy", "Extract"],
                first=_FIRST,
                letters=_LETTERS,
                of=["of", "from", "in"],
            ),
            *e(
                "What are the <first> {k} <letters> of <str>?",
                str=_STR,
                first=_FIRST,
                letters=_LETTERS,
            ),
            *e(
                "<give> the {k} <letters> at the <start> of <str>.",
                str=_STR,
                give=_GIVE,
                letters=_LETTERS,
                start=_START,
            ),
            *e(
                "<give> the <start> of <str>, {k} <letters> long.",
                str=_STR,
                give=_GIVE,
                letters=_LETTERS,
                start=_START,
            ),
        ],
        "last": [
            *e(
                "<give> the <last> {k} <letters> <of> <str>.",
                str=_STR,
                give=[*_GIVE, "Take", "Keep", "Copy", "Extract"],
                last=_LAST,
                letters=_LETTERS,
                of=["of", "from", "in"],
            ),
            *e(
                "What are the <last> {k} <letters> of <str>?",
                str=_STR,
                last=_LAST,
                letters=_LETTERS,
            ),
            *e(
                "<give> the {k} <letters> at the <end> of <str>.",
                str=_STR,
                give=_GIVE,
                letters=_LETTERS,
                end=_END,
            ),
            *e(
                "<give> the <end> of <str>, {k} <letters> long.",
                str=_STR,
                give=_GIVE,
                letters=_LETTERS,
                end=_END,
            ),
        ],
        "repeat": [
            *e(
                "<rep> <str> {k} times<joined>.",
                str=_STR,
                rep=["Repeat", "Write", "Say", "Print", "Type", "Output", "Copy", "Give"],
                joined=["", *(", " + j for j in _JOINED)],
            ),
            *e("<give> {k} copies of <str> <joined>.", str=_STR, give=_GIVE, joined=_JOINED),
            *e(
                "<join> {k} copies of <str>.",
                str=_STR,
                join=[
                    "Join",
                    "Chain",
                    "Glue together",
                    "String together",
                    "Combine",
                    "Concatenate",
                ],
            ),
            *e(
                "<dup> <str> so that it appears {k} times <joined>.",
                str=_STR,
                dup=["Duplicate", "Repeat", "Copy", "Write"],
                joined=_JOINED,
            ),
        ],
        "length": [
            *e(
                "How many <letters> <are> <prep> <str>?",
                str=_STR,
                letters=_LETTERS,
                are=["are", "are there"],
                prep=["in", "inside", "making up"],
            ),
            *e(
                "What is the <length> of <str>?",
                str=_STR,
                length=[
                    "length",
                    "size",
                    "character count",
                    "letter count",
                    "number of letters",
                    "number of characters",
                ],
            ),
            *e(
                "<count> the <letters> <prep> <str>.",
                str=_STR,
                count=["Count", "Tally", "Count up", "Add up"],
                letters=_LETTERS,
                prep=["in", "of", "making up"],
            ),
            *e(
                "<give> the <length> of <str>.",
                str=_STR,
                give=_GIVE,
                length=["length", "size", "character count", "letter count"],
            ),
        ],
    }


MIN_DISTANCE = 3
"""Word edits between any training-only phrasing and every held-out phrasing (of any
operation: `Count the letters in "{s}".` is a held-out `length` phrasing, one word from a
`count` one)."""
_HELD = [t for ts in TEMPLATES.values() for t in split_templates(ts)["test"]]
GRAMMAR_SAMPLE = 300
"""Phrasings kept per operation: a fixed sample of the grammar's (thousands for some)."""


@functools.cache
def extra_phrasings() -> dict[str, list[str]]:
    """Training-only phrasings per operation (see `_grammar`; built on first use)."""
    held = [t for ts in TEMPLATES.values() for t in split_templates(ts)["test"]]
    return {
        op: far_from(random.Random(op).sample(ts, min(len(ts), GRAMMAR_SAMPLE)), held, MIN_DISTANCE)
        for op, ts in _grammar().items()
    }


def _peel(s: str, from_end: bool = False) -> list[tuple[str, str]]:
    """(what is left, the letter taken) for each step of taking `s` apart one letter at a time,
    from the start or from the end."""
    steps = []
    for i in range(len(s)):
        rest = s[: len(s) - i] if from_end else s[i:]
        steps.append((rest, rest[-1] if from_end else rest[0]))
    return steps


def solve(op: str, s: str, k: int, c: str) -> tuple[str, list[str]]:
    """The answer of operation `op` and the lines of its worked solution.

    Solutions take the string apart one letter per line: each line restates what is left (a
    copy of the line above minus one letter), names the letter taken (read next to where it is
    written) and updates the result built so far. Every step is a short copy or a look at a
    neighbour, which is what a small model can learn; jumping to the k-th letter of a string
    elsewhere in the context is not. Repetition writes one copy per line instead."""
    if op == "reverse":
        ans = s[::-1]
        lines = ["Take the letters from the end."]
        lines += [
            f"{rest}: last {ch}, so far {ans[: i + 1]}"
            for i, (rest, ch) in enumerate(_peel(s, from_end=True))
        ]
        return ans, lines
    if op == "sort":
        ans, rest, lines = "", s, ["Take the smallest letter each time."]
        while rest:
            ch = min(rest)
            ans += ch
            lines.append(f"{rest}: smallest {ch}, so far {ans}")
            rest = rest.replace(ch, "", 1)
        return ans, lines
    if op == "count":
        # the letter counted is restated on every line, next to the letter it is compared with
        n, lines = 0, [f'Check each letter against "{c}".']
        for rest, ch in _peel(s):
            n += ch == c
            lines.append(f"{rest}: first {ch}, is it {c}? {'yes' if ch == c else 'no'}, count {n}")
        return str(n), lines
    if op in ("upper", "lower"):
        ans = s.upper() if op == "upper" else s.lower()
        lines = [f"Change each letter to {op} case."]
        lines += [
            f"{rest}: first {ch}, {op} {ans[i]}, so far {ans[: i + 1]}"
            for i, (rest, ch) in enumerate(_peel(s))
        ]
        return ans, lines
    if op == "dedupe":
        ans, lines = "", ["Keep each letter the first time it comes."]
        for rest, ch in _peel(s):
            new = ch not in ans
            ans += ch if new else ""
            lines.append(f"{rest}: first {ch}, {'new' if new else 'seen'}, so far {ans}")
        return ans, lines
    if op == "first":
        ans = s[:k]
        lines = [f"Take {k} letters from the start."]
        lines += [
            f"{rest}: first {ch}, so far {ans[: i + 1]}, {i + 1} taken"
            for i, (rest, ch) in enumerate(_peel(s)[:k])
        ]
        return ans, lines
    if op == "last":
        ans = s[-k:]
        lines = [f"Take {k} letters from the end."]
        lines += [
            f"{rest}: last {ch}, so far {s[len(s) - i - 1 :]}, {i + 1} taken"
            for i, (rest, ch) in enumerate(_peel(s, from_end=True)[:k])
        ]
        return ans, lines
    if op == "repeat":
        # One copy per line, numbered "i of k", each appended to the result so far: the model
        # never has to count copies inside a repeated pattern (the one-line layout
        # "Write abc 3 times: abc abc abc." was never learned).
        lines = [f"Write {s} {k} times, one copy at a time."]
        lines += [f"copy {i} of {k}: {s}, so far {s * i}" for i in range(1, k + 1)]
        return s * k, lines
    lines = ["Count the letters one by one."]
    lines += [f"{rest}: count {i + 1}" for i, (rest, _) in enumerate(_peel(s))]
    return str(len(s)), lines


def make(rng: random.Random, knobs: dict[str, Any], split: Split) -> Problem:
    op = knobs["op"] if knobs["op"] != "any" else rng.choice(OPS)
    n = knobs["length"]
    # a small alphabet per string so that sort, count and dedupe have something to do
    alphabet = rng.sample(string.ascii_lowercase, rng.randint(max(2, n // 2), n))
    s = "".join(rng.choice(alphabet) for _ in range(n))
    if op == "lower":
        s = s.upper()
    k = rng.randint(1, n - 1) if op in ("first", "last") else rng.randint(2, 3)
    c = rng.choice(s) if rng.random() < 0.85 else rng.choice(string.ascii_lowercase)
    answer, lines = solve(op, s, k, c)
    question = phrase(rng, TEMPLATES[op], split, extra_phrasings()[op]).format(s=s, k=k, c=c)
    key = f"{op}|{s}" + (f"|{k}" if op in ("first", "last", "repeat") else "")
    key += f"|{c}" if op == "count" else ""
    trace = "\n".join([*lines, f"{ANSWER_PREFIX} {answer}"])
    return Problem("strings", question, answer, trace, key, {"op": op})


FAMILY = Family(
    name="strings",
    doc="instruction following on strings (10 operations, held-out phrasings)",
    knobs={
        "length": Knob("characters in the input string", 6, lo=2, hi=16, mix=(3, 8)),
        "op": Knob("operation", "any", choices=("any", *OPS)),
    },
    primary="length",
    make=make,
    normalize=normalize_text,
)
