"""`lmlab chat`: a conversation with a run in the terminal."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.bounds import MAX_NEW_TOKENS, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import check_device, console
from lmlab.infer import Engine, SamplingParams


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


def run(argv: list[str]) -> None:
    args = parse(ChatArgs, argv, "lmlab chat")
    check_count("--max-new-tokens", args.max_new_tokens, MAX_NEW_TOKENS)
    check_device(args.device)
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
