"""`lmlab export`: a run's latest checkpoint in another format (Hugging Face)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from lmlab.commands.args import parse
from lmlab.commands.common import console
from lmlab.model.hf import export_hf, hf_format
from lmlab.model.load import load_run
from lmlab.runs import check_empty_output


@dataclass
class ExportArgs:
    """Export a run's latest checkpoint to another format."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    out: Path
    """Output directory (must be new or empty)."""
    format: Literal["hf"] = "hf"
    """hf: Hugging Face folder (config.json, model.safetensors, tokenizer files) in the Llama
    format (Qwen2 with q/k/v biases), or Mixtral / Qwen2-MoE for MoE models."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Type of the stored weights (bf16 and fp16 halve the folder; fp32 keeps them exact)."""
    drop_selection_bias: bool = False
    """MoE: export without the aux-loss-free selection bias (no HF format holds it)."""


def run(argv: list[str]) -> None:
    args = parse(ExportArgs, argv, "lmlab export")
    check_empty_output(args.out)  # before the model is loaded
    model, tok, _ = load_run(args.run)
    export_hf(model, tok, args.out, args.drop_selection_bias, args.dtype)  # type: ignore[arg-type]
    console.print(
        f"wrote {args.out} ({hf_format(model.cfg)} format; load it with "  # type: ignore[arg-type]
        "transformers.AutoModelForCausalLM)"
    )
