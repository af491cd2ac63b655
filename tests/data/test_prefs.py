"""Preference rows in TRL's formats: explicit and implicit prompts, standard and conversational,
read into pairs whose prompt and reply tokens are exactly what the learners score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lmlab.data.prefs import (
    Pair,
    PrefsError,
    chat_prompt_ids,
    read_pair,
    read_prefs,
    response_ids,
)
from lmlab.data.tokenizer import ROLES, char_tokenizer
from lmlab.model.scoring import response_mask
from tests.conftest import TRL_PREFERENCE_FORMATS, trl_preference_row

USER = {"role": "user", "content": "What color is the sky?"}
BLUE = {"role": "assistant", "content": "It is blue."}
GREEN = {"role": "assistant", "content": "It is green."}

EXPECTED = {
    "standard": Pair("The sky is", " blue.", " green.", {}),
    "standard-implicit": Pair("The sky is", " blue.", " green.", {}),
    "conversational": Pair([USER], "It is blue.", "It is green.", {}),
    "conv-implicit": Pair([USER], "It is blue.", "It is green.", {}),
}


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fmt", TRL_PREFERENCE_FORMATS)
def test_each_trl_format_reads_as_prompt_and_two_replies(fmt: str, tmp_path: Path) -> None:
    [pair] = read_prefs(_write(tmp_path / "p.jsonl", [trl_preference_row(fmt)]))
    assert pair == EXPECTED[fmt]
    # written back (explicit prompt, same standard/conversational form) it reads the same
    again = read_prefs(_write(tmp_path / "again.jsonl", [pair.to_json()]))
    assert again == [pair]


@pytest.mark.parametrize("fmt", TRL_PREFERENCE_FORMATS)
def test_scored_tokens_are_the_replies_only(fmt: str, tmp_path: Path) -> None:
    """The tokens DPO scores (its response mask over prompt + reply) decode to the reply and its
    <|end|>; the prompt is the chat template's rendering of the prompt."""
    tok = char_tokenizer(["What color is the sky? The sky is blue. It is green."])
    [pair] = read_prefs(_write(tmp_path / "p.jsonl", [trl_preference_row(fmt)]))
    prompt = chat_prompt_ids(tok, pair.prompt)
    user = "What color is the sky?" if fmt.startswith("conv") else "The sky is"
    assert tok.decode(prompt, skip_special=False) == f"<|bos|><|user|>{user}<|end|><|assistant|>"
    seqs = [prompt + response_ids(tok, r) for r in (pair.chosen, pair.rejected)]
    lengths = torch.tensor([len(s) for s in seqs])
    mask = response_mask(torch.tensor([len(prompt)] * 2), lengths, int(lengths.max()))
    scored = [  # mask[t] marks the log-prob of token t + 1
        tok.decode([t for t, m in zip(s[1:], row.tolist(), strict=False) if m], skip_special=False)
        for s, row in zip(seqs, mask, strict=True)
    ]
    reply = "It is" if fmt.startswith("conv") else ""
    assert scored == [f"{reply} blue.<|end|>", f"{reply} green.<|end|>"]


def test_implicit_prompt_is_the_shared_part() -> None:
    """Standard rows share characters (a space before the first difference stays with the
    replies, as TRL's extract_prompt leaves it); conversational rows share whole messages."""
    rows = [
        {"chosen": "2+2 = 4", "rejected": "2+2 = 5", "task": "arith"},
        {"chosen": [USER, BLUE], "rejected": [USER, GREEN], "source": "human"},
        {
            "chosen": [{"role": "system", "content": "Be brief."}, USER, BLUE],
            "rejected": [{"role": "system", "content": "Be brief."}, USER, GREEN],
        },
    ]
    got = [read_pair(r, "f:1") for r in rows]
    assert got[0] == Pair("2+2 =", " 4", " 5", {"task": "arith"})
    assert got[1] == Pair([USER], "It is blue.", "It is green.", {"source": "human"})
    assert got[2].prompt == [{"role": "system", "content": "Be brief."}, USER]


@pytest.mark.parametrize(
    ("row", "msg"),
    [
        ({"prompt": "q", "chosen": "a"}, "needs fields chosen and rejected"),
        ({"prompt": "q", "chosen": "a", "rejected": "a"}, "chosen and rejected are identical"),
        ({"prompt": "q", "chosen": " ", "rejected": "a"}, "empty response"),
        ({"chosen": "The sky is", "rejected": "The sky is green."}, "empty response"),
        ({"prompt": "q", "chosen": [BLUE], "rejected": [GREEN]}, "all be strings or all lists"),
        ({"prompt": [USER], "chosen": "a", "rejected": "b"}, "all be strings or all lists"),
        ({"prompt": [], "chosen": [BLUE], "rejected": [GREEN]}, '"prompt" must be a non-empty'),
        ({"prompt": [USER], "chosen": [{"role": "assistant"}], "rejected": [GREEN]}, "chosen"),
        ({"chosen": [BLUE], "rejected": [GREEN]}, "share no leading message"),
        ({"prompt": [USER, BLUE], "chosen": [BLUE], "rejected": [GREEN]}, "ends with an assist"),
        ({"prompt": [USER], "chosen": [BLUE, USER], "rejected": [GREEN]}, "one assistant message"),
        ({"prompt": [USER], "chosen": [USER], "rejected": [GREEN]}, "one assistant message"),
        ({"chosen": [USER, BLUE, USER, BLUE], "rejected": [USER, GREEN]}, "one assistant"),
        ({"chosen": [USER, BLUE], "rejected": [USER, BLUE, USER]}, "ends with an assistant"),
        (
            {"prompt": [{"role": "bot", "content": "q"}], "chosen": [BLUE], "rejected": [GREEN]},
            r"prompt\[0\] has unknown role 'bot'",
        ),
    ],
)
def test_malformed_rows_are_one_error_with_file_and_line(
    row: dict[str, Any], msg: str, tmp_path: Path
) -> None:
    path = _write(tmp_path / "p.jsonl", [trl_preference_row("standard"), "", row])
    with pytest.raises(PrefsError, match=rf"p\.jsonl:3: .*{msg}") as info:
        read_prefs(path)
    assert "\n" not in str(info.value)


def test_tool_role_follows_the_chat_template(tmp_path: Path) -> None:
    """A tool message in the prompt is read exactly when the template has a tool role."""
    tool = {"role": "tool", "content": "sky_color() -> blue"}
    row = {"prompt": [USER, tool], "chosen": [BLUE], "rejected": [GREEN]}
    path = _write(tmp_path / "p.jsonl", [row])
    if "tool" not in ROLES:
        with pytest.raises(PrefsError, match=r"p\.jsonl:1: prompt\[1\] has unknown role 'tool'"):
            read_prefs(path)
        return
    assert read_prefs(path) == [Pair([USER, tool], "It is blue.", "It is green.", {})]
