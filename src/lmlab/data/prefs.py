"""Preference data: the `{"prompt", "chosen", "rejected"}` JSONL format, and the prompts and
reply ids every preference learner reads it with.

Rows may carry extra fields (`task`, `gold_chosen`, `flipped`, `source`, ...), kept as `meta`.
Who writes the rows — the world's gold annotator or a person — is `lmlab.eval.annotate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.data import world
from lmlab.data.jsonl import read_jsonl
from lmlab.data.tokenizer import Tokenizer

DEFAULT_MARGIN = 0.02
"""Gold difference below which the annotator has no preference (40 characters of brevity)."""


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


def chat_prompt_ids(tok: Tokenizer, prompt: str) -> list[int]:
    """Token ids of a single-turn chat prompt, ending with <|assistant|>."""
    return tok.encode_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)[0]


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
