"""`lmlab import`: a local Hugging Face checkpoint as an lmlab run (`import` is a keyword,
hence the module's trailing underscore)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.commands.common import console
from lmlab.model.hf import import_hf
from lmlab.runs import check_output_dir, lock_dir


@dataclass
class ImportArgs:
    """Import a local Hugging Face checkpoint (Llama, Mistral, Qwen2, Mixtral or Qwen2-MoE) as an
    lmlab run, with its own tokenizer and chat template."""

    src: Annotated[Path, tyro.conf.Positional]
    """Folder with config.json, *.safetensors, tokenizer.json and tokenizer_config.json."""
    out: Path
    """New run directory."""
    context_length: int | None = None
    """Cap the context at this many tokens (None: the checkpoint's max_position_embeddings).
    The engine preallocates its KV cache and SFT packs its rows at the context length, so a
    32k-position checkpoint is best imported shorter."""


def run(argv: list[str]) -> None:
    args = parse(ImportArgs, argv, "lmlab import")
    check_output_dir(args.out)  # before the lock makes the folder
    with lock_dir(args.out):
        import_hf(args.src, args.out, args.context_length)
    console.print(f"wrote run {args.out} (try: lmlab generate {args.out} --prompt ...)")
