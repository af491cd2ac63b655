"""Tokenize a corpus into numpy memmap shards, cached by content, and draw batches from them.

A shard is one flat array of token ids per split (`train.bin`, `val.bin`), each document
prefixed with <|bos|>, stored as uint16 when the vocabulary fits and uint32 otherwise. The cache
key is a hash of the corpus fingerprint and the tokenizer's JSON, so a second run on the same
data is instant and a different tokenizer never reads stale ids.

Batches are random windows (nanoGPT style) drawn from a generator seeded by (seed, step): the
data position of a run is just its step, so resume is exact, and under data parallelism rank r
takes its own slice of the same global draw, so N processes see exactly the batch that one
process with N times the batch size would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from lmlab.config import RunConfig
from lmlab.data.corpora import load_corpus
from lmlab.data.corpus import Corpus
from lmlab.data.tokenizer import Tokenizer, build_tokenizer


def cache_root() -> Path:
    """Where derived data lives: $LMLAB_CACHE, else ~/.cache/lmlab."""
    return Path(os.environ.get("LMLAB_CACHE", Path.home() / ".cache" / "lmlab"))


def token_dtype(vocab_size: int) -> type[np.unsignedinteger]:
    return np.uint16 if vocab_size <= 2**16 else np.uint32


@dataclass
class Shards:
    train: np.ndarray
    val: np.ndarray
    path: Path


def _encode_split(
    docs: list[str], tok: Tokenizer, out: Path, progress: Progress, label: str
) -> int:
    dtype = token_dtype(tok.vocab_size)
    task = progress.add_task(f"tokenizing {label}", total=sum(map(len, docs)))
    n = 0
    with out.open("wb") as f:
        chunk = 64  # documents per encode_batch call: enough to keep every core busy
        for i in range(0, len(docs), chunk):
            batch = docs[i : i + chunk]
            for ids in tok.encode_batch(batch):
                arr = np.asarray([tok.bos_id, *ids], dtype=dtype)
                f.write(arr.tobytes())
                n += arr.size
            progress.advance(task, sum(map(len, batch)))
        f.flush()
        os.fsync(f.fileno())
    return n


def build_shards(
    corpus: Corpus, tok: Tokenizer, root: Path | None = None, show_progress: bool = True
) -> Shards:
    """Tokenize `corpus` with `tok` into cached memmap shards (built once, then reused)."""
    key = hashlib.sha256((corpus.fingerprint + tok.hf.to_str()).encode()).hexdigest()[:20]
    path = (root or cache_root()) / "shards" / key
    if not (path / "meta.json").exists():
        tmp = path.with_name(f".{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with Progress(disable=not show_progress, transient=True) as progress:
            counts = {
                split: _encode_split(docs, tok, tmp / f"{split}.bin", progress, split)
                for split, docs in (("train", corpus.train), ("val", corpus.val))
            }
        meta = {
            "corpus": corpus.name,
            "fingerprint": corpus.fingerprint,
            "dtype": np.dtype(token_dtype(tok.vocab_size)).name,
            "tokens": counts,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished the same shards first
            shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((path / "meta.json").read_text())
    arrays = [
        np.memmap(path / f"{split}.bin", dtype=meta["dtype"], mode="r")
        for split in ("train", "val")
    ]
    return Shards(arrays[0], arrays[1], path)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def get_tokenizer(cfg: RunConfig, corpus: Corpus) -> Tokenizer:
    """Build (or fetch from the cache) the tokenizer the data config asks for, trained on the
    corpus's train split, and set the model's vocabulary size to fit it."""
    kind = cfg.data.tokenizer
    if kind in ("bpe", "char"):
        key = hashlib.sha256(
            f"{corpus.fingerprint}:{kind}:{cfg.model.vocab_size}".encode()
        ).hexdigest()[:20]
        path = cache_root() / "tokenizers" / f"{key}.json"
        if path.exists():
            tok = Tokenizer.load(path)
        else:
            tok = build_tokenizer(kind, iter(corpus.train), cfg.model.vocab_size)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tok.save(tmp)
            tmp.replace(path)
    else:
        tok = build_tokenizer(kind, corpus.train, cfg.model.vocab_size)
    if kind != "bpe":
        # char/byte/file vocabularies set the model's, padded to a multiple of 64 for fast matmuls
        cfg.model.vocab_size = _round_up(tok.vocab_size, 64)
    elif tok.vocab_size > cfg.model.vocab_size:
        raise ValueError(
            f"tokenizer has {tok.vocab_size} tokens > model vocab {cfg.model.vocab_size}"
        )
    return tok


def prepare_data(
    cfg: RunConfig, tok: Tokenizer | None = None, show_progress: bool = True
) -> tuple[Tokenizer, Shards, Corpus]:
    """The corpus of `cfg.data`, tokenized into shards by `tok` (a resumed run's own
    tokenizer) or by the tokenizer `cfg.data.tokenizer` asks for."""
    corpus = load_corpus(cfg.data.corpus, cfg.data.val_fraction, cfg.data.text_field)
    tok = tok or get_tokenizer(cfg, corpus)
    return tok, build_shards(corpus, tok, show_progress=show_progress), corpus


class Batches:
    """Deterministic random-window batches of (inputs, targets) over one token array."""

    def __init__(self, data: np.ndarray, context: int, seed: int) -> None:
        if len(data) <= context + 1:
            raise ValueError(
                f"split has {len(data)} tokens, fewer than the context length {context} + 1"
            )
        self.data, self.context, self.seed = data, context, seed

    def _windows(self, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = offsets[:, None] + np.arange(self.context + 1)
        chunk = torch.from_numpy(self.data[idx].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]

    def train_batch(
        self,
        step: int,
        micro: int,
        batch_size: int,
        grad_accum: int = 1,
        rank: int = 0,
        world: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch `micro` of optimizer step `step` for `rank` (a slice of one global draw)."""
        rng = np.random.default_rng([self.seed, step])
        high = len(self.data) - self.context - 1
        offsets = rng.integers(0, high, size=(grad_accum, world, batch_size))
        return self._windows(offsets[micro, rank])

    def eval_batches(
        self, n_batches: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed windows spread evenly over the split; each of the `n_batches` global batches
        of `batch_size * world` windows is split across ranks like a training batch."""
        high = len(self.data) - self.context - 1
        offsets = np.linspace(0, high, n_batches * world * batch_size).astype(np.int64)
        offsets = offsets.reshape(n_batches, world, batch_size)
        return [self._windows(offsets[i, rank]) for i in range(n_batches)]
