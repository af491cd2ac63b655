"""Fuzz lmlab's command line and server with bad input and count how each input is answered.

    python tests/reliability/fuzz.py [--seed 0] [--per-group 3] [--timeout 60] [--verbose]

Every command (and every verb of `world`, `rlhf`, `scaling`) gets cases of each category that
applies to it, drawn at random (seeded) from all the cases its flags allow:

- `bad_flag`: a misspelt flag (a real one with a letter dropped), an unknown one, a stray
  positional argument;
- `bad_value`: not a number for a number, NaN or infinity for a float, an unknown choice, an
  unknown task, strategy, preset or device;
- `size`: zero, negative or absurdly large counts (samples, slots, problems, ports, ...);
- `missing_path`: an input run, file or folder that does not exist;
- `corrupt_file`: an input that exists but is not what it should be (a plain file for a run,
  an empty folder, garbage or wrongly typed `config.json`, a garbage `tokenizer.json`, empty
  or truncated weights, a garbage data file);
- `occupied_output`: an output that is an existing run or non-empty folder, or that lies under a
  plain file;
- `server`: malformed, oversized and out-of-range requests to a running `lmlab serve`.

Each command case runs in a forked child of this process (so that a crash, a hang or a memory
blow-up cannot take the fuzzer with it) with a time and a memory limit, in a folder of fixtures
(a tiny random run, a tiny MoE run, a reward model, an exported HF folder, preference pairs, a
planned sweep, a points CSV, corrupt copies) whose every file is compared before and after.

An answer is a *clear error* (exit code 2 and exactly one stderr line `error: ...`; a server
answer: a 4xx with OpenAI's error body), a *traceback* (a Python traceback, a crash or a killed
process; a server answer: a 5xx or a dropped connection), a *silent accept* (exit code 0, or
still working at the time limit; a server answer: a 2xx) or *unclear* (anything else).
`files_changed` counts cases after which a fixture file was created, changed or removed.

The last line printed is one JSON object: tried, clear_errors, tracebacks, silent_accepts,
unclear, files_changed (and the seconds it took). `--verbose` prints every case that is not a
clear error, with what it printed, before it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import http.client
import importlib
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import tyro

from lmlab.cli import main as lmlab_main
from lmlab.config import DataConfig, ModelConfig, MoEConfig, RunConfig, TrainConfig
from lmlab.data import world
from lmlab.data.tokenizer import char_tokenizer
from lmlab.model.transformer import Transformer
from lmlab.train.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CORPUS_TEXT = "".join(
    f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n# line {i}: the quick brown fox\n"
    for i in range(200)
)

# --- the commands: argument classes and one valid (cheap) invocation each ------------------------

TINY_PLAN = (
    "--corpus {corpus} --tokenizer char --context-length 32 --head-dim 8 --aspect 16 "
    "--batch-size 2 --min-steps 2 --evals 2 --eval-iters 1 --probe-steps 0 --sizes 3 "
    "--budgets 3e7,1e8"
)

COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module under lmlab.commands, its argument class, a valid argv; {x} are fixtures)
    "tokenize": ("tokenize", "TokenizeArgs", "--out {new} --corpus {corpus} --tokenizer char"),
    "pretrain": (
        "pretrain",
        "PretrainArgs",
        "--corpus {corpus} --tokenizer char --model.n-layer 1 --model.d-model 32 "
        "--model.context-length 32 --train.batch-size 2 --train.eval-iters 1 "
        "--train.max-steps 2 --out {new} --quiet",
    ),
    "info": ("info", "InfoArgs", "{run}"),
    "sample": ("sample", "SampleArgs", "{run} --max-new-tokens 4"),
    "generate": ("generate", "GenerateArgs", "{run} --max-new-tokens 4"),
    "chat": ("chat", "ChatArgs", "{run} --max-new-tokens 4"),
    "export": ("export", "ExportArgs", "{run} --out {new}"),
    "import": ("import_", "ImportArgs", "{hf} --out {new}"),
    "moe-stats": ("moe_stats", "MoEStatsArgs", "{moe} --batches 1 --batch-size 1 --png {new}.png"),
    "world sample": ("world", "WorldSampleArgs", "--task arith --n 2"),
    "sft": ("sft", "SFTArgs", "{run} --out {new} --train.max-steps 1 --n-world 20 --quiet"),
    "eval": ("eval", "EvalArgs", "{run} --tasks arith:1 --n 2 --max-new-tokens 4"),
    "reason": ("reason", "ReasonArgs", "{run} --task arith:1 --n 1"),
    "emergence": (
        "emergence",
        "EmergenceArgs",
        "--out {new} --ladder nano,micro --steps 1 --sft-steps 1 --n-world 20 --n 2 --quiet",
    ),
    "prefs": (
        "prefs",
        "PrefsArgs",
        "{run} --out {new}.jsonl --tasks arith:1 --n-prompts 2 --max-new-tokens 4 --quiet",
    ),
    "label": ("label", "LabelArgs", "{run} --out {new}.jsonl --n 1 --tasks arith:1"),
    "rm": ("rm", "RewardArgs", "{run} --data {prefs} --out {new} --train.max-steps 1 --quiet"),
    "dpo": ("dpo", "DPOArgs", "{run} --data {prefs} --out {new} --train.max-steps 1 --quiet"),
    "grpo": ("grpo", "GRPOArgs", "{run} --out {new} --train.max-steps 1 --eval-n 2 --quiet"),
    "ppo": ("ppo", "PPOArgs", "{run} --reward {rm} --out {new} --prompts-per-iter 2 --quiet"),
    "rlhf overopt": (
        "rlhf",
        "OveroptArgs",
        "{run} --out {new} --n-pref-prompts 4 --bon-prompts 2 --bon-max 2 --iterations 1 "
        "--prompts-per-iter 2 --quiet",
    ),
    "scaling plan": ("scaling", "ScalingPlanArgs", "--out {new} " + TINY_PLAN),
    "scaling run": ("scaling", "ScalingRunArgs", "{plan}"),
    "scaling fit": (
        "scaling",
        "ScalingFitArgs",
        "{points} --out {new} --bootstrap 2 --starts 2 --no-plots",
    ),
    "scaling predict": (
        "scaling",
        "ScalingPredictArgs",
        "{points} --budget 1e18 --bootstrap 2 --starts 2",
    ),
    "serve": ("serve", "ServeArgs", "{run} --port {port}"),
    "run": ("run", "RunArgs", "--preset tiny --out {new} --quiet"),
    "report": ("report", "ReportArgs", "{run}"),
}

POSITIVE = {
    # integer flags (last part of the name) that count something at least once: 0 is refused
    "n", "k", "n-prompts", "batch-size", "max-batch", "breadth", "batches", "bon-max",
    "bon-prompts", "n-pref-prompts", "shots", "n-evaluate", "n-vote", "step", "max-depth",
    "max-new-tokens", "decode-steps", "workers", "threads", "starts", "eval-tokens",
    "log-every", "eval-every", "eval-iters", "grad-accum", "max-steps", "n-world", "epochs",
    "iterations", "minibatch", "prompts-per-iter", "prompts-per-step", "eval-n", "kl-horizon",
    "n-layer", "d-model", "n-head", "vocab-size", "context-length", "max-tokens", "steps",
    "sft-steps", "min-steps", "evals", "aspect", "head-dim", "max-layers", "budget",
}  # fmt: skip
HUGE = {
    # integer flags that size memory or work (samples, slots, problems, batches, refits,
    # processes, model dimensions): 10**12 is refused (lmlab.bounds)
    "n", "k", "n-prompts", "batch-size", "max-batch", "breadth", "batches", "bon-max",
    "bon-prompts", "n-pref-prompts", "shots", "n-evaluate", "n-vote", "step", "max-depth",
    "max-new-tokens", "decode-steps", "workers", "threads", "starts", "bootstrap",
    "eval-tokens", "eval-iters", "grad-accum", "n-world", "prompts-per-iter",
    "prompts-per-step", "eval-n", "minibatch", "port", "vocab-size", "d-model", "n-layer",
    "n-head", "d-ff", "n-experts", "d-expert",
}  # fmt: skip
ZERO_OK = {("world sample", "k")}
"""(command, flag) pairs where 0 is a setting although the flag's name usually counts (the icl
family's k: zero in-context examples)."""
NEGATIVE_OK = {"seed"}
"""Integer flags for which a negative value is a legitimate setting."""
CHOICES = {
    # string flags whose value must name something: a bogus one must be refused
    "task", "tasks", "strategy", "compare", "preset", "corpus", "tokenizer", "annotator",
    "device", "evaluator", "generator", "search", "stages", "ladder", "abilities", "data",
    "budgets", "train.device",
}  # fmt: skip
INPUTS = {"run", "src", "sweep", "data", "reward", "resume", "baseline", "prefs"}
"""Path flags (or positionals) that are read."""
OUTPUTS = {"out", "plot", "png"}
"""Path flags that are written."""

# --- cases ---------------------------------------------------------------------------------------


@dataclass
class Case:
    command: str
    category: str
    argv: list[str]
    what: str


@dataclass
class Flag:
    name: str
    """As typed, without dashes (train.max-steps), or the positional's field name."""
    kind: Any
    positional: bool = False


def _strip_optional(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def flags_of(cls: type, prefix: str = "") -> list[Flag]:
    """The flags tyro makes of a dataclass: nested dataclasses become `prefix.` groups unless
    declared with `tyro.conf.arg(name="")`, underscores become dashes."""
    out: list[Flag] = []
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        hint, meta = hints[f.name], ()
        if typing.get_origin(hint) is typing.Annotated:
            hint, *rest = typing.get_args(hint)
            meta = tuple(rest)
        hint = _strip_optional(hint)
        positional = any(m is tyro.conf.Positional for m in meta)
        names = [getattr(m, "name", None) for m in meta]
        name = f.name.replace("_", "-")
        if dataclasses.is_dataclass(hint):
            inner = prefix if "" in names else f"{prefix}{name}."
            out += flags_of(hint, inner)  # type: ignore[arg-type]
        else:
            out.append(Flag(prefix + name, hint, positional))
    return out


def bad_values(command: str, flag: Flag) -> list[tuple[str, str]]:
    """(category, value) pairs that no setting of `flag` accepts."""
    leaf = flag.name.rsplit(".", 1)[-1]
    kind = flag.kind
    out: list[tuple[str, str]] = []
    if kind is bool:
        return out
    if kind is int:
        out.append(("bad_value", "abc"))
        out.append(("bad_value", "2.5"))
        if leaf not in NEGATIVE_OK:
            out.append(("size", "-1"))
        if leaf in POSITIVE and (command, leaf) not in ZERO_OK:
            out.append(("size", "0"))
        if leaf in HUGE:
            out.append(("size", str(10**12)))
        if leaf == "port":
            out.append(("size", "70000"))
    elif kind is float:
        out += [("bad_value", "abc"), ("bad_value", "nan"), ("bad_value", "inf")]
    elif typing.get_origin(kind) is typing.Literal or (
        (kind is str or typing.get_origin(kind) is list)
        and (flag.name in CHOICES or leaf in CHOICES)
    ):
        out.append(("bad_value", "bogus"))
    return out


def cases_for(name: str, cls: type, base: list[str], fx: dict[str, str]) -> list[Case]:
    """Every case of one command, built from its flags and its valid invocation."""
    flags = flags_of(cls)
    named = [f for f in flags if not f.positional]
    prefix = name.split()
    out: list[Case] = []

    def case(category: str, argv: list[str], what: str) -> None:
        out.append(Case(name, category, [*prefix, *argv], what))

    # bad_flag
    for f in named:
        typo = f.name[:-2] + f.name[-1] if len(f.name) > 3 else f.name + "x"
        if all(typo != g.name for g in named):
            case("bad_flag", [*base, f"--{typo}", "1"], f"misspelt --{f.name}")
    case("bad_flag", [*base, "--no-such-flag", "1"], "unknown flag")
    case("bad_flag", [*base, "stray"], "stray positional argument")
    # bad_value and size
    for f in named:
        for category, value in bad_values(name, f):
            case(category, with_flag(base, f"--{f.name}", value), f"--{f.name} {value}")
    # missing_path, corrupt_file, occupied_output: replace an input or output of the valid call
    for i, arg in enumerate(base):
        if not arg.startswith("{"):
            continue
        key = arg.strip("{}")
        flag = base[i - 1] if i and base[i - 1].startswith("--") else None
        role = flag.lstrip("-") if flag else "positional"
        if key in ("run", "moe", "hf", "plan", "rm", "points", "prefs"):
            case("missing_path", replace(base, i, fx["missing"]), f"{role}: missing path")
            for bad in CORRUPT[key] if (name, key) not in READS_ONLY else READS_ONLY[name, key]:
                case("corrupt_file", replace(base, i, fx[bad]), f"{role}: {bad}")
        elif key == "new" and flag in ("--out", "--png"):
            for bad in (
                ("afile_sub",) if name in REUSES_OUT else ("occupied", "afile_sub", "nonempty")
            ):
                case("occupied_output", replace(base, i, fx[bad]), f"{role}: {bad}")
    return [
        dataclasses.replace(c, argv=[a.format(**fx) if "{" in a else a for a in c.argv])
        for c in out
    ]


REUSES_OUT = {"emergence", "scaling fit", "label", "moe-stats"}
"""Commands whose output is meant to be reused: emergence continues a study's ladder in OUT,
`scaling fit` rewrites its own summary, `label` appends to its file (resumable), `moe-stats`
redraws its plot. Only an output under a plain file is a case for them."""

CORRUPT = {
    "run": [
        "afile",
        "empty_dir",
        "config_garbage",
        "config_types",
        "tokenizer_garbage",
        "weights_empty",
        "weights_truncated",
    ],
    "moe": ["afile", "empty_dir", "config_types", "weights_truncated"],
    "rm": ["afile", "empty_dir", "config_garbage", "weights_truncated"],
    "hf": ["afile", "empty_dir", "hf_config_garbage", "hf_config_missing_keys"],
    "plan": ["afile", "empty_dir", "plan_garbage"],
    "points": ["afile", "empty_dir", "points_garbage"],
    "prefs": ["afile", "empty_dir", "prefs_garbage", "prefs_empty"],
}
"""Corrupt stand-ins (fixtures) for each kind of input."""
READS_ONLY = {("info", "run"): ["afile", "empty_dir", "config_garbage", "config_types"]}
"""Commands that read only part of an input: `info` reads a run's config.json alone."""


def with_flag(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` with `flag` set to `value` (replacing its value if present)."""
    if flag in argv:
        i = argv.index(flag)
        return [*argv[: i + 1], value, *argv[i + 2 :]]
    return [*argv, flag, value]


def replace(argv: list[str], i: int, value: str) -> list[str]:
    return [*argv[:i], value, *argv[i + 1 :]]


def all_cases(fx: dict[str, str]) -> list[Case]:
    out = []
    for name, (module, cls_name, base) in COMMANDS.items():
        cls = getattr(importlib.import_module(f"lmlab.commands.{module}"), cls_name)
        out += cases_for(name, cls, base.split(), fx)
    return out


def sample(cases: list[Case], per_group: int, seed: int) -> list[Case]:
    """Up to `per_group` cases of each (command, category), at random."""
    rng = random.Random(seed)
    groups: dict[tuple[str, str], list[Case]] = {}
    for c in cases:
        groups.setdefault((c.command, c.category), []).append(c)
    chosen = []
    for key in sorted(groups):
        group = groups[key]
        chosen += rng.sample(group, min(per_group, len(group)))
    return chosen


# --- fixtures ------------------------------------------------------------------------------------


def make_fixtures(root: Path) -> None:
    """Build every fixture under `root` (run in its own process: the fuzzer forks its cases and
    must not have started torch's thread pools)."""
    torch.set_num_threads(1)
    root.mkdir(parents=True)
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS_TEXT)
    texts = [CORPUS_TEXT] + [p.trace + p.question for p in world.mixed(300, seed=1)]
    tok = char_tokenizer(texts)
    vocab = -(-tok.vocab_size // 64) * 64
    for name, moe in (("run", MoEConfig()), ("moe", MoEConfig(n_experts=4, top_k=2))):
        shape = dict(vocab_size=vocab, context_length=512, n_layer=2, n_head=4, d_model=32)
        cfg = RunConfig(
            model=ModelConfig(**shape, moe=moe),  # type: ignore[arg-type]
            train=TrainConfig(max_steps=1),
            data=DataConfig(corpus=str(corpus), tokenizer="char"),
        )
        torch.manual_seed(0)
        run = root / name
        run.mkdir()
        cfg.save(run / "config.json")
        tok.save(run / "tokenizer.json")
        save_checkpoint(run, Transformer(cfg.model), None, {"step": 0, "tokens": 0})
    rows = [
        {"prompt": f"What is {i} + {i + 1}?", "chosen": f"Answer: {2 * i + 1}", "rejected": "no"}
        for i in range(16)
    ]
    (root / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run, rm, prefs = root / "run", root / "rm", root / "prefs.jsonl"
    calls = [
        f"rm {run} --data {prefs} --out {rm} --train.max-steps 1 --train.batch-size 2 --quiet",
        f"export {run} --out {root / 'hf'}",
        f"scaling plan --out {root / 'plan'} " + TINY_PLAN.format(corpus=corpus),
    ]
    for call in calls:
        if lmlab_main(call.split()) != 0:
            raise SystemExit(f"fixture command failed: lmlab {call}")
    points = ["params,tokens,loss"]
    for n in (1e5, 3e5, 1e6, 3e6):
        for d in (1e6, 3e6, 1e7, 3e7):
            points.append(f"{n:g},{d:g},{1.7 + 400 / n**0.34 + 410 / d**0.28:.5f}")
    (root / "points.csv").write_text("\n".join(points) + "\n")
    # stand-ins that are not what they should be
    bad = root / "bad"
    bad.mkdir()
    (bad / "afile").write_text("not a run\n")
    (bad / "empty_dir").mkdir()
    for name, edit in (
        ("config_garbage", lambda p: (p / "config.json").write_text("{not json")),
        (
            "config_types",
            lambda p: (p / "config.json").write_text(
                json.dumps({"model": {"n_layer": "two", "d_model": [32]}})
            ),
        ),
        ("tokenizer_garbage", lambda p: (p / "tokenizer.json").write_text("\x00garbage")),
        ("weights_empty", lambda p: _weights(p).write_bytes(b"")),
        ("weights_truncated", lambda p: _truncate(_weights(p))),
    ):
        shutil.copytree(root / "run", bad / name)
        edit(bad / name)
    shutil.copytree(root / "hf", bad / "hf_config_garbage")
    (bad / "hf_config_garbage" / "config.json").write_text("[1, 2")
    shutil.copytree(root / "hf", bad / "hf_config_missing_keys")
    (bad / "hf_config_missing_keys" / "config.json").write_text('{"model_type": "llama"}')
    (bad / "plan_garbage").mkdir()
    (bad / "plan_garbage" / "plan.json").write_text('{"runs": 5}')
    (bad / "points_garbage.csv").write_text("params,tokens\nx,y\n")
    (bad / "prefs_garbage.jsonl").write_text('{"prompt": 1}\nnot json\n')
    (bad / "prefs_empty.jsonl").write_text("")
    shutil.copytree(root / "run", root / "occupied")
    (root / "nonempty").mkdir()
    (root / "nonempty" / "keep.txt").write_text("keep\n")
    (root / "cwd").mkdir()


def _weights(run: Path) -> Path:
    return next(run.rglob("model.safetensors"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def fixture_names(root: Path, port: int) -> dict[str, str]:
    bad = root / "bad"
    fx = {
        "corpus": root / "corpus.txt",
        "run": root / "run",
        "moe": root / "moe",
        "rm": root / "rm",
        "hf": root / "hf",
        "plan": root / "plan",
        "points": root / "points.csv",
        "prefs": root / "prefs.jsonl",
        "new": root / "cwd" / "new",
        "missing": root / "no" / "such" / "path",
        "occupied": root / "occupied",
        "nonempty": root / "nonempty",
        "afile_sub": bad / "afile" / "sub",
        "points_garbage": bad / "points_garbage.csv",
        "prefs_garbage": bad / "prefs_garbage.jsonl",
        "prefs_empty": bad / "prefs_empty.jsonl",
    }
    for name in (
        "afile",
        "empty_dir",
        "config_garbage",
        "config_types",
        "tokenizer_garbage",
        "weights_empty",
        "weights_truncated",
        "hf_config_garbage",
        "hf_config_missing_keys",
        "plan_garbage",
    ):
        fx[name] = bad / name
    out = {k: str(v) for k, v in fx.items()}
    out["port"] = str(port)
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with a digest of its content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.join(dirpath, d)] = "dir"
        for f in filenames:
            path = os.path.join(dirpath, f)
            try:
                out[path] = hashlib.sha1(Path(path).read_bytes()).hexdigest()
            except OSError:
                out[path] = "unreadable"
    return out


# --- running a case ------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # clear_error | traceback | silent_accept | unclear
    detail: str
    changed: list[str] = field(default_factory=list)


def run_case(case: Case, cwd: Path, timeout: float, memory: int) -> Outcome:
    """`lmlab ARGV` in a forked child with a time limit (SIGALRM) and an address-space limit."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                _child_setup(cwd, out_path, err_path, timeout, memory)
                code = lmlab_main(case.argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        status = _wait(pid, timeout + 15)
        out = out_path.read_text(errors="replace") if out_path.exists() else ""
        err = err_path.read_text(errors="replace") if err_path.exists() else ""
    return classify(status, out, err, timeout)


def _child_setup(cwd: Path, out_path: Path, err_path: Path, timeout: float, memory: int) -> None:
    os.setpgid(0, 0)  # its own process group: whatever it starts dies with it
    os.chdir(cwd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(os.open(out_path, os.O_WRONLY | os.O_CREAT, 0o600), 1)
    os.dup2(os.open(err_path, os.O_WRONLY | os.O_CREAT, 0o600), 2)
    signal.alarm(int(timeout))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    torch.set_num_threads(1)


def _wait(pid: int, limit: float) -> int | None:
    """The child's wait status, or None if it had to be killed after `limit` seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            _kill_group(pid)
            return status
        time.sleep(0.02)
    _kill_group(pid)
    os.waitpid(pid, 0)
    return None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def classify(status: int | None, out: str, err: str, timeout: float) -> Outcome:
    tail = " | ".join((err.strip() or out.strip())[-400:].splitlines())
    if status is None or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM):
        return Outcome("silent_accept", f"still running after {timeout:g} s: {tail}")
    if os.WIFSIGNALED(status):
        return Outcome("traceback", f"killed by signal {os.WTERMSIG(status)}: {tail}")
    code = os.WEXITSTATUS(status)
    if "Traceback (most recent call last)" in err or "Traceback (most recent call last)" in out:
        return Outcome("traceback", tail)
    if code == 0:
        return Outcome("silent_accept", f"exit 0: {tail}")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        return Outcome("clear_error", lines[0])
    return Outcome("unclear", f"exit {code}, {len(lines)} stderr lines: {tail}")


# --- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_cases(model: str) -> list[tuple[str, str, str, bytes]]:
    """(what, method, path, body) of requests that must each get a 4xx."""
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    comp = {"model": model, "prompt": "hi", "max_tokens": 4}
    bad_fields: dict[str, list[Any]] = {
        "model": ["nope", 5, None, "x" * 300, model + ":bogus", model + ":sc@100000"],
        "max_tokens": [0, -1, "abc", 10**30, 100000, [1]],
        "temperature": [-1, 3, "hot", {"a": 1}],
        "top_p": [0, 1.5, "x"],
        "n": [0, 10**6, "x", 1.5],
        "stop": [[f"s{i}" for i in range(17)], 5, [""]],
        "seed": ["x", 10**30],
        "top_k": [0, -5, "x"],
        "min_p": [-0.1, 2],
        "logprobs": ["x"],
        "presence_penalty": [1.0, 5],
        "stream_options": ["x", {"include_usage": "maybe"}],
        "reasoning": [
            "cot",
            {"strategy": "bogus"},
            {"strategy": "cot", "task": "bogus"},
            {"strategy": "sc", "k": 100000},
            {"strategy": "sc", "k": 0},
            {"strategy": "tot", "breadth": 100000},
            {"strategy": "tot", "max_depth": 10**9},
            {"strategy": "tot", "n_evaluate": 10**6},
            {"strategy": "sc", "temperature": "hot"},
            {"strategy": "sc", "no_such_setting": 1},
            {"strategy": "adaptive", "agree": 5},
        ],
    }
    out = []
    for path, base in (("/v1/chat/completions", chat), ("/v1/completions", comp)):
        for key, values in bad_fields.items():
            for v in values:
                body = json.dumps({**base, key: v}).encode()
                out.append((f"{path} {key}={json.dumps(v)[:40]}", "POST", path, body))
        huge = "x" * 10_000_000
        big = (
            {"messages": [{"role": "user", "content": huge}]}
            if "chat" in path
            else {"prompt": huge}
        )
        nested = b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        out += [
            (f"{path} malformed JSON", "POST", path, b'{"model": '),
            (f"{path} empty body", "POST", path, b""),
            (f"{path} not UTF-8", "POST", path, b"\xff\xfe\x00garbage"),
            (f"{path} a list", "POST", path, b"[1, 2, 3]"),
            (f"{path} NaN", "POST", path, json.dumps({**base, "temperature": math.nan}).encode()),
            (f"{path} deeply nested", "POST", path, nested),
            (f"{path} 10 MB prompt", "POST", path, json.dumps({**base, **big}).encode()),
            (f"{path} 1 MB prompt", "POST", path, json.dumps({**base, **_prefix(big)}).encode()),
            (f"GET {path}", "GET", path, b""),
        ]
    out += [
        ("chat bad role", "POST", "/v1/chat/completions",
         json.dumps({**chat, "messages": [{"role": "wizard", "content": "x"}]}).encode()),
        ("chat no messages", "POST", "/v1/chat/completions",
         json.dumps({**chat, "messages": []}).encode()),
        ("completions token id out of vocabulary", "POST", "/v1/completions",
         json.dumps({**comp, "prompt": [10**9]}).encode()),
        ("completions 65 prompts", "POST", "/v1/completions",
         json.dumps({**comp, "prompt": ["a"] * 65}).encode()),
        ("completions empty prompt list", "POST", "/v1/completions",
         json.dumps({**comp, "prompt": []}).encode()),
        ("unknown path", "GET", "/v1/nothing", b""),
        ("unknown model id", "GET", "/v1/models/nope", b""),
    ]  # fmt: skip
    return out


def _prefix(body: dict[str, Any]) -> dict[str, Any]:
    """The same request with its text cut to 1 MB."""
    if "prompt" in body:
        return {"prompt": body["prompt"][:1_000_000]}
    return {"messages": [{"role": "user", "content": body["messages"][0]["content"][:1_000_000]}]}


def request(port: int, method: str, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def classify_response(status: int, body: bytes) -> Outcome:
    try:
        err = json.loads(body)["error"]
        shaped = isinstance(err, dict) and isinstance(err.get("message"), str)
    except (ValueError, KeyError, TypeError):
        shaped = False
    text = body[:300].decode(errors="replace")
    if 400 <= status < 500 and shaped:
        return Outcome("clear_error", f"{status} {text}")
    if status >= 500:
        return Outcome("traceback", f"{status} {text}")
    if 200 <= status < 300:
        return Outcome("silent_accept", f"{status} {text}")
    return Outcome("unclear", f"{status} {text}")


@contextlib.contextmanager
def served(run: str, cwd: Path, env: dict[str, str]) -> Iterator[int]:
    port = free_port()
    log = open(cwd / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmlab", "serve", run, "--port", str(port), "--name", "m"],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(600):
            with contextlib.suppress(OSError):
                if request(port, "GET", "/health", b"", 2)[0] == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"lmlab serve exited: {(cwd / 'serve.log').read_text()}")
            time.sleep(0.1)
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def fuzz_server(run: str, cwd: Path, env: dict[str, str], verbose: bool) -> list[Outcome]:
    outcomes = []
    with served(run, cwd, env) as port:
        for what, method, path, body in server_cases("m"):
            try:
                outcome = classify_response(*request(port, method, path, body, 60))
            except (OSError, http.client.HTTPException) as e:
                outcome = Outcome("traceback", f"{type(e).__name__}: {e}")
            try:
                status, _ = request(port, "GET", "/health", b"", 10)
                if status != 200:
                    outcome = Outcome("traceback", f"/health answered {status} afterwards")
            except OSError as e:
                outcome = Outcome("traceback", f"/health failed afterwards: {e}")
            outcomes.append(outcome)
            if verbose and outcome.kind != "clear_error":
                print(f"[server] {what}: {outcome.kind}: {outcome.detail}", file=sys.stderr)
    return outcomes


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-group", type=int, default=3, help="cases per (command, category)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per case")
    ap.add_argument("--memory-gb", type=float, default=3, help="address space per case, GiB")
    ap.add_argument("--commands", default="", help="comma-separated: only these commands")
    ap.add_argument("--no-server", action="store_true", help="skip the server cases")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--make-fixtures", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.make_fixtures:
        make_fixtures(args.make_fixtures)
        return {}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lmlab-fuzz-") as tmp:
        root, cache = Path(tmp) / "fx", Path(tmp) / "cache"
        env = {
            **os.environ,
            "LMLAB_CACHE": str(cache),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        }
        os.environ.update(
            {k: env[k] for k in ("LMLAB_CACHE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        )
        made = subprocess.run(
            [sys.executable, __file__, "--make-fixtures", str(root)],
            env=env,
            capture_output=True,
            text=True,
        )
        if made.returncode:
            raise SystemExit(f"could not build the fixtures:\n{made.stdout}\n{made.stderr}")
        fx = fixture_names(root, free_port())
        cases = all_cases(fx)
        if args.commands:
            keep = set(args.commands.split(","))
            cases = [c for c in cases if c.command in keep]
        cases = sample(cases, args.per_group, args.seed)
        memory = _vm_size() + int(args.memory_gb * (1 << 30))
        counts = dict.fromkeys(("clear_error", "traceback", "silent_accept", "unclear"), 0)
        changed = 0
        by_category: dict[str, dict[str, int]] = {}
        for case in cases:
            before = snapshot(root)
            outcome = run_case(case, root / "cwd", args.timeout, memory)
            after = snapshot(root)
            diff = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            if diff:
                changed += 1
                _restore(root)
            counts[outcome.kind] += 1
            cat = by_category.setdefault(case.category, dict.fromkeys(counts, 0))
            cat[outcome.kind] += 1
            if args.verbose and (outcome.kind != "clear_error" or diff):
                print(
                    f"[{case.command} / {case.category}] {case.what}: {outcome.kind}: "
                    f"{outcome.detail}" + (f"\n    files changed: {diff[:5]}" if diff else ""),
                    file=sys.stderr,
                )
        if not args.no_server:
            for outcome in fuzz_server(fx["run"], root / "cwd", env, args.verbose):
                counts[outcome.kind] += 1
                cat = by_category.setdefault("server", dict.fromkeys(counts, 0))
                cat[outcome.kind] += 1
    result = {
        "tried": sum(counts.values()),
        "clear_errors": counts["clear_error"],
        "tracebacks": counts["traceback"],
        "silent_accepts": counts["silent_accept"],
        "unclear": counts["unclear"],
        "files_changed": changed,
        "seconds": round(time.monotonic() - start, 1),
    }
    if args.verbose:
        print(json.dumps(by_category), file=sys.stderr)
    print(json.dumps(result), flush=True)
    return result


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _restore(root: Path) -> None:
    """Undo a case's writes in the scratch folder (a changed fixture is reported, not fixed)."""
    cwd = root / "cwd"
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir()


if __name__ == "__main__":
    main()
