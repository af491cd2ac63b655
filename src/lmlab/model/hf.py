"""Export to and import from Hugging Face checkpoint formats: Llama and Mistral (dense models),
Qwen2 (dense, with q/k/v biases), Mixtral (MoE without shared experts) and Qwen2-MoE (MoE with
shared experts or dense layers in between).

lmlab's dense transformer is the Llama architecture, so the two formats differ only in names
and in lmlab's fused projections:

    lmlab                           HF Llama
    embed.weight                    model.embed_tokens.weight
    blocks.{i}.attn_norm.weight     model.layers.{i}.input_layernorm.weight
    blocks.{i}.attn.wqkv.weight     model.layers.{i}.self_attn.{q,k,v}_proj.weight (row blocks)
    blocks.{i}.attn.wo.weight       model.layers.{i}.self_attn.o_proj.weight
    blocks.{i}.ffn_norm.weight      model.layers.{i}.post_attention_layernorm.weight
    blocks.{i}.ffn.w13.weight       model.layers.{i}.mlp.{gate,up}_proj.weight (row blocks)
    blocks.{i}.ffn.w2.weight        model.layers.{i}.mlp.down_proj.weight
    norm.weight                     model.norm.weight
    lm_head.weight                  lm_head.weight (absent when the embeddings are tied)
    blocks.{i}.attn.wqkv.bias       model.layers.{i}.self_attn.{q,k,v}_proj.bias (Qwen2 only)

MoE layers (stacked experts `w13 [E, d, 2h]`, `w2 [E, h, d]`, router `router.weight [E, d]`):

    lmlab                           Mixtral                                Qwen2-MoE
    blocks.{i}.ffn.router.weight    block_sparse_moe.gate.weight           mlp.gate.weight
    ffn.w13[e][:, :h].T             block_sparse_moe.experts.{e}.w1        mlp.experts.{e}.gate_proj
    ffn.w13[e][:, h:].T             block_sparse_moe.experts.{e}.w3        mlp.experts.{e}.up_proj
    ffn.w2[e].T                     block_sparse_moe.experts.{e}.w2        mlp.experts.{e}.down_proj
    ffn.shared.w13 / w2             -                                      mlp.shared_expert.*

Both HF formats route like lmlab's softmax router (top-k of the softmax, Mixtral always
renormalising the chosen weights). Qwen2-MoE multiplies its shared expert by
sigmoid(shared_expert_gate(x)); lmlab's shared experts are always on, so the export writes a zero
gate (sigmoid = 1/2) and doubles the shared down projection. Qwen2 and Qwen2-MoE add biases to
the q/k/v projections (`ModelConfig.qkv_bias`); an import whose biases are all zero drops them, so
an exported lmlab model comes back with the shape it left with. A sliding window (Mistral v0.1)
caps the imported context at the window, within which its attention is exactly full attention.
What one side cannot hold is refused: on export, sigmoid (DeepSeek-V3) routing and a non-zero
auxiliary-loss-free selection bias (it changes which experts are chosen); on import, a learned
shared-expert gate, RoPE scaling, other biases and head sizes other than d_model / heads.

All apply RoPE in the rotate-half convention (HF's conversion script already permuted Meta's
interleaved q/k rows into it), so no permutation is needed. An export folder holds config.json,
generation_config.json, model.safetensors and the tokenizer (`Tokenizer.save_pretrained`:
tokenizer.json and a tokenizer_config.json with the chat template), which is what
`transformers`, vLLM and lm-evaluation-harness load; an import keeps the checkpoint's own
tokenizer and chat template (`Tokenizer.from_pretrained`). `transformers` itself is not needed
here. Mistral imports as the Llama layout it is, so it exports back as Llama.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from lmlab.config import ModelConfig, MoEConfig, RunConfig
from lmlab.data.tokenizer import Tokenizer
from lmlab.model.load import save_model
from lmlab.model.transformer import Transformer
from lmlab.runs import CheckpointError, check_new_run_dir, inside, write_run_files


class HFFormatError(ValueError):
    """A checkpoint that cannot be converted (the message says why)."""


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _split(cfg: ModelConfig) -> tuple[list[int], list[int]]:
    hd = cfg.head_dim
    return [cfg.n_head * hd, cfg.kv_heads * hd, cfg.kv_heads * hd], [cfg.ffn_dim, cfg.ffn_dim]


def hf_format(cfg: ModelConfig) -> str:
    """The HF format that holds this model: llama, qwen2 (q/k/v biases), mixtral or qwen2_moe."""
    m = cfg.moe
    if not m.n_experts:
        return "qwen2" if cfg.qkv_bias else "llama"
    if m.score != "softmax":
        raise HFFormatError("sigmoid routing has no Hugging Face format with Llama attention")
    if m.n_shared == 0 and m.every == 1 and m.renormalize and not cfg.qkv_bias:
        return "mixtral"
    return "qwen2_moe"


def _moe_to_hf(
    sd: dict[str, Tensor], b: str, h: str, fmt: str, cfg: ModelConfig, drop_bias: bool
) -> dict:
    if not drop_bias and sd[b + "ffn.expert_bias"].abs().max() > 0:
        raise HFFormatError(
            "the auxiliary-loss-free selection bias is non-zero and no HF format holds it; "
            "pass --drop-selection-bias to export without it (expert choice then differs "
            "slightly from lmlab's)"
        )
    hd = cfg.expert_dim
    w13, w2 = sd[b + "ffn.w13"], sd[b + "ffn.w2"]
    names = ("w1", "w3", "w2") if fmt == "mixtral" else ("gate_proj", "up_proj", "down_proj")
    root = h + ("block_sparse_moe." if fmt == "mixtral" else "mlp.")
    out = {root + "gate.weight": sd[b + "ffn.router.weight"]}
    for e in range(cfg.moe.n_experts):
        x = f"{root}experts.{e}."
        out |= {
            x + f"{names[0]}.weight": w13[e][:, :hd].T,
            x + f"{names[1]}.weight": w13[e][:, hd:].T,
            x + f"{names[2]}.weight": w2[e].T,
        }
    if cfg.moe.n_shared:
        gate, up = sd[b + "ffn.shared.w13.weight"].chunk(2)
        out |= {
            root + "shared_expert.gate_proj.weight": gate,
            root + "shared_expert.up_proj.weight": up,
            # sigmoid(0) = 1/2 halves the shared expert: double it back.
            root + "shared_expert.down_proj.weight": 2 * sd[b + "ffn.shared.w2.weight"],
            root + "shared_expert_gate.weight": torch.zeros(1, cfg.d_model),
        }
    return out


def to_hf_state_dict(model: Transformer, drop_selection_bias: bool = False) -> dict[str, Tensor]:
    """The model's weights under HF names (q/k/v and gate/up split apart; experts unstacked).
    A non-zero MoE selection bias is an error unless `drop_selection_bias`."""
    cfg = model.cfg
    fmt = hf_format(cfg)
    qkv, ffn = _split(cfg)
    sd = model.state_dict()
    out = {"model.embed_tokens.weight": sd["embed.weight"], "model.norm.weight": sd["norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(cfg.n_layer):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = sd[b + "attn.wqkv.weight"].split(qkv)
        out |= {
            h + "input_layernorm.weight": sd[b + "attn_norm.weight"],
            h + "self_attn.q_proj.weight": q,
            h + "self_attn.k_proj.weight": k,
            h + "self_attn.v_proj.weight": v,
            h + "self_attn.o_proj.weight": sd[b + "attn.wo.weight"],
            h + "post_attention_layernorm.weight": sd[b + "ffn_norm.weight"],
        }
        if fmt in ("qwen2", "qwen2_moe"):  # both always hold q/k/v biases
            biases = sd[b + "attn.wqkv.bias"].split(qkv) if cfg.qkv_bias else [None] * 3
            for name, t, bias in zip("qkv", (q, k, v), biases, strict=True):
                out[h + f"self_attn.{name}_proj.bias"] = (
                    torch.zeros(t.shape[0]) if bias is None else bias
                )
        if cfg.moe.is_moe_layer(i):
            out |= _moe_to_hf(sd, b, h, fmt, cfg, drop_selection_bias)
        else:
            gate, up = sd[b + "ffn.w13.weight"].split(ffn)
            out |= {
                h + "mlp.gate_proj.weight": gate,
                h + "mlp.up_proj.weight": up,
                h + "mlp.down_proj.weight": sd[b + "ffn.w2.weight"],
            }
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def from_hf_state_dict(cfg: ModelConfig, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF Llama / Mistral / Qwen2 / Mixtral / Qwen2-MoE weights renamed and fused into lmlab's
    state dict (q/k/v biases read when `cfg.qkv_bias`)."""
    fmt = hf_format(cfg)

    def get(name: str) -> Tensor:
        if name not in sd:
            raise HFFormatError(f"checkpoint lacks tensor {name}")
        return sd[name].float()

    out = {
        "embed.weight": get("model.embed_tokens.weight"),
        "norm.weight": get("model.norm.weight"),
    }
    out["lm_head.weight"] = out["embed.weight"] if cfg.tie_embeddings else get("lm_head.weight")
    for i in range(cfg.n_layer):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        attn = [get(h + f"self_attn.{p}_proj.weight") for p in "qkv"]
        if cfg.qkv_bias:
            out[b + "attn.wqkv.bias"] = torch.cat(
                [get(h + f"self_attn.{p}_proj.bias") for p in "qkv"]
            )
        out |= {
            b + "attn_norm.weight": get(h + "input_layernorm.weight"),
            b + "attn.wqkv.weight": torch.cat(attn),
            b + "attn.wo.weight": get(h + "self_attn.o_proj.weight"),
            b + "ffn_norm.weight": get(h + "post_attention_layernorm.weight"),
        }
        if cfg.moe.is_moe_layer(i):
            out |= _moe_from_hf(get, b, h, fmt, cfg)
        else:
            mlp = [get(h + f"mlp.{p}_proj.weight") for p in ("gate", "up")]
            out |= {
                b + "ffn.w13.weight": torch.cat(mlp),
                b + "ffn.w2.weight": get(h + "mlp.down_proj.weight"),
            }
    return out


def _moe_from_hf(get: Any, b: str, h: str, fmt: str, cfg: ModelConfig) -> dict[str, Tensor]:
    names = ("w1", "w3", "w2") if fmt == "mixtral" else ("gate_proj", "up_proj", "down_proj")
    root = h + ("block_sparse_moe." if fmt == "mixtral" else "mlp.")
    experts = range(cfg.moe.n_experts)
    w13 = torch.stack(
        [
            torch.cat(
                [
                    get(f"{root}experts.{e}.{names[0]}.weight"),
                    get(f"{root}experts.{e}.{names[1]}.weight"),
                ]
            ).T
            for e in experts
        ]
    )
    w2 = torch.stack([get(f"{root}experts.{e}.{names[2]}.weight").T for e in experts])
    out = {
        b + "ffn.router.weight": get(root + "gate.weight"),
        b + "ffn.w13": w13,
        b + "ffn.w2": w2,
        b + "ffn.expert_bias": torch.zeros(cfg.moe.n_experts),
    }
    if cfg.moe.n_shared:
        if get(root + "shared_expert_gate.weight").abs().max() > 0:
            raise HFFormatError("a learned shared-expert gate is not supported (must be zero)")
        out |= {
            b + "ffn.shared.w13.weight": torch.cat(
                [
                    get(root + "shared_expert.gate_proj.weight"),
                    get(root + "shared_expert.up_proj.weight"),
                ]
            ),
            b + "ffn.shared.w2.weight": get(root + "shared_expert.down_proj.weight") / 2,
        }
    return out


ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
}
"""The model types an import reads; an export writes all but mistral (it is Llama's layout)."""


def hf_config(
    cfg: ModelConfig, tok: Tokenizer | None = None, dtype: str = "fp32"
) -> dict[str, Any]:
    """config.json of the HF model class with this shape (Llama, Qwen2, Mixtral or Qwen2-MoE)."""
    fmt = hf_format(cfg)
    m = cfg.moe
    extra: dict[str, Any] = {}
    if fmt == "llama":
        extra = {"attention_bias": False, "mlp_bias": False}
    elif fmt == "qwen2":
        extra = {"use_sliding_window": False, "sliding_window": None}
    elif fmt == "mixtral":
        extra = {
            "intermediate_size": cfg.expert_dim,
            "num_local_experts": m.n_experts,
            "num_experts_per_tok": m.top_k,
            "router_aux_loss_coef": m.aux_loss,
            "output_router_logits": False,
            "sliding_window": None,
        }
    elif fmt == "qwen2_moe":
        extra = {
            "moe_intermediate_size": cfg.expert_dim,
            "num_experts": m.n_experts,
            "num_experts_per_tok": m.top_k,
            "decoder_sparse_step": m.every,
            "shared_expert_intermediate_size": m.n_shared * cfg.expert_dim,
            "norm_topk_prob": m.renormalize,
            "mlp_only_layers": [],
            "router_aux_loss_coef": m.aux_loss,
            "output_router_logits": False,
            "use_sliding_window": False,
            "sliding_window": None,
        }
    eos = sorted(tok.stop_ids) if tok else None
    return {
        "architectures": [ARCHITECTURES[fmt]],
        "model_type": fmt,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": cfg.norm_eps,
        "initializer_range": cfg.init_std,
        # transformers >= 5 reads rope_parameters; older versions read rope_theta.
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": tok.bos_id if tok else None,
        "eos_token_id": (eos[0] if len(eos) == 1 else eos) if eos else None,
        "pad_token_id": tok.pad_id if tok else None,
        # transformers >= 5 reads dtype; older versions read torch_dtype.
        "dtype": _DTYPE_NAMES[dtype],
        "torch_dtype": _DTYPE_NAMES[dtype],
    } | extra


def export_hf(
    model: Transformer,
    tok: Tokenizer,
    out: Path,
    drop_selection_bias: bool = False,
    dtype: str = "fp32",
) -> Path:
    """Write `model` and `tok` as a Hugging Face folder `out` (new or empty) in the Llama,
    Qwen2, Mixtral or Qwen2-MoE format (see `hf_format`), its weights stored as `dtype`
    (fp32, bf16 or fp16)."""
    out = Path(out)
    if dtype not in DTYPES:
        raise HFFormatError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if model.cfg.smear:
        raise HFFormatError(
            "this model uses token smearing (--model.smear), which the Llama format has no "
            "place for; it cannot be exported"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HFFormatError(f"{out} exists and is not an empty directory; choose another --out")
    weights = {
        k: v.to(DTYPES[dtype]) for k, v in to_hf_state_dict(model, drop_selection_bias).items()
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = hf_config(model.cfg, tok, dtype)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    tok.save_pretrained(out, model.cfg.context_length)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HFFormatError(f"cannot read {path}: {e}") from None


def _context_length(hf: dict[str, Any]) -> int:
    """max_position_embeddings, capped at the sliding window where one is used: within the
    window, sliding-window attention is exactly full causal attention (Mistral v0.1)."""
    length = hf.get("max_position_embeddings", 2048)
    window = hf.get("sliding_window")
    used = hf.get("use_sliding_window")
    if window and (used is None or used):
        length = min(length, window)
    return length


def model_config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """lmlab ModelConfig of a Llama-family config.json, or HFFormatError naming what differs.
    Qwen2 layouts get `qkv_bias` (`load_hf` drops it again when the biases are zero)."""
    fmt = hf.get("model_type")
    if fmt not in ARCHITECTURES:
        raise HFFormatError(
            f"model_type {fmt!r} is not supported (need {', '.join(ARCHITECTURES)})"
        )
    if hf.get("mlp_only_layers"):
        raise HFFormatError("mlp_only_layers is not supported")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise HFFormatError(f"RoPE scaling {rope.get('rope_type')!r} is not supported")
    if hf.get("hidden_act", "silu") != "silu" or hf.get("attention_bias") or hf.get("mlp_bias"):
        raise HFFormatError(
            "only silu MLPs without biases (Qwen2's q/k/v biases aside) are supported"
        )
    d, n_head = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, d // n_head):
        raise HFFormatError(f"head_dim {hf['head_dim']} != hidden_size / heads {d // n_head}")
    cfg = ModelConfig(
        vocab_size=hf["vocab_size"],
        context_length=_context_length(hf),
        n_layer=hf["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head,
        d_model=d,
        d_ff=hf["intermediate_size"],
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=hf.get("initializer_range", 0.02),
        qkv_bias=fmt in ("qwen2", "qwen2_moe"),
    )
    if fmt == "mixtral":
        cfg.moe = MoEConfig(
            n_experts=hf["num_local_experts"],
            top_k=hf["num_experts_per_tok"],
            d_expert=hf["intermediate_size"],
        )
    elif fmt == "qwen2_moe":
        d_expert = hf["moe_intermediate_size"]
        shared = hf.get("shared_expert_intermediate_size") or 0
        if shared % d_expert:
            raise HFFormatError("shared expert size must be a multiple of the expert size")
        cfg.moe = MoEConfig(
            n_experts=hf["num_experts"],
            top_k=hf["num_experts_per_tok"],
            d_expert=d_expert,
            n_shared=shared // d_expert,
            every=hf.get("decoder_sparse_step", 1),
            renormalize=bool(hf.get("norm_topk_prob", False)),
        )
    cfg.validate()
    return cfg


def load_hf(src: Path, context_length: int | None = None) -> Transformer:
    """An lmlab Transformer (float32, eval mode) from a local HF Llama-family folder, its
    context capped at `context_length` if given (the engine's KV cache and SFT's packed rows
    are that long; RoPE needs nothing else to run shorter)."""
    src = Path(src)
    if not (src / "config.json").is_file():
        raise HFFormatError(f"{src} is not a Hugging Face checkpoint (no config.json)")
    try:
        cfg = model_config_from_hf(_read_json(src / "config.json"))
    except KeyError as e:
        raise HFFormatError(f"{src / 'config.json'} lacks the setting {e.args[0]!r}") from None
    except (TypeError, AttributeError) as e:
        raise HFFormatError(f"{src / 'config.json'} has a setting of the wrong type: {e}") from None
    if context_length is not None:
        if not 0 < context_length <= cfg.context_length:
            raise HFFormatError(
                f"--context-length {context_length} is not within the checkpoint's "
                f"{cfg.context_length} positions"
            )
        cfg.context_length = context_length
    index = src / "model.safetensors.index.json"
    if index.is_file():
        record = _read_json(index)
        weight_map = record.get("weight_map") if isinstance(record, dict) else None
        shards = list(weight_map.values()) if isinstance(weight_map, dict) else []
        if not shards or not all(isinstance(f, str) for f in shards):
            raise HFFormatError(f"{index} has no weight_map of tensor names to shard files")
        files = sorted(set(shards))
    elif (src / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise HFFormatError(f"{src} holds no model.safetensors (pytorch .bin is not supported)")
    sd: dict[str, Tensor] = {}
    for f in files:
        try:
            path = inside(src, f, "shard file")  # a planted ../x must not be read
            sd |= load_file(str(path))
        except (CheckpointError, SafetensorError, OSError) as e:
            raise HFFormatError(f"cannot read shard {f!r} of {src}: {e}") from None
    biases = [t for k, t in sd.items() if "self_attn." in k and k.endswith("_proj.bias")]
    if cfg.qkv_bias and all(t.abs().max() == 0 for t in biases):
        cfg.qkv_bias = False  # placeholder zeros (what an lmlab export writes for Qwen2-MoE)
    model = Transformer(cfg)
    try:
        model.load_state_dict(from_hf_state_dict(cfg, sd))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise HFFormatError(f"{src} does not match its config.json: {first}") from None
    return model.eval()


def import_hf(src: Path, out: Path, context_length: int | None = None) -> Path:
    """Turn a local HF Llama-family folder into an lmlab run directory `out` (checkpoint at step
    0), keeping the checkpoint's own tokenizer, special tokens and chat template; the context
    capped at `context_length` if given."""
    src, out = Path(src), Path(out)
    check_new_run_dir(out)
    if not (src / "config.json").is_file():
        raise HFFormatError(f"{src} is not a Hugging Face checkpoint (no config.json)")
    if not (src / "tokenizer.json").is_file():
        raise HFFormatError(f"{src} has no tokenizer.json (a fast tokenizer is needed)")
    try:
        tok = Tokenizer.from_pretrained(src)
    except Exception as e:  # tokenizers raises bare Exceptions for malformed files
        raise HFFormatError(f"cannot use the tokenizer of {src}: {e}") from None
    model = load_hf(src, context_length)
    if tok.vocab_size > model.cfg.vocab_size:
        raise HFFormatError(
            f"the tokenizer has {tok.vocab_size} tokens but the model only {model.cfg.vocab_size}"
        )
    write_run_files(out, RunConfig(model=model.cfg), tok)
    save_model(out, model, {"step": 0, "tokens": 0, "imported_from": str(src)})
    return out
