"""Preference data: rows in TRL's preference formats, and the prompts and reply ids every
preference learner reads them with.

A row is `{"prompt", "chosen", "rejected"}` (explicit prompt) or `{"chosen", "rejected"}`
(implicit prompt: the part both share), either standard (strings) or conversational (lists of
`{"role", "content"}` messages). A standard prompt is one user turn and a standard reply the
assistant's answer to it (lmlab's own preference files are written so, by `lmlab prefs` and
`lmlab label`); a conversational prompt is the conversation so far and each reply one
assistant message. Rows may carry extra fields (`task`, `gold_chosen`, `flipped`, `source`,
...), kept as `meta`. Who writes the rows — the world's gold annotator or a person — is
`lmlab.eval.annotate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.data import world
from lmlab.data.chats import check_messages
from lmlab.data.jsonl import read_jsonl
from lmlab.data.tokenizer import Message, Tokenizer

DEFAULT_MARGIN = 0.02
"""Gold difference below which the annotator has no preference (40 characters of brevity)."""


class PrefsError(ValueError):
    """Unusable preference data (shown as one line, with file and line number)."""


@dataclass(frozen=True)
class Pair:
    """A preference: two assistant replies to one prompt, the chosen one better. `prompt` is a
    user's message (standard rows) or the conversation the replies continue."""

    prompt: str | list[Message]
    chosen: str
    rejected: str
    meta: dict[str, Any]

    def to_json(self) -> str:
        """The pair as a JSONL row, in the format it was read in (explicit prompt)."""
        chosen: str | list[Message] = self.chosen
        rejected: str | list[Message] = self.rejected
        if isinstance(self.prompt, list):
            chosen = [{"role": "assistant", "content": self.chosen}]
            rejected = [{"role": "assistant", "content": self.rejected}]
        return json.dumps(
            {"prompt": self.prompt, "chosen": chosen, "rejected": rejected, **self.meta}
        )


def chat_prompt_ids(tok: Tokenizer, prompt: str | list[Message]) -> list[int]:
    """Token ids of a chat prompt (a user's message, or a conversation), ending with
    <|assistant|>."""
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    return tok.encode_chat(prompt, add_generation_prompt=True)[0]


def response_ids(tok: Tokenizer, response: str) -> list[int]:
    """Token ids of a reply as the model writes it: the text, then <|end|>."""
    return [*tok.encode(response), tok.end_id]


def world_prompts(tasks: list[str], n: int, seed: int, split: str = "train") -> list[world.Problem]:
    """`n` world problems interleaved evenly over task specs (`chain`, `arith:3`, ...)."""
    if not tasks:
        raise PrefsError("no tasks given; e.g. --tasks chain strings")
    specs = [world.parse_task(t) for t in tasks]
    per_task = -(-n // len(specs))
    groups = [world.generate(name, per_task, seed, split, **knobs) for name, knobs in specs]
    return [p for row in zip(*groups, strict=True) for p in row][:n]


def _shared_text(chosen: str, rejected: str) -> int:
    """Length of the implicit prompt of two standard replies: their common prefix, less a
    trailing space (which stays with the replies, as TRL's `extract_prompt` keeps it)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    return n - 1 if n > 0 and chosen[n - 1] == " " else n


def _reply(messages: list[Message], where: str, what: str) -> str:
    """The text of a conversational reply: exactly one assistant message."""
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = ", ".join(m["role"] for m in messages) or "nothing"
        raise PrefsError(
            f"{where}: {what} must be one assistant message after the prompt, got {roles}"
        )
    return messages[0]["content"]


def read_pair(row: Any, where: str) -> Pair:
    """One JSONL row in a preference format of TRL's as a Pair, or PrefsError saying what is
    wrong at `where` (a `file:line`)."""
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        raise PrefsError(f"{where}: needs fields chosen and rejected (and optionally prompt)")
    chosen, rejected = row["chosen"], row["rejected"]
    if chosen == rejected:
        raise PrefsError(f"{where}: chosen and rejected are identical")
    meta = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
    fields = [row["prompt"]] if "prompt" in row else []
    if all(isinstance(v, str) for v in [*fields, chosen, rejected]):
        prompt = row.get("prompt")
        if prompt is None:  # implicit prompt: what the two texts share
            n = _shared_text(chosen, rejected)
            prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    elif all(isinstance(v, list) for v in [*fields, chosen, rejected]):
        c = check_messages(chosen, where, "chosen", PrefsError)
        r = check_messages(rejected, where, "rejected", PrefsError)
        if "prompt" in row:
            prompt = check_messages(row["prompt"], where, "prompt", PrefsError)
        else:  # implicit prompt: the messages the two conversations share
            n = 0
            while n < min(len(c), len(r)) and c[n] == r[n]:
                n += 1
            prompt, c, r = c[:n], c[n:], r[n:]
            if not prompt:
                raise PrefsError(
                    f"{where}: chosen and rejected share no leading message (the prompt)"
                )
        if prompt[-1]["role"] == "assistant":
            raise PrefsError(
                f"{where}: the prompt ends with an assistant message (a reply starts a new one)"
            )
        chosen, rejected = _reply(c, where, "chosen"), _reply(r, where, "rejected")
    else:
        raise PrefsError(
            f"{where}: prompt, chosen and rejected must all be strings or all lists of messages"
        )
    if not chosen.strip() or not rejected.strip():
        raise PrefsError(f"{where}: empty response")
    return Pair(prompt, chosen, rejected, meta)


def read_prefs(path: Path) -> list[Pair]:
    """Preference pairs from JSONL; malformed rows raise PrefsError naming file and line."""
    return [read_pair(row, where) for where, row in read_jsonl(path, PrefsError)]
