"""`lmlab import`: a local Hugging Face checkpoint as an lmlab run (`import` is a keyword,
hence the module's trailing underscore)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.common import console
from lmlab.model.hf import import_hf
from lmlab.runs import check_output_dir, lock_dir


@dataclass
class ImportArgs:
    """Import a local Hugging Face checkpoint (Llama, Mixtral or Qwen2-MoE) as an lmlab run."""

    src: Annotated[Path, tyro.conf.Positional]
    """Folder with config.json, *.safetensors and tokenizer.json."""
    out: Path
    """New run directory."""


def run(argv: list[str]) -> None:
    args = tyro.cli(ImportArgs, args=argv, prog="lmlab import")
    check_output_dir(args.out)  # before the lock makes the folder
    with lock_dir(args.out):
        import_hf(args.src, args.out)
    console.print(f"wrote run {args.out} (try: lmlab generate {args.out} --prompt ...)")
