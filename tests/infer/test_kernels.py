"""Tests for lmlab.infer.kernels: the fused decode attention equals masked softmax attention."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest
import torch

from lmlab.data.tokenizer import byte_tokenizer
from lmlab.infer import Engine, SamplingParams
from lmlab.infer.kernels import decode_attention_op
from lmlab.model.transformer import Transformer
from tests.conftest import tiny_model_config

Op = Callable[..., torch.Tensor]

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler here"
)


def reference(
    q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, pos: torch.Tensor
) -> torch.Tensor:
    """Row b attends to positions 0..pos[b] of slot b; GQA by repeating key/value heads."""
    B, H, _, D = q.shape
    rep = H // kc.shape[1]
    k = kc[:B].repeat_interleave(rep, dim=1)
    v = vc[:B].repeat_interleave(rep, dim=1)
    allowed = torch.arange(kc.shape[2])[None, :] <= pos[:, None]
    scores = (q @ k.transpose(-1, -2)) * D**-0.5
    return scores.masked_fill(~allowed[:, None, None, :], -float("inf")).softmax(-1) @ v


@pytest.fixture(scope="module")
def op() -> Op:
    op = decode_attention_op()
    assert op is not None, "a C++ compiler is here, so the kernel must build"
    return op


# D = 64 and 16: the vector-register paths; 24: the generic path. 6 vs 2 heads: GQA.
@pytest.mark.parametrize(("H", "H_kv", "D"), [(6, 6, 64), (4, 2, 16), (6, 3, 24), (8, 1, 128)])
def test_kernel_equals_masked_attention(op: Op, H: int, H_kv: int, D: int) -> None:
    torch.manual_seed(0)
    slots, L, B = 5, 40, 4  # fewer rows than slots, as when the last slots are idle
    kc, vc = torch.randn(slots, H_kv, L, D), torch.randn(slots, H_kv, L, D)
    q = torch.randn(B, H, 1, D)
    pos = torch.tensor([0, 39, 7, 21])  # ragged: one row sees a single position, one all
    torch.testing.assert_close(
        op(q, kc, vc, pos, D**-0.5), reference(q, kc, vc, pos), atol=1e-5, rtol=1e-5
    )
    # Strided queries give the same: rows and heads swapped in memory, heads sliced out of a
    # fused q/k/v projection (both read in place), and a strided last dimension (copied first).
    want = op(q, kc, vc, pos, D**-0.5)
    qt = q.transpose(0, 1).contiguous().transpose(0, 1)
    fused = torch.cat([q.transpose(1, 2), torch.randn(B, 1, 2 * H, D)], dim=2)
    qf = fused[:, :, :H].transpose(1, 2)
    qe = torch.zeros(B, H, 1, 2 * D)
    qe[..., ::2] = q
    for strided in (qt, qf, qe[..., ::2]):
        assert not strided.is_contiguous()
        torch.testing.assert_close(op(strided, kc, vc, pos, D**-0.5), want)


def test_kernel_rejects_what_it_cannot_do(op: Op) -> None:
    kc = torch.zeros(2, 2, 8, 16)
    q = torch.zeros(2, 2, 1, 16)
    with pytest.raises(RuntimeError, match="position out of the cache"):
        op(q, kc, kc, torch.tensor([0, 8]), 1.0)
    with pytest.raises(RuntimeError, match="float32"):
        op(q.double(), kc.double(), kc.double(), torch.tensor([0, 1]), 1.0)
    with pytest.raises(RuntimeError, match="contiguous"):
        op(q, torch.zeros(2, 2, 16, 8).transpose(2, 3), kc, torch.tensor([0, 1]), 1.0)


@pytest.mark.slow
def test_kernel_inside_a_compiled_graph(op: Op) -> None:
    torch.manual_seed(1)
    kc, vc = torch.randn(3, 2, 16, 32), torch.randn(3, 2, 16, 32)

    def step(q: torch.Tensor, k_new: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        # the engine's order: write the new keys in place, then attend over the cache
        kc[torch.arange(q.shape[0]), :, pos] = k_new
        return op(q * 2, kc, vc, pos, 32**-0.5)

    compiled = torch.compile(step, dynamic=True)
    for B in (1, 3):
        q, k_new, pos = torch.randn(B, 4, 1, 32), torch.randn(B, 2, 32), torch.arange(B) + 5
        want = step(q, k_new, pos)
        torch.testing.assert_close(compiled(q, k_new, pos), want)


def test_engine_with_the_kernel_generates_what_the_plain_engine_does(op: Op) -> None:
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = tiny_model_config(vocab_size=-(-tok.vocab_size // 64) * 64, init_std=0.3, n_kv_head=2)
    model = Transformer(cfg).eval()
    fast = Engine(model, tok, max_batch=6, native_attention=True)
    plain = Engine(model, tok, max_batch=6)
    assert fast.cache._attention is not None and plain.cache._attention is None
    prompts = ["def f(x):", "#", "the quick brown fox"]
    for params in (
        SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True),
        SamplingParams(max_new_tokens=10, temperature=0.9, n=2, seed=3, logprobs=True),
    ):
        want = plain.generate(prompts, params)
        got = fast.generate(prompts, params)
        for w, g in zip(want, got, strict=True):
            assert [c.token_ids for c in g] == [c.token_ids for c in w]
            if params.logprobs:
                for cw, cg in zip(w, g, strict=True):
                    torch.testing.assert_close(cg.logprobs, cw.logprobs, atol=1e-5, rtol=0)
