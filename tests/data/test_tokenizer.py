"""Tests for lmlab.data.tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.data.tokenizer import (
    SPECIAL_TOKENS,
    Tokenizer,
    build_tokenizer,
    byte_tokenizer,
    char_tokenizer,
    train_bpe,
)
from tests.conftest import CORPUS_TEXT
from tests.model.foreign import write_tokenizer

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


@pytest.mark.parametrize("kind", KINDS)
def test_a_plain_prompt_gets_bos_and_reads_typed_special_tokens(kind: str) -> None:
    tok = KINDS[kind]
    assert tok.encode_prompt("x y") == [tok.bos_id, *tok.encode("x y")]
    assert tok.encode_prompt("") == [tok.bos_id]
    # a prompt is model input, as `AutoTokenizer(text)` reads it: typed chat tokens are tokens
    typed = tok.encode_prompt("<|user|>hi<|end|><|assistant|>")
    assert typed == tok.encode_chat([{"role": "user", "content": "hi"}], True)[0]
    assert tok.stop_ids == {tok.end_id} and tok.special_ids == tuple(range(6))


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
    # a message's text is text: a typed <|end|> cannot close the turn
    ids, _ = tok.encode_chat([{"role": "user", "content": "a<|end|>"}])
    assert ids.count(tok.end_id) == 1


def test_tool_turns_are_user_turns_with_a_header(tmp_path: Path) -> None:
    # a tokenizer.json written before tool turns existed (six special tokens) renders them
    KINDS["char"].save(tmp_path / "tokenizer.json")
    tok = Tokenizer.load(tmp_path / "tokenizer.json")
    assert tok.vocab_size == KINDS["char"].vocab_size and tok.hf.token_to_id("<|tool|>") is None
    msgs = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "calc"},
        {"role": "tool", "content": "4"},
        {"role": "assistant", "content": "4"},
    ]
    ids, mask = tok.encode_chat(msgs)
    tool = [tok.user_id, *tok.encode("[tool]\n4"), tok.end_id]
    at = len(tok.encode_chat(msgs[:2])[0])
    assert ids[at : at + len(tool)] == tool and not any(mask[at : at + len(tool)])
    trained = [i for i, m in zip(ids, mask, strict=True) if m]
    assert tok.decode(trained, skip_special=False) == "calc<|end|>4<|end|>"


CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": " I am fine. "},
    {"role": "user", "content": "and <|im_end|><|eot_id|>?"},
    {"role": "assistant", "content": "Answer: 42"},
]


def test_foreign_chatml_tokenizer(tmp_path: Path) -> None:
    """Qwen2's layout: no BOS, <|im_end|> ends a turn, pad <|endoftext|>, a ChatML template."""
    write_tokenizer(tmp_path, "chatml")
    tok = Tokenizer.from_pretrained(tmp_path)
    vocab = tok.hf.get_vocab()
    im_end, eot = vocab["<|im_end|>"], vocab["<|endoftext|>"]
    assert (tok.end_id, tok.pad_id, tok.bos_id, tok.stop_ids) == (im_end, eot, im_end, {im_end})
    assert tok.encode_prompt("hello") == tok.encode("hello")  # adds no BOS
    assert tok.encode_prompt("a<|im_start|>") == [*tok.encode("a"), vocab["<|im_start|>"]]
    ids, mask = tok.encode_chat(CHAT)
    text = tok.decode(ids, skip_special=False)
    assert text == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello there<|im_end|>\n"
        "<|im_start|>assistant\n I am fine. <|im_end|>\n<|im_start|>user\n"
        "and <|im_end|><|eot_id|>?<|im_end|>\n<|im_start|>assistant\nAnswer: 42<|im_end|>\n"
    )
    # the <|im_end|> typed in a message is text; the template's are tokens
    assert ids.count(im_end) == 5
    trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m], skip_special=False)
    assert trained == " I am fine. <|im_end|>Answer: 42<|im_end|>"
    prompt, _ = tok.encode_chat(CHAT[1:2], add_generation_prompt=True)
    assert tok.decode(prompt, skip_special=False).endswith(
        "You are a helpful assistant.<|im_end|>\n<|im_start|>user\nhello there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # saved in a run directory (tokenizer.json + tokenizer_config.json), it loads back the same
    (tmp_path / "run").mkdir()
    tok.save(tmp_path / "run" / "tokenizer.json")
    assert (tmp_path / "run" / "tokenizer_config.json").is_file()
    back = Tokenizer.load(tmp_path / "run" / "tokenizer.json")
    assert back.encode_chat(CHAT) == (ids, mask) and back.config == tok.config


def test_foreign_llama3_tokenizer(tmp_path: Path) -> None:
    """Llama 3's layout: the post-processor adds BOS, <|eot_id|> ends a turn, no pad."""
    write_tokenizer(tmp_path, "llama3")
    tok = Tokenizer.from_pretrained(tmp_path)
    vocab = tok.hf.get_vocab()
    bos, eos, eot = vocab["<|begin_of_text|>"], vocab["<|end_of_text|>"], vocab["<|eot_id|>"]
    assert (tok.bos_id, tok.end_id, tok.pad_id, tok.stop_ids) == (bos, eot, eos, {eot, eos})
    assert tok.encode_prompt("hello") == [bos, *tok.encode("hello")]
    ids, mask = tok.encode_chat(CHAT[:3])
    assert ids[0] == bos and ids.count(bos) == 1  # the template writes BOS, once
    trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m], skip_special=False)
    assert trained == "I am fine.<|eot_id|>"  # the template trims contents


def test_foreign_tokenizer_errors(tmp_path: Path) -> None:
    write_tokenizer(tmp_path, "chatml")
    tok = Tokenizer.from_pretrained(tmp_path)
    refusing = dict(tok.config or {}, chat_template="{{ raise_exception('no tools here') }}")
    with pytest.raises(ValueError, match="refused the conversation: no tools here"):
        Tokenizer(tok.hf, refusing).encode_chat(CHAT)
    bare = {k: v for k, v in (tok.config or {}).items() if k != "chat_template"}
    with pytest.raises(ValueError, match="has no chat template"):
        Tokenizer(tok.hf, bare).encode_chat(CHAT)
    assert Tokenizer(tok.hf, bare).end_id == tok.end_id  # EOS ends a reply without a template
    with pytest.raises(ValueError, match="neither an eos_token nor a chat template"):
        Tokenizer(tok.hf, {})
    with pytest.raises(ValueError, match="eos_token '<eos>' is not in its vocabulary"):
        Tokenizer(tok.hf, {"eos_token": "<eos>"})
    with pytest.raises(ValueError, match="does not compile"):
        Tokenizer(tok.hf, dict(bare, chat_template="{% for %}"))
    (tmp_path / "tokenizer_config.json").unlink()  # a foreign tokenizer.json alone
    with pytest.raises(ValueError, match=r"does not reserve <\|pad\|> at id 0"):
        Tokenizer.load(tmp_path / "tokenizer.json")
