"""Tests for lmlab.model.hf: export to and import from the Hugging Face Llama format."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lmlab.cli import main
from lmlab.config import MoEConfig
from lmlab.data.tokenizer import Tokenizer, byte_tokenizer
from lmlab.infer import Engine, SamplingParams
from lmlab.model.hf import HFFormatError, export_hf, import_hf, load_hf
from lmlab.model.load import load_run
from lmlab.model.transformer import Transformer
from tests.conftest import tiny_model_config

transformers = pytest.importorskip("transformers")

# float32 on both sides; the only differences are summation order and the RoPE tables
# (lmlab builds them in float64, HF in float32).
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return byte_tokenizer()


def random_ids(n: int = 2, t: int = 24) -> torch.Tensor:
    return torch.randint(6, 262, (n, t), generator=torch.Generator().manual_seed(0))


def lmlab_model(**kw: object) -> Transformer:
    torch.manual_seed(0)
    cfg = tiny_model_config(vocab_size=320, n_kv_head=2, init_std=0.2, rope_theta=5000.0, **kw)
    return Transformer(cfg).eval()


@pytest.mark.parametrize("tie", [False, True])
def test_export_loads_in_transformers_with_same_logits(
    tmp_path: Path, tok: Tokenizer, tie: bool
) -> None:
    model = lmlab_model(tie_embeddings=tie)
    export_hf(model, tok, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert hf.config.num_key_value_heads == 2 and hf.config.tie_word_embeddings == tie
    ids = random_ids()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=ATOL)
    # Greedy generation agrees too (HF generate vs the engine, which never draws the padded
    # vocabulary rows past the tokenizer's 262 tokens).
    prompt = ids[0, :8].tolist()
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=None,
            suppress_tokens=list(range(tok.vocab_size, 320)),
        )[0, 8:]
    out = Engine(model, tok).generate([prompt], SamplingParams(12, 0.0, ignore_eos=True))
    assert out[0][0].token_ids == ref.tolist()


def test_exported_tokenizer_and_chat_template(tmp_path: Path, tok: Tokenizer) -> None:
    export_hf(lmlab_model(), tok, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "def f(x):\n    return x + 1  # héllo"
    assert hf_tok(text)["input_ids"] == tok.encode(text)
    assert hf_tok.eos_token_id == tok.end_id and hf_tok.bos_token_id == tok.bos_id
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    rendered = hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|bos|><|system|>be brief<|end|><|user|>hi<|end|><|assistant|>"


@pytest.mark.parametrize("tie", [False, True])
def test_import_of_transformers_llama_gives_same_logits(
    tmp_path: Path, tok: Tokenizer, tie: bool
) -> None:
    torch.manual_seed(1)
    config = transformers.LlamaConfig(
        vocab_size=320,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        tie_word_embeddings=tie,
        initializer_range=0.2,
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    tok.save(tmp_path / "hf" / "tokenizer.json")
    run = import_hf(tmp_path / "hf", tmp_path / "run")
    model, run_tok, cfg = load_run(run)
    assert cfg.model.n_kv_head == 2 and cfg.model.tie_embeddings == tie
    assert cfg.model.rope_theta == 500.0 and cfg.model.d_ff == 96
    ids = random_ids()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, rtol=0, atol=ATOL)
    assert run_tok.encode("abc") == tok.encode("abc")


def test_round_trip_keeps_every_weight(tmp_path: Path, tok: Tokenizer) -> None:
    model = lmlab_model(tie_embeddings=False)
    back = load_hf(export_hf(model, tok, tmp_path / "hf"))
    assert back.cfg == dataclasses.replace(model.cfg, d_ff=model.cfg.ffn_dim)
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_cli_export_then_import(tiny_run: Path, tmp_path: Path) -> None:
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "hf")]) == 0
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    a, _, _ = load_run(tiny_run)
    b, _, _ = load_run(tmp_path / "run")
    ids = random_ids(1, 10) % a.cfg.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(a(ids), b(ids), rtol=0, atol=0)
    # the output folders are never overwritten
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "hf")]) == 2
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 2


def test_bad_checkpoints(tmp_path: Path, tok: Tokenizer) -> None:
    with pytest.raises(HFFormatError, match=r"no config\.json"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(HFFormatError, match="model_type 'gpt2' is not supported"):
        load_hf(tmp_path)
    foreign = tmp_path / "foreign"
    export_hf(lmlab_model(), tok, foreign)
    hf_tok = transformers.AutoTokenizer.from_pretrained(foreign)
    (foreign / "tokenizer.json").write_text(
        (foreign / "tokenizer.json").read_text().replace("<|pad|>", "<pad>")
    )
    with pytest.raises(HFFormatError, match=r"does not reserve <\|pad\|>"):
        import_hf(foreign, tmp_path / "run")
    assert hf_tok is not None and not (tmp_path / "run").exists()
    sigmoid = lmlab_model(moe=MoEConfig(n_experts=4, top_k=2, score="sigmoid"))
    with pytest.raises(HFFormatError, match="sigmoid routing"):
        export_hf(sigmoid, tok, tmp_path / "sigmoid")
    biased = lmlab_model(moe=MoEConfig(n_experts=4, top_k=2))
    biased.blocks[0].ffn.expert_bias[1] = 0.01
    with pytest.raises(HFFormatError, match="selection bias"):
        export_hf(biased, tok, tmp_path / "biased")
    export_hf(biased, tok, tmp_path / "dropped", drop_selection_bias=True)
    assert (tmp_path / "dropped" / "model.safetensors").is_file()
    assert not (tmp_path / "sigmoid").exists() and not (tmp_path / "biased").exists()


MOE_CASES = {
    "mixtral": ("MixtralForCausalLM", MoEConfig(n_experts=4, top_k=2)),
    "qwen2_moe": (
        "Qwen2MoeForCausalLM",
        MoEConfig(n_experts=4, top_k=2, n_shared=1, every=2, renormalize=False),
    ),
}


@pytest.mark.parametrize("fmt", MOE_CASES)
def test_moe_export_loads_in_transformers_with_same_logits(
    tmp_path: Path, tok: Tokenizer, fmt: str
) -> None:
    arch, moe = MOE_CASES[fmt]
    model = lmlab_model(moe=moe, tie_embeddings=False)
    export_hf(model, tok, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    assert type(hf).__name__ == arch
    ids = random_ids()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=ATOL)
    back = load_hf(tmp_path / "hf")  # and the export imports back to the same model
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model(ids), rtol=0, atol=ATOL)


def test_import_of_transformers_mixtral_gives_same_logits(tmp_path: Path, tok: Tokenizer) -> None:
    cfg = transformers.MixtralConfig(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.MixtralForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.2)
    hf.save_pretrained(tmp_path / "hf")
    model = load_hf(tmp_path / "hf")
    assert model.cfg.moe.n_experts == 4 and model.cfg.expert_dim == 24
    ids = random_ids()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, rtol=0, atol=ATOL)


def test_smeared_model_does_not_export(tmp_path: Path, tok: Tokenizer) -> None:
    model = Transformer(tiny_model_config(vocab_size=-(-tok.vocab_size // 64) * 64, smear=True))
    with pytest.raises(HFFormatError, match="token smearing"):
        export_hf(model, tok, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
