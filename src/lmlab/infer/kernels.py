"""Native CPU kernels for the decode step, built on first use.

`decode_attention` (source: `csrc/decode_attention.cpp`) is the attention of a decode step:
one query per row against that row's cached keys and values. Inductor compiles the same
computation from PyTorch ops into passes over a masked `[B, H, span]` score tensor; the kernel
runs one task per (row, head) that reads the row's keys once and its values once (prefetching
the values while it scores the keys), holds the query and the output in vector registers, and
reads only the positions the row has. Measured on the 2-core CPU this project runs on, at 16
rows x 6 heads x 64 (float32), about 80 positions: 200 us a layer inside the batch-16 decode
step of `benchmarks/decode.py`, where the cache comes from memory, against 270-300 us for
inductor's kernel; 70-100 us against 390 us when the cache is already in L3.

The kernel is compiled with `torch.utils.cpp_extension` (a C++ compiler with OpenMP, and
ninja) into torch's extension cache the first time a compiled CPU engine needs it (14 s on 2
cores), then loaded from there. Where it cannot be built (no compiler, another architecture)
`decode_attention_op()` returns None, once with a warning, and the engine keeps the PyTorch
formulation.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

_SOURCE = Path(__file__).parent / "csrc" / "decode_attention.cpp"

# ATen's vector types pick their instruction set from these macros (as inductor's kernels do).
_ISA_FLAGS = {
    "AVX512": ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512", "-march=native"],
    "AVX2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-march=native"],
}


@functools.cache
def decode_attention_op() -> Callable[[Tensor, Tensor, Tensor, Tensor, float], Tensor] | None:
    """`torch.ops.lmlab_kernels.decode_attention`, building it if needed; None if it cannot be
    built here. Signature: (q [B, H, 1, D], k_cache, v_cache [slots, H_kv, L, D], positions [B]
    int64, scale) -> [B, H, 1, D], float32 CPU tensors."""
    try:
        from torch.utils.cpp_extension import load

        isa = torch.backends.cpu.get_cpu_capability()
        flags = ["-O3", "-fopenmp", *_ISA_FLAGS.get(isa, ["-DCPU_CAPABILITY=DEFAULT"])]
        # A ninja installed with pip lives next to this interpreter, maybe not on PATH.
        bin_dir = str(Path(sys.executable).parent)
        if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
        load(
            name=f"lmlab_decode_attention_{isa.lower()}",
            sources=[str(_SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
    except Exception as e:  # any build failure means: use the PyTorch path
        warnings.warn(
            f"lmlab: the native decode-attention kernel could not be built ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}); using PyTorch ops",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    op = torch.ops.lmlab_kernels.decode_attention

    @torch.library.register_fake("lmlab_kernels::decode_attention")
    def _(q: Tensor, k_cache: Tensor, v_cache: Tensor, positions: Tensor, scale: float) -> Tensor:
        return torch.empty_like(q, memory_format=torch.contiguous_format)

    return op  # type: ignore[no-any-return]
