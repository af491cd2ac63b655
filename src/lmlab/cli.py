"""The `lmlab` command line: one subcommand per stage of a model's life.

Each subcommand is a typed dataclass turned into flags by `tyro`, so every config field is a
`--group.field value` flag. User errors (bad input, missing files, an occupied run directory)
print one line and exit with code 2; nothing is overwritten.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro
from rich.console import Console
from rich.table import Table

from lmlab.config import PRESETS, DataConfig, ModelConfig, RunConfig, TrainConfig, preset

console = Console()


# --- pretrain ---------------------------------------------------------------------------------


@dataclass
class PretrainArgs:
    """Pretrain a model on a corpus (or continue a run with --resume)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: Annotated[DataConfig, tyro.conf.arg(name="")] = field(default_factory=DataConfig)
    preset: str = "tiny"
    """Named preset whose model/train settings are the defaults: tiny, small, gpt2-124m."""
    out: Path | None = None
    """Run directory (default runs/<preset>)."""
    resume: Path | None = None
    """Continue the run in this directory from its latest checkpoint."""
    quiet: bool = False
    """No progress bar."""


def _pre_parse_preset(argv: list[str]) -> str:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="tiny")
    name = pre.parse_known_args(argv)[0].preset
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return name


def cmd_pretrain(argv: list[str]) -> None:
    name = _pre_parse_preset(argv)
    base = preset(name)
    default = PretrainArgs(model=base.model, train=base.train, data=base.data, preset=name)
    args = tyro.cli(PretrainArgs, default=default, args=argv, prog="lmlab pretrain")
    from lmlab.train.pretrain import pretrain

    cfg = RunConfig(model=args.model, train=args.train, data=args.data)
    if args.resume is not None:
        explicit = any(a.split("=")[0] == "--train.max-steps" for a in argv)
        pretrain(None, args.resume, resume=True, show_progress=not args.quiet,
                 max_steps=args.train.max_steps if explicit else None)
    else:
        pretrain(cfg, args.out or Path("runs") / name, show_progress=not args.quiet)


# --- tokenize ---------------------------------------------------------------------------------


@dataclass
class TokenizeArgs:
    """Train a tokenizer on a corpus, write tokenizer.json, and build the token shards."""

    out: Path
    """Directory for tokenizer.json and stats.json."""
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


def cmd_tokenize(argv: list[str]) -> None:
    import json

    args = tyro.cli(TokenizeArgs, args=argv, prog="lmlab tokenize")
    from lmlab.data.corpora import load_corpus
    from lmlab.data.shards import build_shards
    from lmlab.train.pretrain import get_tokenizer

    cfg = RunConfig(
        model=ModelConfig(vocab_size=args.vocab_size),
        data=DataConfig(args.corpus, args.tokenizer, args.text_field, args.val_fraction),
    )
    corpus = load_corpus(args.corpus, args.val_fraction, args.text_field)
    tok = get_tokenizer(cfg, corpus)
    shards = build_shards(corpus, tok)
    args.out.mkdir(parents=True, exist_ok=True)
    tok.save(args.out / "tokenizer.json")
    n_chars = corpus.n_chars
    stats = {
        "corpus": args.corpus,
        "vocab_size": tok.vocab_size,
        "train_tokens": len(shards.train),
        "val_tokens": len(shards.val),
        "chars_per_token": round(n_chars / max(1, len(shards.train) + len(shards.val)), 3),
        "shards": str(shards.path),
    }
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    console.print_json(data=stats)


# --- info -------------------------------------------------------------------------------------


@dataclass
class InfoArgs:
    """Parameter counts and FLOPs per token of a preset or a run directory."""

    run: Annotated[Path | None, tyro.conf.Positional] = None
    """A run directory (otherwise --preset and --model.* flags describe the model)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    preset: str = "tiny"
    """Named preset to describe."""


def cmd_info(argv: list[str]) -> None:
    name = _pre_parse_preset(argv)
    args = tyro.cli(
        InfoArgs,
        default=InfoArgs(model=preset(name).model, preset=name),
        args=argv,
        prog="lmlab info",
    )
    from lmlab.model.transformer import flops_per_token, param_counts

    if args.run is not None:
        if not (args.run / "config.json").is_file():
            raise ValueError(f"{args.run} is not an lmlab run (no config.json)")
        mcfg = RunConfig.load(args.run / "config.json").model
        title = str(args.run)
    else:
        mcfg, title = args.model, f"preset {args.preset}"
    mcfg.validate()
    counts = param_counts(mcfg)
    flops = flops_per_token(mcfg)
    table = Table(title=f"lmlab info: {title}", show_header=False)
    rows = [
        (
            "layers / d_model / heads (kv)",
            f"{mcfg.n_layer} / {mcfg.d_model} / {mcfg.n_head} ({mcfg.kv_heads})",
        ),
        ("context / vocab / d_ff", f"{mcfg.context_length} / {mcfg.vocab_size} / {mcfg.ffn_dim}"),
        ("params total", f"{counts['total']:,}"),
        ("params non-embedding", f"{counts['non_embedding']:,}"),
        ("params embedding", f"{counts['embedding']:,}"),
        ("train FLOPs / token", f"{flops['train']:.4g}  (6N + 12·L·T·d_attn)"),
        ("forward FLOPs / token", f"{flops['forward']:.4g}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


# --- sample -----------------------------------------------------------------------------------


@dataclass
class SampleArgs:
    """Print samples from a trained run."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    prompt: str = ""
    """Text to continue (empty: start from <|bos|>)."""
    max_new_tokens: int = 100
    """Tokens to generate per sample."""
    temperature: float = 0.8
    """Sampling temperature (0 = greedy)."""
    top_k: int | None = 50
    """Sample among the k most likely tokens."""
    n: int = 1
    """Number of samples."""
    seed: int = 0
    """Sampling seed."""


def cmd_sample(argv: list[str]) -> None:
    args = tyro.cli(SampleArgs, args=argv, prog="lmlab sample")
    from lmlab.infer.engine import sample
    from lmlab.train.checkpoint import load_run

    if args.temperature < 0:
        raise ValueError("temperature must be >= 0")
    model, tok, _ = load_run(args.run)
    prompt = [tok.bos_id, *tok.encode(args.prompt)]
    for i in range(args.n):
        ids = sample(
            model, prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed + i
        )
        console.rule(f"sample {i + 1}")
        console.print(args.prompt + tok.decode(ids), markup=False, highlight=False)


# --- entry point ------------------------------------------------------------------------------

COMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "tokenize": (cmd_tokenize, "train a tokenizer and build token shards"),
    "pretrain": (cmd_pretrain, "pretrain (or resume) a model on a corpus"),
    "info": (cmd_info, "parameter counts and FLOPs per token"),
    "sample": (cmd_sample, "print samples from a trained run"),
}


def _usage() -> str:
    lines = [
        "usage: lmlab COMMAND [options]   (lmlab COMMAND --help for its options)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n{_usage()}", file=sys.stderr)
        return 2
    try:
        COMMANDS[name][0](rest)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)  # one unwrapped line
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
