"""The `lmlab` command line: one subcommand per stage of a model's life.

Each subcommand is a typed dataclass turned into flags by `tyro`, so every config field is a
`--group.field value` flag. User errors (bad input, missing files, an occupied run directory)
print one line and exit with code 2; nothing is overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro
from rich.console import Console
from rich.table import Table

from lmlab.config import (
    PRESETS,
    DataConfig,
    GRPOConfig,
    ModelConfig,
    PPOConfig,
    RunConfig,
    SFTConfig,
    TrainConfig,
    preset,
    sft_train_config,
)
from lmlab.data.prefs import DEFAULT_MARGIN
from lmlab.scaling.config import PlanConfig
from lmlab.serve.config import ServeConfig

console = Console()


# --- pretrain ---------------------------------------------------------------------------------


@dataclass
class PretrainArgs:
    """Pretrain a model on a corpus (or continue a run with --resume)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: Annotated[DataConfig, tyro.conf.arg(name="")] = field(default_factory=DataConfig)
    preset: str = "tiny"
    """Named preset whose settings are the defaults: tiny, tiny-moe, small, small-bpe, gpt2-124m."""
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
        pretrain(
            None,
            args.resume,
            resume=True,
            show_progress=not args.quiet,
            max_steps=args.train.max_steps if explicit else None,
        )
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
    from lmlab.data.shards import build_shards, get_tokenizer

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
    ]
    m = mcfg.moe
    if m.n_experts:
        n_moe = sum(m.is_moe_layer(i) for i in range(mcfg.n_layer))
        rows += [
            (
                "MoE experts / top-k / shared / d_exp",
                f"{m.n_experts} / {m.top_k} / {m.n_shared} / {mcfg.expert_dim}"
                f"  ({n_moe} of {mcfg.n_layer} blocks)",
            ),
            ("params active", f"{counts['active']:,}  ({counts['active'] / counts['total']:.1%})"),
            ("params active non-embedding", f"{counts['active_non_embedding']:,}"),
        ]
    active = ", N active" if m.n_experts else ""
    rows += [
        ("train FLOPs / token", f"{flops['train']:.4g}  (6N + 12·L·T·d_attn{active})"),
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
    from lmlab.infer import Engine, SamplingParams

    engine = Engine.from_checkpoint(args.run)
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        n=args.n,
        seed=args.seed,
    )
    for i, out in enumerate(engine.generate([args.prompt], params)[0]):
        console.rule(f"sample {i + 1}")
        console.print(args.prompt + out.text, markup=False, highlight=False)


# --- generate / chat --------------------------------------------------------------------------


@dataclass
class GenerateArgs:
    """Generate completions of a prompt with the inference engine."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    prompt: str = ""
    """Text to continue (it follows <|bos|>)."""
    max_new_tokens: int = 64
    """Most tokens per completion."""
    temperature: float = 1.0
    """Sampling temperature (0 = greedy)."""
    top_k: int | None = None
    """Keep only the k most likely tokens."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most likely tokens up to this much probability."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the most likely one."""
    n: int = 1
    """Completions to generate (sharing one prefill)."""
    stop: list[str] = field(default_factory=list)
    """Stop strings (excluded from the output)."""
    seed: int = 0
    """Sampling seed."""
    json: bool = False
    """Print one JSON object per completion (text, token_ids, finish_reason, logprobs)."""
    device: str = "cpu"
    """cpu or cuda[:N]."""


def cmd_generate(argv: list[str]) -> None:
    args = tyro.cli(GenerateArgs, args=argv, prog="lmlab generate")
    from lmlab.infer import Engine, SamplingParams

    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        n=args.n,
        stop=args.stop or None,
        seed=args.seed,
        logprobs=args.json,
    )
    params.validate(vocab_size=1 << 62, max_batch=max(args.n, 1))  # fail before loading
    engine = Engine.from_checkpoint(args.run, args.device, max_batch=max(args.n, 1))
    for i, out in enumerate(engine.generate([args.prompt], params)[0]):
        if args.json:
            print(json.dumps(dataclasses.asdict(out)))
            continue
        console.rule(f"completion {i + 1} ({out.finish_reason}, {len(out.token_ids)} tokens)")
        console.print(args.prompt + out.text, markup=False, highlight=False)


@dataclass
class ChatArgs:
    """Chat with a run in the terminal (its tokenizer's chat template, history kept)."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory (an SFT run answers best)."""
    system: str = ""
    """System message at the start of the conversation."""
    max_new_tokens: int = 128
    """Most tokens per reply."""
    temperature: float = 0.7
    """Sampling temperature (0 = greedy)."""
    top_p: float = 0.95
    """Nucleus sampling threshold."""
    seed: int = 0
    """Sampling seed of the first reply (each later reply uses the next one)."""
    device: str = "cpu"
    """cpu or cuda[:N]."""


def cmd_chat(argv: list[str]) -> None:
    args = tyro.cli(ChatArgs, args=argv, prog="lmlab chat")
    from lmlab.infer import Engine, SamplingParams

    SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p
    ).validate(vocab_size=1 << 62, max_batch=1)
    engine = Engine.from_checkpoint(args.run, args.device, max_batch=1)
    history = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    if interactive:
        console.print("[dim]empty line or Ctrl-D to quit; /reset clears the history[/]")
    turn = 0
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        if not line.strip():
            break
        if line.strip() == "/reset":
            history = history[:1] if args.system else []
            continue
        history.append({"role": "user", "content": line})
        ids = engine.tokenizer.encode_chat(history, add_generation_prompt=True)[0]  # type: ignore[arg-type]
        # Keep the system message and the newest turns that leave room for a full reply.
        keep = 1 if args.system else 0
        while len(ids) + args.max_new_tokens > engine.max_len and len(history) > keep + 1:
            history.pop(keep)
            ids = engine.tokenizer.encode_chat(history, add_generation_prompt=True)[0]  # type: ignore[arg-type]
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed + turn,
        )
        turn += 1
        print("assistant> ", end="", flush=True)
        reply = ""
        for piece in engine.stream(ids, params):
            print(piece, end="", flush=True)
            reply += piece
        print()
        history.append({"role": "assistant", "content": reply})


# --- export / import --------------------------------------------------------------------------


@dataclass
class ExportArgs:
    """Export a run's latest checkpoint to another format."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    out: Path
    """Output directory (must be new or empty)."""
    format: Literal["hf"] = "hf"
    """hf: Hugging Face folder (config.json, model.safetensors, tokenizer files) in the Llama
    format, or Mixtral / Qwen2-MoE for MoE models."""
    drop_selection_bias: bool = False
    """MoE: export without the aux-loss-free selection bias (no HF format holds it)."""


def cmd_export(argv: list[str]) -> None:
    args = tyro.cli(ExportArgs, args=argv, prog="lmlab export")
    from lmlab.model.hf import export_hf, hf_format
    from lmlab.model.load import load_run

    model, tok, _ = load_run(args.run)
    export_hf(model, tok, args.out, args.drop_selection_bias)  # type: ignore[arg-type]
    console.print(
        f"wrote {args.out} ({hf_format(model.cfg)} format; load it with "  # type: ignore[arg-type]
        "transformers.AutoModelForCausalLM)"
    )


@dataclass
class ImportArgs:
    """Import a local Hugging Face checkpoint (Llama, Mixtral or Qwen2-MoE) as an lmlab run."""

    src: Annotated[Path, tyro.conf.Positional]
    """Folder with config.json, *.safetensors and tokenizer.json."""
    out: Path
    """New run directory."""


def cmd_import(argv: list[str]) -> None:
    args = tyro.cli(ImportArgs, args=argv, prog="lmlab import")
    from lmlab.model.hf import import_hf

    import_hf(args.src, args.out)
    console.print(f"wrote run {args.out} (try: lmlab generate {args.out} --prompt ...)")


# --- moe-stats --------------------------------------------------------------------------------


@dataclass
class MoEStatsArgs:
    """Routing statistics of a trained MoE run on its validation batches."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    batches: int = 20
    """Validation batches to route."""
    batch_size: int = 8
    """Sequences per batch."""
    png: Path | None = None
    """Where to write the load histogram (default RUN/moe_load.png; needs matplotlib)."""
    json: bool = False
    """Print the per-layer report as JSON instead of a table."""


_BARS = "▁▂▃▄▅▆▇█"


def _load_bars(load: list[float]) -> str:
    """One bar per expert; the top of the scale is twice the uniform load 1/E."""
    top = 2 / len(load)
    return "".join(_BARS[min(len(_BARS) - 1, int(v / top * len(_BARS)))] for v in load)


def cmd_moe_stats(argv: list[str]) -> None:
    args = tyro.cli(MoEStatsArgs, args=argv, prog="lmlab moe-stats")
    import math

    from lmlab.data.corpora import load_corpus
    from lmlab.data.shards import Batches, build_shards
    from lmlab.model.load import load_run
    from lmlab.model.moe import plot_load, routing_report

    if args.batches < 1 or args.batch_size < 1:
        raise ValueError("--batches and --batch-size must be >= 1")
    model, tok, cfg = load_run(args.run)
    if not cfg.model.moe.n_experts:
        raise ValueError(f"{args.run} is a dense model (model.moe.n_experts is 0)")
    corpus = load_corpus(cfg.data.corpus, cfg.data.val_fraction, cfg.data.text_field)
    shards = build_shards(corpus, tok, show_progress=False)
    val = Batches(shards.val, cfg.model.context_length, cfg.train.seed)
    report = routing_report(model, val.eval_batches(args.batches, args.batch_size))
    png = args.png or args.run / "moe_load.png"
    wrote = plot_load({args.run.name: report}, png)
    if args.json:
        console.print_json(data=report)
        return
    E = cfg.model.moe.n_experts
    table = Table(
        title=f"lmlab moe-stats: {args.run}  ({args.batches}x{args.batch_size} val sequences)",
        caption=f"load bars: one per expert, full height 2/E; max entropy ln E = {math.log(E):.2f}"
        + (f"; histogram written to {png}" if wrote else "; install matplotlib for the PNG"),
    )
    table.add_column("layer", justify="right")
    table.add_column("load per expert")
    for col in ("min %", "max %", "CV", "MaxVio", "entropy", "aux", "z"):
        table.add_column(col, justify="right")
    for r in report:
        table.add_row(
            str(r["layer"]),
            _load_bars(r["load"]),
            f"{100 * min(r['load']):.1f}",
            f"{100 * max(r['load']):.1f}",
            f"{r['cv']:.3f}",
            f"{r['maxvio']:.3f}",
            f"{r['entropy']:.3f}",
            f"{r['aux_loss']:.4f}",
            f"{r['z_loss']:.4f}",
        )
    console.print(table)


# --- world ------------------------------------------------------------------------------------


@dataclass
class WorldSampleArgs:
    """Show generated task-world problems with their worked solutions."""

    task: str = "arith"
    """Task family (arith, chain, countdown, strings, icl) or a spec such as arith:3:op=add."""
    n: int = 3
    """Number of problems."""
    seed: int = 0
    """Generation seed (the same seed gives the same problems)."""
    split: Literal["train", "test"] = "train"
    """'test' shows held-out problems in held-out phrasings (what eval uses)."""
    digits: int | None = None
    """arith: digits per operand."""
    op: str | None = None
    """arith: add, sub, mul; strings: reverse, sort, count, ... (default: any)."""
    steps: int | None = None
    """chain: number of steps."""
    numbers: int | None = None
    """countdown: how many starting numbers."""
    largest: int | None = None
    """countdown: largest starting number."""
    length: int | None = None
    """strings: characters in the input string."""
    k: int | None = None
    """icl: number of in-context examples."""
    rule: str | None = None
    """icl: cipher, affine or list (default: any)."""
    json: bool = False
    """Print one JSON object per problem instead of text."""


WORLD_KNOBS = ("digits", "op", "steps", "numbers", "largest", "length", "k", "rule")


def cmd_world(argv: list[str]) -> None:
    usage = "usage: lmlab world sample [--task T --n N ...] | lmlab world list"
    if argv in (["-h"], ["--help"]):
        print(usage)
        return
    if not argv or argv[0] not in ("sample", "list"):
        raise ValueError(usage)
    from lmlab.data import world

    if argv[0] == "list":
        table = Table(title="lmlab world: task families")
        for col in ("task", "what", "knobs (default, range)"):
            table.add_column(col)
        for fam in world.FAMILIES.values():
            knobs = "; ".join(
                f"{name}={k.default} ({'|'.join(k.choices) if k.choices else f'{k.lo}..{k.hi}'})"
                for name, k in fam.knobs.items()
            )
            table.add_row(fam.name, fam.doc, knobs)
        console.print(table)
        return
    args = tyro.cli(WorldSampleArgs, args=argv[1:], prog="lmlab world sample")
    flags = {k: getattr(args, k) for k in WORLD_KNOBS if getattr(args, k) is not None}
    spec = args.task + "".join(f":{k}={v}" for k, v in flags.items())
    name, knobs = world.parse_task(spec)
    problems = world.generate(name, args.n, seed=args.seed, split=args.split, **knobs)
    for i, p in enumerate(problems):
        if args.json:
            print(json.dumps(dataclasses.asdict(p)))
            continue
        console.rule(f"{name} {i + 1}/{args.n}  ({args.split}, key {p.key})")
        console.print(f"Q: {p.question}\nA: {p.answer}\n\n{p.trace}", markup=False, highlight=False)


# --- sft --------------------------------------------------------------------------------------


@dataclass
class SFTArgs:
    """Fine-tune a run on chats (world tasks or a chat JSONL file) into a new run directory."""

    run: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")] = None
    """Base run directory (its latest checkpoint is fine-tuned); not with --resume."""
    sft: Annotated[SFTConfig, tyro.conf.arg(name="")] = field(default_factory=SFTConfig)
    train: TrainConfig = field(default_factory=sft_train_config)
    out: Path | None = None
    """Output run directory (default: RUN-sft next to the base run)."""
    resume: Annotated[Path | None, tyro.conf.arg(metavar="OUT")] = None
    """Continue the SFT run in OUT from its latest checkpoint (settings from its stage.json)."""
    quiet: bool = False
    """No progress bar."""


def cmd_sft(argv: list[str]) -> None:
    args = tyro.cli(SFTArgs, args=argv, prog="lmlab sft")
    from lmlab.train import sft

    if args.resume is not None:
        sft.resume(args.resume, show_progress=not args.quiet)
        return
    if args.run is None:
        raise ValueError("give the base run to fine-tune (lmlab sft RUN), or --resume OUT")
    out = args.out or args.run.with_name(args.run.name + "-sft")
    sft.sft(args.run, out, args.train, args.sft, show_progress=not args.quiet)


# --- eval -------------------------------------------------------------------------------------


@dataclass
class EvalArgs:
    """Evaluate a run on world tasks (held-out problems and phrasings) through the engine."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    tasks: str = "arith:3,chain,strings,icl"
    """Comma-separated task specs: NAME[:PRIMARY][:KNOB=VALUE...], e.g. arith:3:op=add,icl:k=8."""
    strategy: str = "direct"
    """'direct' (answer at once) or 'cot' (the user asks to think step by step)."""
    n: int = 100
    """Problems per task."""
    seed: int = 0
    """Seed of the test problems (and of sampling)."""
    batch_size: int = 32
    """Prompts generated together."""
    max_new_tokens: int | None = None
    """Generation budget per answer (default: twice the longest gold reply, within context; 96
    with --judge world)."""
    out: Path | None = None
    """Write the full report (metrics and example outputs) to this JSON file."""
    device: str = "cpu"
    """cpu or cuda[:N]."""
    judge: Literal["none", "world"] = "none"
    """'world': instead of accuracy, the gold-judged win rate of RUN against --baseline."""
    baseline: Path | None = None
    """The run to compare against with --judge world (e.g. the SFT run before RLHF)."""
    compile: bool = False
    """Generate with prepacked weights and a compiled decode step (docs/inference.md): compiling
    costs about 45 s on 2 CPU cores up front, then decoding is faster (not with --judge world)."""


def cmd_eval(argv: list[str]) -> None:
    args = tyro.cli(EvalArgs, args=argv, prog="lmlab eval")
    from lmlab.eval.harness import check_strategy, evaluate, print_table
    from lmlab.model.load import load_run
    from lmlab.runs import write_atomic

    check_strategy(args.strategy)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.out is not None and not args.out.parent.is_dir():
        raise ValueError(f"cannot write {args.out}: folder {args.out.parent} does not exist")
    if args.judge == "world":
        from lmlab.eval.judge import win_rate

        if args.compile:
            raise ValueError("--compile does not apply to --judge world")

        if args.baseline is None:
            raise ValueError("--judge world compares two runs: give --baseline RUN")
        report = win_rate(
            args.run,
            args.baseline,
            tasks,
            args.n,
            args.seed,
            max_new_tokens=args.max_new_tokens or 96,
        )
        console.print_json(data=report)
        if args.out is not None:
            write_atomic(args.out, json.dumps(report, indent=2) + "\n")
        return
    model, tok, _ = load_run(args.run, args.device)
    engine = None
    if args.compile:
        from lmlab.infer import Engine

        engine = Engine(model, tok, max_batch=args.batch_size, compile=True, prepack=True)
        with console.status("compiling the decode step"):
            engine.warm_up()
    report = evaluate(
        model,
        tok,
        tasks,
        args.strategy,
        args.n,
        args.seed,
        args.max_new_tokens,
        args.batch_size,
        engine=engine,
    )
    report["run"] = str(args.run)
    print_table(report, console)
    if args.out is not None:
        write_atomic(args.out, json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {args.out}")


# --- scaling ----------------------------------------------------------------------------------


@dataclass
class ScalingPlanArgs:
    """Plan a scaling sweep: per FLOP budget, a ladder of shapes and their token counts."""

    out: Path
    """Sweep directory (plan.json is written there; runs go to OUT/runs/NAME)."""
    plan: Annotated[PlanConfig, tyro.conf.arg(name="")] = field(default_factory=PlanConfig)


@dataclass
class ScalingRunArgs:
    """Run (or resume) every unfinished run of a sweep."""

    sweep: Annotated[Path, tyro.conf.Positional]
    """Sweep directory made by `lmlab scaling plan`."""
    workers: int = 1
    """Runs trained at the same time, each in its own process."""
    threads: int | None = None
    """Torch threads per worker (default 1: for small models, use --workers instead)."""


@dataclass
class ScalingFitArgs:
    """Fit Chinchilla's approaches 1-3 to a sweep or a points CSV (params,tokens,loss)."""

    src: Annotated[Path, tyro.conf.Positional]
    """Sweep directory or CSV with columns params, tokens, loss (optional flops, budget, run)."""
    out: Path | None = None
    """Where summary.json and the PNGs go (default SRC/fit, or SRC-fit next to a CSV)."""
    count: Literal["total", "non_embedding"] | None = None
    """Sweeps only: count all parameters or the non-embedding ones (default: as planned)."""
    bootstrap: int = 200
    """Bootstrap refits for Approach 3's intervals (0: none)."""
    seed: int = 0
    """Bootstrap seed."""
    starts: int = 32
    """Approach 3: L-BFGS runs from this many of the best grid initialisations."""
    plots: bool = True
    """Write the PNG plots."""
    json: bool = False
    """Print summary.json's object as the last line."""


@dataclass
class ScalingPredictArgs:
    """Compute-optimal and inference-aware model for a budget, from a fitted source."""

    src: Annotated[Path, tyro.conf.Positional]
    """Sweep directory or points CSV."""
    budget: float
    """Training FLOP budget C."""
    inference_tokens: float = 0.0
    """Tokens the model will process at inference over its life (Sardana et al. 2023)."""
    count: Literal["total", "non_embedding"] | None = None
    """Sweeps only: parameter counting (default: as planned)."""
    bootstrap: int = 200
    """Bootstrap refits for the tokens-per-parameter interval."""
    seed: int = 0
    """Bootstrap seed."""
    starts: int = 32
    """Approach 3: L-BFGS runs from this many of the best grid initialisations."""
    out: Path | None = None
    """Sweeps only: plan one validation run at the predicted optimum into this directory
    (then `lmlab scaling run OUT` trains it and prints predicted vs measured loss)."""
    json: bool = False
    """Print the prediction as JSON on the last line."""


def cmd_scaling(argv: list[str]) -> None:
    verbs = ("plan", "run", "fit", "predict")
    usage = "usage: lmlab scaling plan|run|fit|predict ... (--help after the verb)"
    if argv in (["-h"], ["--help"]):
        print(usage)
        return
    if not argv or argv[0] not in verbs:
        raise ValueError(usage)
    verb, rest = argv[0], argv[1:]
    prog = f"lmlab scaling {verb}"
    if verb == "plan":
        from lmlab.scaling.plan import make_plan, resolve_corpus, write_plan

        pargs = tyro.cli(ScalingPlanArgs, args=rest, prog=prog)
        pargs.plan.validate()
        plan = make_plan(pargs.plan, resolve_corpus(pargs.plan))
        path = write_plan(plan, pargs.out)
        table = Table(title=f"lmlab scaling plan: {path}")
        for col in ("run", "budget", "N", "D", "D/N", "steps", "FLOPs vs budget", "est."):
            table.add_column(col, justify="right")
        for r in plan["runs"]:
            est = r["est_seconds"]
            table.add_row(
                r["name"],
                f"{r['budget']:.2g}",
                f"{r['params']:,}",
                f"{r['tokens']:,}",
                f"{r['tokens'] / r['params']:.1f}",
                str(r["steps"]),
                f"{r['flops'] / r['budget'] - 1:+.1%}",
                "-" if est is None else f"{est / 60:.1f} min",
            )
        console.print(table)
        total = sum(r["est_seconds"] or 0 for r in plan["runs"])
        console.print(f"estimated total: {total / 60:.1f} CPU-process minutes at 1 worker")
    elif verb == "run":
        from lmlab.scaling.run import run_sweep

        rargs = tyro.cli(ScalingRunArgs, args=rest, prog=prog)
        rows = run_sweep(rargs.sweep, rargs.workers, rargs.threads, report=console.print)
        table = Table(title=f"lmlab scaling run: {rargs.sweep}")
        for col in ("run", "N", "D", "val loss", "predicted", "wall"):
            table.add_column(col, justify="right")
        for r in rows:
            pred = r.get("predicted_loss")
            table.add_row(
                r["run"],
                f"{r['params']:,}",
                f"{r['tokens']:,}",
                f"{r['loss']:.4f}",
                "-" if pred is None else f"{pred:.4f} ({r['loss'] / pred - 1:+.1%})",
                "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}s",
            )
        console.print(table)
        console.print(f"{len(rows)} finished runs in {rargs.sweep / 'points.csv'}")
    elif verb == "fit":
        from lmlab.scaling.report import fit_source

        fargs = tyro.cli(ScalingFitArgs, args=rest, prog=prog)
        result, _, _ = fit_source(
            fargs.src,
            fargs.out,
            fargs.count,
            fargs.bootstrap,
            fargs.seed,
            fargs.plots,
            fargs.starts,
        )
        for name in ("approach1", "approach2", "approach3"):
            r = result[name]
            console.print(
                f"{name}: "
                + (
                    f"error: {r['error']}"
                    if "error" in r
                    else f"a = {r['a']:.3f}  b = {r['b']:.3f}"
                )
            )
        if "intervals" in result.get("approach3", {}):
            r = result["approach3"]
            console.print(
                f"approach3: E={r['E']:.3f} A={r['A']:.4g} B={r['B']:.4g} "
                f"alpha={r['alpha']:.3f} beta={r['beta']:.3f}  95% CI a: "
                f"{r['intervals']['a']}"
            )
        from lmlab.scaling.report import default_out

        written = fargs.out or default_out(fargs.src)
        console.print(
            f"wrote {written / 'summary.json'}" + (" and the PNG plots" if fargs.plots else "")
        )
        if fargs.json:
            print(json.dumps(result))
    else:
        from lmlab.scaling.report import fit_source, plan_validation, predict

        qargs = tyro.cli(ScalingPredictArgs, args=rest, prog=prog)
        if qargs.inference_tokens < 0:
            raise ValueError("--inference-tokens must be >= 0")
        if qargs.out is not None and not qargs.src.is_dir():
            raise ValueError("--out (a validation run) needs a sweep directory as SRC")
        _, _, fits = fit_source(
            qargs.src,
            None,
            qargs.count,
            qargs.bootstrap,
            qargs.seed,
            plots=False,
            n_starts=qargs.starts,
        )
        result = predict(fits, qargs.budget, qargs.inference_tokens)
        if qargs.out is not None:
            result["validation_run"] = plan_validation(
                qargs.src, fits, qargs.budget, qargs.out, qargs.count
            )
        console.print_json(data=result)
        if qargs.json:
            print(json.dumps(result))


# --- rlhf: prefs / rm / dpo / grpo / ppo ------------------------------------------------------


@dataclass
class PrefsArgs:
    """Sample k responses per world prompt and label pairs with the world's gold annotator."""

    run: Annotated[Path, tyro.conf.Positional]
    """The (SFT) run to sample from."""
    out: Path
    """Output JSONL of {"prompt", "chosen", "rejected", ...} rows."""
    task: str = "chain,strings"
    """Comma-separated world tasks."""
    n_prompts: int = 2000
    """Prompts to sample."""
    k: int = 4
    """Responses per prompt."""
    annotator: str = "world"
    """Who labels the pairs (world: the programmatic gold preference)."""
    noise: float = 0.0
    """Probability of flipping a label (human disagreement)."""
    margin: float = DEFAULT_MARGIN
    """Gold difference below which two responses are a tie and make no pair."""
    temperature: float = 1.0
    """Sampling temperature."""
    max_new_tokens: int = 96
    """Longest response."""
    seed: int = 0
    """Seed for prompts, sampling and noise."""
    quiet: bool = False
    """No progress display."""


def cmd_prefs(argv: list[str]) -> None:
    args = tyro.cli(PrefsArgs, args=argv, prog="lmlab prefs")
    from lmlab.eval.annotate import generate_prefs

    if args.annotator != "world":
        raise ValueError(
            f"unknown annotator {args.annotator!r}: use world here, `lmlab label` for a person"
        )
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    summary = generate_prefs(
        args.run,
        tasks,
        args.n_prompts,
        args.k,
        args.out,
        args.noise,
        args.seed,
        args.temperature,
        args.max_new_tokens,
        args.margin,
        show_progress=not args.quiet,
    )
    console.print_json(data=summary)


def _train_defaults(max_steps: int, lr: float, batch_size: int) -> TrainConfig:
    return TrainConfig(
        max_steps=max_steps,
        lr=lr,
        min_lr=lr / 10,
        warmup_steps=10,
        batch_size=batch_size,
        eval_every=max(1, max_steps // 5),
    )


@dataclass
class LabelArgs:
    """A person labels preferences: pick the better of two sampled answers (resumable)."""

    run: Annotated[Path, tyro.conf.Positional]
    """The run to sample answers from."""
    out: Path
    """JSONL the labels are appended to (re-run with the same file to resume)."""
    n: int = 50
    """Prompts to ask about."""
    task: str = "chain,strings"
    """Comma-separated world tasks."""
    seed: int = 0
    """Seed of the prompts and samples."""
    max_new_tokens: int = 96
    """Longest answer."""


def cmd_label(argv: list[str]) -> None:
    args = tyro.cli(LabelArgs, args=argv, prog="lmlab label")
    from lmlab.eval.annotate import label_session

    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    counts = label_session(args.run, args.out, args.n, tasks, args.seed, args.max_new_tokens)
    console.print_json(data=counts)


@dataclass
class RewardArgs:
    """Train a Bradley-Terry reward model from an SFT run on preference pairs."""

    run: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")] = None
    """The SFT run the reward model starts from; not with --resume."""
    data: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Preference JSONL ({"prompt", "chosen", "rejected"} rows; required unless --resume)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Output run directory (required unless --resume)."""
    train: TrainConfig = field(default_factory=lambda: _train_defaults(300, 1e-4, 16))
    val_fraction: float = 0.1
    """Held-out fraction of pairs."""
    resume: Annotated[Path | None, tyro.conf.arg(metavar="OUT")] = None
    """Continue the reward-model run in OUT (settings from its stage.json)."""
    quiet: bool = False
    """No progress display."""


def cmd_rm(argv: list[str]) -> None:
    args = tyro.cli(RewardArgs, args=argv, prog="lmlab rm")
    from lmlab.train import reward

    if args.resume is not None:
        result = reward.resume(args.resume, show_progress=not args.quiet)
    else:
        if args.run is None or args.data is None or args.out is None:
            raise ValueError("lmlab rm needs RUN, --data and --out (or --resume OUT)")
        result = reward.train_reward_model(
            args.run, args.data, args.out, args.train, args.val_fraction, not args.quiet
        )
    console.print_json(data=result.summary)


@dataclass
class DPOArgs:
    """Direct Preference Optimization from an SFT run on preference pairs."""

    run: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")] = None
    """The SFT run (policy init and frozen reference); not with --resume."""
    data: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Preference JSONL (required unless --resume)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Output run directory (required unless --resume)."""
    beta: float = 0.1
    """DPO temperature beta."""
    train: TrainConfig = field(default_factory=lambda: _train_defaults(200, 1e-5, 16))
    resume: Annotated[Path | None, tyro.conf.arg(metavar="OUT")] = None
    """Continue the DPO run in OUT from its latest checkpoint (settings from its stage.json)."""
    quiet: bool = False
    """No progress display."""


def cmd_dpo(argv: list[str]) -> None:
    args = tyro.cli(DPOArgs, args=argv, prog="lmlab dpo")
    from lmlab.train import dpo

    if args.resume is not None:
        dpo.resume(args.resume, show_progress=not args.quiet)
        return
    if args.run is None or args.data is None or args.out is None:
        raise ValueError("lmlab dpo needs RUN, --data and --out (or --resume OUT)")
    dpo.train_dpo(
        args.run, args.data, args.out, args.train, args.beta, show_progress=not args.quiet
    )


@dataclass
class GRPOArgs:
    """GRPO on verifiable world rewards."""

    run: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")] = None
    """The SFT run to improve; not with --resume."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Output run directory (required unless --resume)."""
    grpo: Annotated[GRPOConfig, tyro.conf.arg(name="")] = field(default_factory=GRPOConfig)
    train: TrainConfig = field(default_factory=lambda: _train_defaults(50, 1e-5, 1))
    resume: Annotated[Path | None, tyro.conf.arg(metavar="OUT")] = None
    """Continue the GRPO run in OUT from its latest checkpoint (settings from its stage.json)."""
    quiet: bool = False
    """No progress display."""


def cmd_grpo(argv: list[str]) -> None:
    args = tyro.cli(GRPOArgs, args=argv, prog="lmlab grpo")
    from lmlab.train import grpo

    if args.resume is not None:
        result = grpo.resume(args.resume, show_progress=not args.quiet)
    else:
        if args.run is None or args.out is None:
            raise ValueError("lmlab grpo needs RUN and --out (or --resume OUT)")
        result = grpo.train_grpo(
            args.run, args.out, args.train, args.grpo, show_progress=not args.quiet
        )
    console.print_json(data=result.summary)


@dataclass
class PPOArgs:
    """PPO against a reward model, with a KL penalty to the SFT reference."""

    run: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")] = None
    """The SFT run (policy init and frozen reference); not with --resume."""
    reward: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Reward model run (`lmlab rm`); the value model starts from it (required unless --resume)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Output run directory (the policy; `out/value` holds the value model; required unless
    --resume)."""
    ppo: Annotated[PPOConfig, tyro.conf.arg(name="")] = field(default_factory=PPOConfig)
    train: TrainConfig = field(default_factory=lambda: _train_defaults(1, 1e-5, 1))
    resume: Annotated[Path | None, tyro.conf.arg(metavar="OUT")] = None
    """Continue the PPO run in OUT from its latest checkpoint (settings from its stage.json)."""
    quiet: bool = False
    """No progress display."""


def cmd_ppo(argv: list[str]) -> None:
    args = tyro.cli(PPOArgs, args=argv, prog="lmlab ppo")
    from lmlab.train import ppo

    if args.resume is not None:
        ppo.resume(args.resume, show_progress=not args.quiet)
        return
    if args.run is None or args.reward is None or args.out is None:
        raise ValueError("lmlab ppo needs RUN, --reward and --out (or --resume OUT)")
    ppo.train_ppo(
        args.run, args.reward, args.out, args.train, args.ppo, show_progress=not args.quiet
    )


# --- reason -----------------------------------------------------------------------------------


@dataclass
class ReasonArgs:
    """Answer world test problems with a reasoning strategy, or compare strategies' accuracy
    against the compute they spend (FLOPs with the prompt prefill, tokens generated)."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory (a model fine-tuned on the world, e.g. by `lmlab sft`)."""
    task: str = "arith"
    """Task spec NAME[:PRIMARY][:KNOB=VALUE...], e.g. arith:4, countdown:numbers=4."""
    digits: int | None = None
    """arith: digits per operand."""
    steps: int | None = None
    """chain: number of steps."""
    numbers: int | None = None
    """countdown: how many starting numbers."""
    strategy: str = "direct"
    """direct, cot, fewshot-cot, sc, sc-weighted, tot or adaptive (NAME@N sets k, shots or
    breadth, e.g. sc@8)."""
    compare: str | None = None
    """Comma-separated strategies to compare instead, e.g. direct,cot,sc@8,tot,adaptive."""
    n: int = 100
    """Test problems."""
    k: Annotated[int | None, tyro.conf.arg(aliases=("-k",))] = None
    """Samples (sc, adaptive) or thoughts per state (tot)."""
    breadth: int | None = None
    """tot: states kept per depth."""
    evaluator: str | None = None
    """tot: value (the model rates each state sure/likely/impossible; the default), vote (the
    model picks the most promising state of a step), likelihood (the path's own probability:
    beam search), verifier (tasks with a verifier: countdown) or reward (needs --reward)."""
    n_evaluate: int | None = None
    """tot --evaluator value: replies sampled per state, their labels summed (default 3)."""
    n_vote: int | None = None
    """tot --evaluator vote: replies sampled per step, votes counted per state (default 5)."""
    generator: str | None = None
    """tot: sample or propose."""
    search: str | None = None
    """tot: bfs or dfs."""
    reward: Path | None = None
    """Reward model run (`lmlab rm`) for --evaluator reward."""
    budget: int | None = None
    """Most tokens generated per question (adaptive defaults to 2048)."""
    temperature: float | None = None
    """Sampling temperature (sc, tot, adaptive)."""
    shots: int | None = None
    """fewshot-cot: worked exemplars."""
    max_new_tokens: int | None = None
    """New-token cap per response (default: from the task's train-split replies)."""
    seed: int = 0
    """Seed of the test problems and of sampling."""
    plot: Path | None = None
    """With --compare: write the accuracy-vs-compute Pareto plot (PNG) here."""
    out: Path | None = None
    """Write the rows (and, for one strategy, every answer) as JSON here."""
    device: str = "cpu"
    """cpu or cuda[:N]."""
    batch_size: int = 64
    """Engine slots (sequences decoded together)."""


def cmd_reason(argv: list[str]) -> None:
    args = tyro.cli(ReasonArgs, args=argv, prog="lmlab reason")
    from lmlab.data import world
    from lmlab.reason import compare, parse_strategy, plot, print_rows, run_strategy
    from lmlab.reason.compare import settings_for
    from lmlab.runs import write_atomic

    knobs = {"digits": args.digits, "steps": args.steps, "numbers": args.numbers}
    spec = ":".join([args.task, *(f"{k}={v}" for k, v in knobs.items() if v is not None)])
    name, values = world.parse_task(spec)
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    for path in (args.plot, args.out):
        if path is not None and not path.parent.is_dir():
            raise ValueError(f"cannot write {path}: folder {path.parent} does not exist")
    if args.plot is not None and args.compare is None:
        raise ValueError("--plot needs --compare (a plot of one strategy is one point)")
    settings = {
        "task": spec,
        "k": args.k,
        "breadth": args.breadth,
        "evaluator": args.evaluator,
        "n_evaluate": args.n_evaluate,
        "n_vote": args.n_vote,
        "generator": args.generator,
        "search": args.search,
        "budget": args.budget,
        "temperature": args.temperature,
        "shots": args.shots,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
    }
    specs = [s.strip() for s in (args.compare or args.strategy).split(",") if s.strip()]
    for s in specs:  # every setting given must mean something to a strategy run
        parse_strategy(s, **settings_for(s, settings))
    if args.compare is None:
        extra = set(settings) - set(settings_for(specs[0], settings)) - {"seed"}
        given = sorted(k for k in extra if settings[k] is not None and k != "task")
        if given:
            raise ValueError(f"strategy {specs[0]} has no setting --{given[0].replace('_', '-')}")
    if args.evaluator == "reward":
        if args.reward is None:
            raise ValueError("--evaluator reward needs --reward RUN (a reward model run)")
        from lmlab.reason.tot import reward_model_fn

        settings["reward_fn"] = reward_model_fn(args.reward)
    elif args.reward is not None:
        raise ValueError("--reward is only used with --evaluator reward")
    if args.n_evaluate is not None and args.evaluator not in (None, "value"):
        raise ValueError("--n-evaluate is only used with --evaluator value")
    if args.n_vote is not None and args.evaluator != "vote":
        raise ValueError("--n-vote is only used with --evaluator vote")
    problems = world.generate(name, args.n, seed=args.seed, split="test", **values)
    from lmlab.infer import Engine

    widest = max(  # samples of one request: chains, thoughts, evaluator replies
        getattr(parse_strategy(s, **settings_for(s, settings)), a, 1)
        for s in specs
        for a in ("k", "n_evaluate", "n_vote")
    )
    engine = Engine.from_checkpoint(args.run, args.device, max_batch=max(args.batch_size, widest))
    title = f"lmlab reason {spec}  n={args.n}"
    report: dict = {"run": str(args.run), "task": spec, "n": args.n, "seed": args.seed}
    if args.compare is not None:
        rows = compare(engine, problems, specs, settings)
        if args.plot is not None:
            plot(rows, args.plot, title)
    else:
        row, results = run_strategy(engine, problems, specs[0], settings)
        rows = [row]
        report["answers"] = [
            {
                "question": p.question,
                "gold": p.answer,
                "answer": r.answer,
                "correct": bool(world.family(name).check(p, r.answer)) if r.answer else False,
                "tokens": r.compute.tokens,
                "traces": r.traces,
                **r.info,
            }
            for p, r in zip(problems, results, strict=True)
        ]
    report["rows"] = rows
    print_rows(rows, title, console)
    if args.plot is not None:
        console.print(f"wrote {args.plot}")
    if args.out is not None:
        write_atomic(args.out, json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {args.out}")


@dataclass
class OveroptArgs:
    """Reward over-optimisation: proxy RM on noisy labels, best-of-n and PPO against it."""

    run: Annotated[Path, tyro.conf.Positional]
    """The SFT run."""
    out: Path
    """Output directory (prefs, proxy RM, PPO run, summary.json, overopt.png)."""
    task: str = "chain,strings"
    """Comma-separated world tasks."""
    n_pref_prompts: int = 300
    """Prompts for the proxy's (few) preference labels."""
    noise: float = 0.25
    """Label noise of the proxy's training data."""
    bon_prompts: int = 64
    """Prompts for the best-of-n curve."""
    bon_max: int = 16
    """Largest n of best-of-n."""
    ppo: Annotated[PPOConfig, tyro.conf.arg(name="")] = field(
        default_factory=lambda: PPOConfig(iterations=60, kl_beta=0.0)
    )
    seed: int = 0
    """Seed."""
    quiet: bool = False
    """No progress bars."""


def cmd_rlhf(argv: list[str]) -> None:
    usage = "usage: lmlab rlhf overopt RUN --out DIR [options] (--help after the verb)"
    if argv in (["-h"], ["--help"]):
        print(usage)
        return
    if not argv or argv[0] != "overopt":
        raise ValueError(usage)
    args = tyro.cli(OveroptArgs, args=argv[1:], prog="lmlab rlhf overopt")
    from lmlab.eval.overopt import run_overopt

    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    args.ppo.tasks = ",".join(tasks)
    summary = run_overopt(
        args.run,
        args.out,
        tasks,
        args.n_pref_prompts,
        args.noise,
        ppo=args.ppo,
        bon_prompts=args.bon_prompts,
        bon_max=args.bon_max,
        seed=args.seed,
        show_progress=not args.quiet,
    )
    console.print_json(data={k: v for k, v in summary.items() if not k.startswith("samples")})


# --- emergence --------------------------------------------------------------------------------


def cmd_emergence(argv: list[str]) -> None:
    from lmlab.eval.emergence import EmergenceArgs, run_ladder  # imports torch: only when used

    args = tyro.cli(EmergenceArgs, args=argv, prog="lmlab emergence")
    result = run_ladder(args.ladder, args.out, not args.quiet, report=console.print)
    table = Table(title=f"lmlab emergence {args.ladder.ladder}: sharpness (1 = one jump)")
    for col in ("spec", "exact match", "sharp", "char acc", "sharp", "gold logp/tok"):
        table.add_column(col, justify="left" if col == "spec" else "right")
    for e in result["summary"]:
        table.add_row(
            e["spec"],
            " ".join(f"{v:.2f}" for v in e["exact_match"]),
            f"{e['exact_match_sharpness']:.2f}",
            " ".join(f"{v:.2f}" for v in e["char_accuracy"]),
            f"{e['char_accuracy_sharpness']:.2f}",
            " ".join(f"{v:.2f}" for v in e["gold_logprob_per_token"]),
        )
    console.print(table)
    console.print(f"wrote {args.out / 'emergence.json'} and {len(result['plots'])} plots")


# --- serve ------------------------------------------------------------------------------------


@dataclass
class ServeEngineArgs:
    """How `lmlab serve` builds its engine."""

    max_batch: int = 16
    """Engine slots: samples decoded together (continuous batching)."""
    device: str = "cpu"
    """cpu or cuda[:N]."""
    compile: bool = False
    """Compile the decode step (torch.compile; on the CPU also the native attention kernel),
    before serving: a slower start (41-81 s on 2 CPU cores for a 0.9M-parameter run), faster
    decoding."""
    decode_steps: int | None = None
    """Greedy decode steps per compiled call (default: 4 with --compile, else 1). 1 compiles
    in about a third of the time; 4 decodes 9-17% faster (docs/inference.md)."""


@dataclass
class ServeArgs:
    """Serve a run over an OpenAI-compatible HTTP API, with a web chat page at /."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    port: int = 8000
    """TCP port."""
    host: str = "127.0.0.1"
    """Interface to bind (127.0.0.1: this machine only; 0.0.0.0: every interface)."""
    serve: Annotated[ServeConfig, tyro.conf.arg(name="")] = field(default_factory=ServeConfig)
    engine: Annotated[ServeEngineArgs, tyro.conf.arg(name="")] = field(
        default_factory=ServeEngineArgs
    )


def cmd_serve(argv: list[str]) -> None:
    import os

    args = tyro.cli(ServeArgs, args=argv, prog="lmlab serve")
    try:
        import uvicorn

        from lmlab.serve.app import create_app
    except ImportError as e:
        raise ValueError(
            f"lmlab serve needs the serve extra ({e.name} is missing): pip install 'lmlab[serve]'"
        ) from None
    eng = args.engine
    for flag, value, low in (
        ("--max-batch", eng.max_batch, 1),
        ("--port", args.port, 0),
        ("--decode-steps", 1 if eng.decode_steps is None else eng.decode_steps, 1),
    ):
        if value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    cfg = dataclasses.replace(
        args.serve,
        name=args.serve.name or args.run.resolve().name,
        api_key=args.serve.api_key or os.environ.get("LMLAB_API_KEY") or None,
    )
    cfg.validate()
    from lmlab.infer import Engine

    engine = Engine.from_checkpoint(
        args.run,
        eng.device,
        max_batch=eng.max_batch,
        compile=eng.compile,
        decode_steps=eng.decode_steps,
    )
    if eng.compile:
        with console.status("compiling the decode step"):
            engine.warm_up()
    url = f"http://{args.host}:{args.port}"
    key = " (API key required)" if cfg.api_key else ""
    console.print(f"serving {args.run} as model {cfg.name!r}: chat page {url}/, API {url}/v1{key}")
    uvicorn.run(create_app(engine, cfg), host=args.host, port=args.port, log_level="info")


# --- entry point ------------------------------------------------------------------------------

COMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "tokenize": (cmd_tokenize, "train a tokenizer and build token shards"),
    "pretrain": (cmd_pretrain, "pretrain (or resume) a model on a corpus"),
    "info": (cmd_info, "parameter counts and FLOPs per token"),
    "sample": (cmd_sample, "print samples from a trained run"),
    "generate": (cmd_generate, "generate completions with the inference engine"),
    "chat": (cmd_chat, "chat with a run in the terminal"),
    "export": (cmd_export, "export a run to Hugging Face format (Llama / Mixtral / Qwen2-MoE)"),
    "import": (cmd_import, "import a local Hugging Face checkpoint as a run"),
    "moe-stats": (cmd_moe_stats, "per-layer expert load, CV, MaxVio, router entropy of a run"),
    "world": (cmd_world, "show task-world problems (world sample) or list the tasks"),
    "sft": (cmd_sft, "supervised fine-tuning on world tasks or a chat JSONL"),
    "eval": (cmd_eval, "evaluate a run on world tasks through the engine"),
    "reason": (cmd_reason, "reasoning strategies (CoT, self-consistency, ToT, adaptive)"),
    "emergence": (cmd_emergence, "model-size ladder: exact match vs continuous metrics"),
    "prefs": (cmd_prefs, "sample responses and label preference pairs (world annotator)"),
    "label": (cmd_label, "a person labels preference pairs in the terminal (resumable)"),
    "rm": (cmd_rm, "train a Bradley-Terry reward model on preference pairs"),
    "dpo": (cmd_dpo, "Direct Preference Optimization on preference pairs"),
    "grpo": (cmd_grpo, "GRPO on verifiable world rewards"),
    "ppo": (cmd_ppo, "PPO against a reward model with a KL penalty"),
    "rlhf": (cmd_rlhf, "RLHF experiments: `rlhf overopt` (reward over-optimisation)"),
    "scaling": (cmd_scaling, "scaling-law sweeps: plan, run, fit (approaches 1-3), predict"),
    "serve": (cmd_serve, "OpenAI-compatible API server and web chat page"),
    "run": (
        lambda argv: _lab_command("run", argv),
        "the whole life of a model, then its report card",
    ),
    "report": (lambda argv: _lab_command("report", argv), "rebuild a lab run's report card"),
}


def _lab_command(name: str, argv: list[str]) -> None:
    import importlib

    importlib.import_module(f"lmlab.commands.{name}").run(argv)


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
