"""Tests for lmlab.data.tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.data.tokenizer import (
    SPECIAL_TOKENS,
    build_tokenizer,
    byte_tokenizer,
    char_tokenizer,
    train_bpe,
)
from tests.conftest import CORPUS_TEXT

BPE = train_bpe([CORPUS_TEXT, "héllo wörld ünïcode 🙂"], 400, show_progress=False)
KINDS = {"bpe": BPE, "byte": byte_tokenizer(), "char": char_tokenizer([CORPUS_TEXT])}


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None)
@given(text=st.text())
def test_round_trips_any_unicode(kind: str, text: str) -> None:
    tok = KINDS[kind]
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_reserved_and_not_produced_by_text(kind: str) -> None:
    tok = KINDS[kind]
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.hf.token_to_id(s) == i
    ids = tok.encode("x <|end|> <|user|> <|bos|>")
    assert not set(ids) & set(range(len(SPECIAL_TOKENS)))
    assert tok.decode(ids) == "x <|end|> <|user|> <|bos|>"


def test_bpe_vocab_size_and_too_small() -> None:
    assert BPE.vocab_size == 400
    with pytest.raises(ValueError, match="too small"):
        train_bpe([CORPUS_TEXT], 100, show_progress=False)


def test_save_load(tmp_path: Path) -> None:
    BPE.save(tmp_path / "tokenizer.json")
    tok = build_tokenizer(str(tmp_path), iter([]), 0)
    assert tok.encode("def f(x): return 1") == BPE.encode("def f(x): return 1")
    with pytest.raises(ValueError, match="neither"):
        build_tokenizer(str(tmp_path / "missing.json"), iter([]), 0)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot load"):
        build_tokenizer(str(tmp_path / "bad.json"), iter([]), 0)


def test_chat_template_masks_assistant_tokens() -> None:
    tok = KINDS["char"]
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
    ids, mask = tok.encode_chat(msgs)
    assert len(ids) == len(mask)
    assert ids[0] == tok.bos_id
    trained = [i for i, m in zip(ids, mask, strict=True) if m]
    assert trained == [*tok.encode("yo"), tok.end_id]
    gen, _ = tok.encode_chat(msgs[:2], add_generation_prompt=True)
    assert gen[-1] == tok.assistant_id
    with pytest.raises(ValueError, match="role"):
        tok.encode_chat([{"role": "robot", "content": "x"}])
