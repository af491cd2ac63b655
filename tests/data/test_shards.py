"""Tests for lmlab.data.shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmlab.data.corpora import load_corpus
from lmlab.data.corpus import Corpus
from lmlab.data.shards import Batches, build_shards
from lmlab.data.tokenizer import train_bpe


def _docs_corpus(tmp_path: Path) -> Corpus:
    tmp_path.mkdir()
    for i in range(12):
        (tmp_path / f"{i:02d}.txt").write_text(f"file {i}: " + "héllo wörld " * (i + 3))
    return load_corpus(str(tmp_path), val_fraction=0.2)


def test_shards_reproduce_token_stream(tmp_path: Path) -> None:
    corpus = _docs_corpus(tmp_path / "c")
    tok = train_bpe(corpus.train, 300, show_progress=False)
    shards = build_shards(corpus, tok, root=tmp_path / "cache", show_progress=False)
    for split, docs in (("train", corpus.train), ("val", corpus.val)):
        expected = [t for d in docs for t in [tok.bos_id, *tok.encode(d)]]
        arr = getattr(shards, split)
        assert arr.dtype == np.uint16
        assert arr.tolist() == expected
    again = build_shards(corpus, tok, root=tmp_path / "cache", show_progress=False)
    assert again.path == shards.path  # cached by content


def test_batches_are_deterministic_and_shard_across_ranks() -> None:
    data = np.arange(10_000, dtype=np.uint16)
    b = Batches(data, context=16, seed=3)
    x, y = b.train_batch(step=5, micro=0, batch_size=8)
    torch.testing.assert_close(y[:, :-1], x[:, 1:])
    assert torch.equal(x, b.train_batch(5, 0, 8)[0])
    assert not torch.equal(x, b.train_batch(6, 0, 8)[0])
    # two ranks with batch 4 see exactly the global batch of one process with batch 8
    r0, _ = b.train_batch(5, 0, 4, rank=0, world=2)
    r1, _ = b.train_batch(5, 0, 4, rank=1, world=2)
    assert torch.equal(torch.cat([r0, r1]), x)
    evals = b.eval_batches(3, 4)
    assert len(evals) == 3
    halves = [b.eval_batches(3, 2, rank=r, world=2) for r in (0, 1)]
    for i in range(3):
        assert torch.equal(torch.cat([halves[0][i][0], halves[1][i][0]]), evals[i][0])
