"""Tokenizers (byte-level BPE, bytes, characters) on HF `tokenizers`, and the chat template.

All three kinds are stored in the same `tokenizer.json` format, so every checkpoint carries its
tokenizer and can be loaded by `tokenizers` or `transformers` anywhere:

- `bpe`: byte-level BPE (GPT-2 style) trained on the corpus; any Unicode text round-trips.
- `byte`: the 256 byte symbols and nothing else (a BPE with no merges).
- `char`: one token per character seen in the corpus, with byte fallback (`<0x..>` tokens) for
  unseen characters, so it also round-trips any text; for tiny experiments such as tinyshakespeare.

The chat special tokens are reserved from the start with fixed ids 0..5 in every kind. Plain-text
encoding never produces them (a corpus that contains the string "<|end|>" is encoded as text),
so only the chat template can place them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypedDict

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

PAD, BOS, SYSTEM, USER, ASSISTANT, END = (
    "<|pad|>",
    "<|bos|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
SPECIAL_TOKENS = [PAD, BOS, SYSTEM, USER, ASSISTANT, END]
ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


class Message(TypedDict):
    role: str
    content: str


class Tokenizer:
    """A thin typed wrapper over a `tokenizers.Tokenizer` with the chat special tokens."""

    def __init__(self, hf: HFTokenizer) -> None:
        for i, tok in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(tok) != i:
                raise ValueError(f"tokenizer does not reserve {tok} at id {i}")
        hf.encode_special_tokens = True  # plain text never turns into control tokens
        self.hf = hf
        self.pad_id, self.bos_id, self.system_id, self.user_id, self.assistant_id, self.end_id = (
            range(len(SPECIAL_TOKENS))
        )

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts in parallel (the Rust side uses every core)."""
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """The tokenizer in a tokenizer.json (ValueError, one line, if it is not one)."""
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises bare Exceptions for malformed files
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ValueError(f"cannot load tokenizer {path}: {first}") from None
        try:
            return cls(hf)
        except ValueError as e:
            raise ValueError(f"cannot use tokenizer {path}: {e}") from None

    def encode_chat(
        self, messages: list[Message], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[bool]]:
        """Token ids of a conversation and a mask that is True on assistant-written tokens.

        Template: <|bos|> then per message <|role|> content <|end|>; with
        `add_generation_prompt` it ends with <|assistant|> for the model to continue. The mask
        covers each assistant reply and its closing <|end|> (what SFT trains on), not the role
        token that the template itself supplies.
        """
        ids, mask = [self.bos_id], [False]
        for m in messages:
            role = m["role"]
            if role not in ROLES:
                raise ValueError(f"unknown chat role {role!r}; expected one of {', '.join(ROLES)}")
            body = [*self.encode(m["content"]), self.end_id]
            ids.append(self.hf.token_to_id(ROLES[role]))
            mask.append(False)
            ids.extend(body)
            mask.extend([role == "assistant"] * len(body))
        if add_generation_prompt:
            ids.append(self.assistant_id)
            mask.append(False)
        return ids, mask


def min_vocab_size(kind: str) -> int:
    """Smallest vocabulary a tokenizer kind can have (special tokens plus the byte alphabet)."""
    return len(SPECIAL_TOKENS) + 256 + (1 if kind == "bpe" else 0)


def train_bpe(texts: Iterable[str], vocab_size: int, show_progress: bool = True) -> Tokenizer:
    """Train a byte-level BPE tokenizer with `vocab_size` tokens (specials included)."""
    if vocab_size < min_vocab_size("bpe"):
        raise ValueError(
            f"vocab size {vocab_size} is too small: byte-level BPE needs at least "
            f"{min_vocab_size('bpe')} (6 special tokens + 256 bytes + 1 merge)"
        )
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(hf)


def byte_tokenizer() -> Tokenizer:
    """The 256 byte symbols as tokens (byte-level BPE with no merges)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + alphabet)}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    hf.add_special_tokens(SPECIAL_TOKENS)
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    return Tokenizer(hf)


def char_tokenizer(texts: Iterable[str]) -> Tokenizer:
    """One token per character seen in `texts`, with UTF-8 byte fallback for unseen ones."""
    chars: set[str] = set()
    for t in texts:
        chars.update(t)
    fallback = [f"<0x{b:02X}>" for b in range(256)]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + fallback + sorted(chars))}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    hf.add_special_tokens(SPECIAL_TOKENS)
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return Tokenizer(hf)


def build_tokenizer(kind: str, texts: Iterator[str] | list[str], vocab_size: int) -> Tokenizer:
    """Build a tokenizer from its `--tokenizer` spec: char, byte, bpe or a tokenizer.json path."""
    if kind == "bpe":
        return train_bpe(texts, vocab_size)
    if kind == "byte":
        return byte_tokenizer()
    if kind == "char":
        return char_tokenizer(texts)
    path = Path(kind)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"tokenizer {kind!r} is neither char, byte, bpe nor a tokenizer.json file")
    return Tokenizer.load(path)
