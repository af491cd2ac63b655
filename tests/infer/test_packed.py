"""Tests for lmlab.infer.packed: prepacked linear layers give the plain model's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from lmlab.config import MoEConfig
from lmlab.data.tokenizer import byte_tokenizer
from lmlab.infer import Engine, SamplingParams
from lmlab.infer.packed import PackedLinear, can_prepack, prepacked
from lmlab.model.transformer import Transformer
from tests.conftest import tiny_model_config

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(
        not can_prepack(nn.Linear(2, 2)), reason="oneDNN prepacking is not available here"
    ),
]

# Same math as F.linear, different blocking: float32 rounding only.
ATOL = 1e-4


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 5, 64])
def test_packed_linear_equals_linear(bias: bool, rows: int) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(48, 80, bias=bias)
    x = torch.randn(2, rows, 48)
    packed = PackedLinear(lin, batch_hint=16)
    torch.testing.assert_close(packed(x), lin(x), atol=ATOL, rtol=1e-5)
    assert packed.weight is lin.weight


@pytest.mark.slow
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_compiled_one_row_is_a_fused_gemv_equal_to_linear(bias: bool) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(48, 80, bias=bias)
    packed = PackedLinear(lin, batch_hint=16)
    compiled = torch.compile(packed, dynamic=True)
    with torch.no_grad():
        for shape in ((1, 1, 48), (3, 1, 48)):  # the product-and-sum path, then oneDNN's
            x = torch.randn(*shape)
            torch.testing.assert_close(compiled(x), lin(x), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize(
    "kw",
    [
        {"n_kv_head": 2},
        {"tie_embeddings": False},
        {"moe": MoEConfig(n_experts=4, top_k=2, n_shared=1)},
    ],
    ids=["gqa", "untied", "moe"],
)
def test_prepacked_model_gives_the_same_logits_and_shares_parameters(
    kw: dict[str, object],
) -> None:
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(**kw)).eval()
    fast = prepacked(model)
    idx = torch.randint(0, 128, (3, 20))
    with torch.no_grad():
        torch.testing.assert_close(fast(idx), model(idx), atol=ATOL, rtol=1e-5)
    assert {id(p) for p in fast.parameters()} == {id(p) for p in model.parameters()}
    assert any(isinstance(m, PackedLinear) for m in fast.modules())
    assert not any(isinstance(m, PackedLinear) for m in model.modules())  # original untouched


def test_prepacked_engine_generates_what_the_plain_engine_does() -> None:
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = tiny_model_config(vocab_size=-(-tok.vocab_size // 64) * 64, init_std=0.3)
    model = Transformer(cfg).eval()
    params = SamplingParams(max_new_tokens=24, temperature=0.0, ignore_eos=True, logprobs=True)
    prompts = ["def f(x):", "#", "the quick brown fox"]
    plain = Engine(model, tok, max_batch=4).generate(prompts, params)
    fast_engine = Engine(model, tok, max_batch=4, prepack=True)
    assert fast_engine.prepacked
    fast = fast_engine.generate(prompts, params)
    for a, b in zip(plain, fast, strict=True):
        assert a[0].token_ids == b[0].token_ids
        torch.testing.assert_close(
            torch.tensor(a[0].logprobs), torch.tensor(b[0].logprobs), atol=ATOL, rtol=0
        )


def test_from_checkpoint_prepacks_and_the_constructor_does_not(tiny_run: Path) -> None:
    assert Engine.from_checkpoint(tiny_run).prepacked
    assert not Engine.from_checkpoint(tiny_run, prepack=False).prepacked
    model = Transformer(tiny_model_config())
    assert not Engine(model, byte_tokenizer()).prepacked


def test_prepack_needs_a_float32_cpu_model() -> None:
    model = Transformer(tiny_model_config()).to(torch.bfloat16)
    assert not can_prepack(model)
    with pytest.raises(ValueError, match="float32 model on the CPU"):
        prepacked(model)
    assert not Engine(model, byte_tokenizer(), prepack=True).prepacked  # falls back quietly


@pytest.mark.slow
@pytest.mark.parametrize("prepack", [True, False], ids=["prepacked", "frozen"])
def test_compiled_decode_generates_what_the_eager_engine_does(prepack: bool) -> None:
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = tiny_model_config(vocab_size=-(-tok.vocab_size // 64) * 64, init_std=0.3, n_kv_head=2)
    model = Transformer(cfg).eval()
    params = SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)
    compiled = Engine(model, tok, max_batch=4, compile=True, prepack=prepack)
    plain = Engine(model, tok, max_batch=4)
    counters["inductor"].clear()
    for prompts in (["def f(x):"], ["def f(x):", "#", "the quick brown fox"]):  # batch 1, ragged
        want = [c[0].token_ids for c in plain.generate(prompts, params)]
        assert [c[0].token_ids for c in compiled.generate(prompts, params)] == want
    # Freezing really ran (inductor prepacked the weights of the several-row graph's matmuls
    # for oneDNN) and was switched off again after the compiled calls.
    assert counters["inductor"]["mkldnn_linear_weight_pack_matcher_count"] > 0
    assert not torch._inductor.config.freezing
