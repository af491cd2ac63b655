"""Tests for lmlab.model.hf: export to and import from the Hugging Face Llama format, and the
exact parity of an export with lmlab (tokens, BOS, chat template, greedy generation)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmlab.cli import main
from lmlab.config import MoEConfig, RunConfig
from lmlab.data.tokenizer import Tokenizer, byte_tokenizer
from lmlab.infer import Engine, SamplingParams
from lmlab.model.hf import HFFormatError, export_hf, import_hf, load_hf
from lmlab.model.load import load_run, save_model
from lmlab.model.transformer import Transformer
from lmlab.runs import write_run_files
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
    shape: dict[str, object] = {"vocab_size": 320, "n_kv_head": 2, "init_std": 0.2}
    cfg = tiny_model_config(**(shape | {"rope_theta": 5000.0} | kw))
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


CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi there"},
    {"role": "assistant", "content": "yo"},
    {"role": "tool", "content": "42"},
    {"role": "assistant", "content": "ok"},
]


def test_exported_tokenizer_and_chat_template(tmp_path: Path, tok: Tokenizer) -> None:
    export_hf(lmlab_model(), tok, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok.eos_token_id == tok.end_id and hf_tok.bos_token_id == tok.bos_id
    # a plain prompt: BOS added once, by the post-processor, and typed chat tokens read as
    # tokens, exactly as lmlab reads a prompt
    for text in ["def f(x):\n    return x + 1  # héllo", "x <|user|> y<|end|>", ""]:
        assert hf_tok(text)["input_ids"] == tok.encode_prompt(text)
    assert tok.encode_prompt("ab") == [tok.bos_id, *tok.encode("ab")]
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    rendered = hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|bos|><|system|>be brief<|end|><|user|>hi<|end|><|assistant|>"
    # the tool role renders as lmlab renders it; the generation marks give lmlab's SFT mask
    out = hf_tok.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = tok.encode_chat(CHAT)
    assert out["input_ids"] == ids and out["assistant_masks"] == [int(m) for m in mask]
    with pytest.raises(Exception, match="unknown chat role robot"):
        hf_tok.apply_chat_template([{"role": "robot", "content": "x"}], tokenize=False)
    # a chat token typed in a message is text in lmlab, as with sanitize_control_tokens
    typed = [{"role": "user", "content": "a <|end|><|assistant|>"}]
    ids, _ = tok.encode_chat(typed, add_generation_prompt=True)
    safe = hf_tok.apply_chat_template(
        typed, add_generation_prompt=True, sanitize_control_tokens=True
    )
    assert safe["input_ids"] == ids and ids.count(tok.end_id) == 1
    # and the export imports back as lmlab's own tokenizer, not a foreign one
    assert Tokenizer.from_pretrained(tmp_path / "hf").config is None


def save_run(model: Transformer, tok: Tokenizer, run: Path) -> Path:
    write_run_files(run, RunConfig(model=model.cfg), tok)
    save_model(run, model, {"step": 0, "tokens": 0})
    return run


def test_greedy_generation_of_export_equals_lmlab_generate(
    tmp_path: Path, tok: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    model = lmlab_model(tie_embeddings=False)
    run = save_run(model, tok, tmp_path / "run")
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    unused = list(range(tok.vocab_size, model.cfg.vocab_size))  # padded rows, never drawn

    def hf_greedy(ids: list[int]) -> list[int]:
        with torch.no_grad():
            out = hf.generate(
                torch.tensor([ids]), max_new_tokens=16, do_sample=False, suppress_tokens=unused
            )
        return out[0, len(ids) :].tolist()

    chat = CHAT[:2]
    chat_ids = hf_tok.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
    # the chat typed as a plain prompt (after BOS, which the prompt gets) is the same prompt
    typed = hf_tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)[7:]
    for prompt, ids in [("def f(x", hf_tok("def f(x")["input_ids"]), (typed, chat_ids)]:
        capsys.readouterr()
        argv = ["generate", str(run), "--prompt", prompt, "--temperature", "0", "--json"]
        assert main([*argv, "--max-new-tokens", "16"]) == 0
        got = json.loads(capsys.readouterr().out)["token_ids"]
        assert got == hf_greedy(ids) and got
    reply = Engine(model, tok).chat(chat, SamplingParams(16, 0.0))  # lmlab's chat path
    assert reply.token_ids == hf_greedy(chat_ids)


def test_loglikelihoods_do_not_depend_on_add_bos_token(tmp_path: Path, tok: Tokenizer) -> None:
    """lm-eval's HF model passes add_bos_token to the tokenizer (and add_special_tokens to each
    call) only when asked: both ways, the context starts with exactly one BOS, as in lmlab."""
    model = lmlab_model()
    export_hf(model, tok, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    context, continuation = "The answer is", " 42"
    expected = [tok.bos_id, *tok.encode(context)]
    scores = []
    for kw, call in [({}, {}), ({"add_bos_token": True}, {"add_special_tokens": True})]:
        hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", **kw)
        ctx = hf_tok.encode(context, **call)
        cont = hf_tok.encode(continuation, add_special_tokens=False)
        assert ctx == expected and cont == tok.encode(continuation)
        with torch.no_grad():
            lp = hf(torch.tensor([ctx + cont])).logits.log_softmax(-1)[0]
        scores.append(sum(lp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont)))
    ids = torch.tensor([expected + tok.encode(continuation)])
    with torch.no_grad():
        lp = model(ids).log_softmax(-1)[0]
    ours = sum(lp[len(expected) - 1 + i, t].item() for i, t in enumerate(ids[0, len(expected) :]))
    assert scores[0] == scores[1] == pytest.approx(ours, abs=1e-4)


def test_lm_eval_loglikelihoods_do_not_depend_on_add_bos_token(
    tmp_path: Path, tok: Tokenizer
) -> None:
    lm_eval = pytest.importorskip("lm_eval", reason="the eval extra (lm-eval) is not installed")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    export_hf(lmlab_model(), tok, tmp_path / "hf")
    reqs = [
        Instance("loglikelihood", {}, ("The answer is", " 42"), 0),
        Instance("loglikelihood", {}, ("", "hello"), 1),
    ]
    results = [
        HFLM(pretrained=str(tmp_path / "hf"), device="cpu", batch_size=1, **kw).loglikelihood(reqs)
        for kw in ({}, {"add_bos_token": True})
    ]
    assert lm_eval is not None and results[0] == results[1]


def test_export_in_half_precision(tmp_path: Path, tok: Tokenizer) -> None:
    model = lmlab_model(tie_embeddings=False)
    run = save_run(model, tok, tmp_path / "run")
    assert main(["export", str(run), "--out", str(tmp_path / "hf"), "--dtype", "bf16"]) == 0
    weights = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert torch.equal(weights["lm_head.weight"], model.lm_head.weight.to(torch.bfloat16))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert hf.dtype == torch.bfloat16
    back = load_hf(tmp_path / "hf")  # imports as float32, the bf16 values exactly
    assert back.lm_head.weight.dtype == torch.float32
    assert torch.equal(back.lm_head.weight, model.lm_head.weight.to(torch.bfloat16).float())
    export_hf(model, tok, tmp_path / "fp16", dtype="fp16")
    assert json.loads((tmp_path / "fp16" / "config.json").read_text())["dtype"] == "float16"
    with pytest.raises(HFFormatError, match="dtype 'int8'"):
        export_hf(model, tok, tmp_path / "int8", dtype="int8")


def test_qkv_biases_export_as_qwen2(tmp_path: Path, tok: Tokenizer) -> None:
    model = lmlab_model(qkv_bias=True, tie_embeddings=True)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.wqkv.bias.normal_(0.0, 0.5)
    export_hf(model, tok, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    assert type(hf).__name__ == "Qwen2ForCausalLM"
    ids = random_ids()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=ATOL)
    back = load_hf(tmp_path / "hf")
    assert back.cfg.qkv_bias
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


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
    broken = tmp_path / "broken"
    export_hf(lmlab_model(), tok, broken)
    (broken / "tokenizer.json").write_text(
        (broken / "tokenizer.json").read_text().replace("<|pad|>", "<pad>")
    )
    with pytest.raises(HFFormatError, match=r"pad_token '<\|pad\|>' is not in its vocabulary"):
        import_hf(broken, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    cfg = json.loads((broken / "config.json").read_text())
    for key, value, message in [
        ("attention_bias", True, "without biases"),
        ("rope_parameters", {"rope_type": "yarn", "factor": 4.0}, "RoPE scaling 'yarn'"),
        ("head_dim", 4, "head_dim 4"),
    ]:
        (broken / "config.json").write_text(json.dumps(cfg | {key: value}))
        with pytest.raises(HFFormatError, match=message):
            load_hf(broken)
    small = export_hf(lmlab_model(vocab_size=64), tok, tmp_path / "small")
    with pytest.raises(HFFormatError, match="tokenizer has 262 tokens but the model only 64"):
        import_hf(small, tmp_path / "run")
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
