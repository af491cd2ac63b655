"""The `lmlab` command line: a table of subcommands and the one error policy.

Each subcommand is a module under `lmlab/commands/` holding its typed argument dataclass
(turned into `--group.field value` flags by `tyro`) and `run(argv)`. Modules are imported only
when their command runs, so `lmlab --help` starts fast. User errors (bad input, missing files,
an occupied run directory) print one `error: ...` line and exit with code 2; nothing is
overwritten. A flag the parser rejects is such an error too (`commands.args.parse` turns
tyro's error box into one line that keeps its suggestion). Ctrl-C exits with 130.
"""

from __future__ import annotations

import difflib
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module under lmlab.commands, one-line description)
    "tokenize": ("tokenize", "train a tokenizer and build token shards"),
    "pretrain": ("pretrain", "pretrain (or resume) a model on a corpus"),
    "info": ("info", "parameter counts and FLOPs per token"),
    "sample": ("sample", "print samples from a trained run"),
    "generate": ("generate", "generate completions with the inference engine"),
    "chat": ("chat", "chat with a run in the terminal"),
    "export": ("export", "export a run to Hugging Face format (Llama / Mixtral / Qwen2-MoE)"),
    "import": ("import_", "import a local Hugging Face checkpoint as a run"),
    "moe-stats": ("moe_stats", "per-layer expert load, CV, MaxVio, router entropy of a run"),
    "world": ("world", "show task-world problems (world sample) or list the tasks"),
    "sft": ("sft", "supervised fine-tuning on world tasks or a chat JSONL"),
    "eval": ("eval", "evaluate a run on world tasks through the engine"),
    "evaluate": ("evaluate", "evaluate a run on lm-evaluation-harness tasks (lmlab[eval])"),
    "reason": ("reason", "reasoning strategies (CoT, self-consistency, ToT, adaptive)"),
    "emergence": ("emergence", "model-size ladder: exact match vs continuous metrics"),
    "prefs": ("prefs", "sample responses and label preference pairs (world annotator)"),
    "label": ("label", "a person labels preference pairs in the terminal (resumable)"),
    "rm": ("rm", "train a Bradley-Terry reward model on preference pairs"),
    "dpo": ("dpo", "Direct Preference Optimization on preference pairs"),
    "grpo": ("grpo", "GRPO on verifiable world rewards"),
    "ppo": ("ppo", "PPO against a reward model with a KL penalty"),
    "rlhf": ("rlhf", "RLHF experiments: `rlhf overopt` (reward over-optimisation)"),
    "scaling": ("scaling", "scaling-law sweeps: plan, run, fit (approaches 1-3), predict"),
    "serve": ("serve", "OpenAI-compatible API server and web chat page"),
    "run": ("run", "the whole life of a model in one command, then its report card"),
    "report": ("report", "rebuild the report card of a lab run (lmlab run)"),
}

USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
"""What a user can cause (bad flags, files, settings, a path through a plain file): one line,
exit code 2. Anything else is a bug and keeps its traceback."""


def usage() -> str:
    lines = [
        "usage: lmlab COMMAND [options]   (lmlab COMMAND --help for its options)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Every command also takes --config FILE: its flags' values from YAML or JSON."]
    return "\n".join(lines)


def command_module(name: str) -> str:
    """The module that implements command `name`."""
    return f"lmlab.commands.{COMMANDS[name][0]}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        if not argv:
            print("error: no command given (lmlab --help lists them)", file=sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"perhaps you meant {close[0]!r}; " if close else ""
        print(f"error: unknown command {name!r} ({hint}lmlab --help lists them)", file=sys.stderr)
        return 2
    try:
        importlib.import_module(command_module(name)).run(rest)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)  # one unwrapped line
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
