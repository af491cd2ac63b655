"""`lmlab tokenize`: train a tokenizer on a corpus, write it, and build the token shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmlab.bounds import MAX_VOCAB, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import console
from lmlab.config import DataConfig, ModelConfig, RunConfig
from lmlab.data.corpora import load_corpus
from lmlab.data.shards import build_shards, get_tokenizer
from lmlab.runs import TOKENIZER_FILE, check_empty_output, lock_dir, write_json


@dataclass
class TokenizeArgs:
    """Train a tokenizer on a corpus, write tokenizer.json, and build the token shards."""

    out: Path
    """New (or empty) directory for tokenizer.json and stats.json."""
    corpus: str = "python-stdlib"
    """A source name or a path (file, folder, glob, .jsonl)."""
    tokenizer: str = "bpe"
    """char, byte, bpe or a tokenizer.json path."""
    vocab_size: int = 4096
    """BPE vocabulary size (special tokens included)."""
    val_fraction: float = 0.02
    """Fraction of documents held out for validation."""
    text_field: str = "text"
    """JSONL field holding the text."""


def run(argv: list[str]) -> None:
    args = parse(TokenizeArgs, argv, "lmlab tokenize")
    check_count("--vocab-size", args.vocab_size, MAX_VOCAB)
    check_empty_output(args.out)  # before the work: a run's tokenizer is never replaced
    cfg = RunConfig(
        model=ModelConfig(vocab_size=args.vocab_size),
        data=DataConfig(args.corpus, args.tokenizer, args.text_field, args.val_fraction),
    )
    corpus = load_corpus(args.corpus, args.val_fraction, args.text_field)
    tok = get_tokenizer(cfg, corpus)
    shards = build_shards(corpus, tok)
    stats = {
        "corpus": args.corpus,
        "vocab_size": tok.vocab_size,
        "train_tokens": len(shards.train),
        "val_tokens": len(shards.val),
        "chars_per_token": round(corpus.n_chars / max(1, len(shards.train) + len(shards.val)), 3),
        "shards": str(shards.path),
    }
    with lock_dir(args.out):
        check_empty_output(args.out)  # again, under the lock: nothing appeared meanwhile
        tok.save(args.out / TOKENIZER_FILE)
        write_json(args.out / "stats.json", stats)
    console.print_json(data=stats)
