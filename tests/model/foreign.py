"""Foreign Hugging Face checkpoints built in the test session (no hub): a byte-level BPE
tokenizer trained here with a model family's own special tokens (appended after the vocabulary,
nothing at lmlab's ids 0..5) and its chat template, beside a random small model of the family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from tests.conftest import CORPUS_TEXT

# Qwen2-Instruct's template (ChatML with a default system prompt), verbatim.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama-3-Instruct's template, verbatim: BOS through `bos_token`, trimmed contents.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

STYLES: dict[str, dict[str, Any]] = {
    # Qwen2: no BOS, <|im_end|> ends a turn and is EOS, pad <|endoftext|>; template in
    # chat_template.jinja (as transformers >= 4.50 saves it).
    "chatml": {
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "config": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None},
        "template": CHATML,
        "bos": None,
    },
    # Llama 3: the post-processor adds <|begin_of_text|>, <|eot_id|> ends a turn, no pad;
    # template inline in tokenizer_config.json.
    "llama3": {
        "specials": [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ],
        "config": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
        "template": LLAMA3,
        "bos": "<|begin_of_text|>",
    },
}

TEXTS = [CORPUS_TEXT, "hello there, how are you? I am fine. Answer: 42\n" * 20]


def write_tokenizer(folder: Path, style: str, vocab: int = 300) -> HFTokenizer:
    """A byte-level BPE with `vocab` learned tokens, then the style's special tokens, written to
    `folder` as a Hub checkpoint writes it (tokenizer.json, tokenizer_config.json and maybe
    chat_template.jinja)."""
    spec = STYLES[style]
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(TEXTS, trainer=trainer)
    hf.add_special_tokens(spec["specials"])
    if spec["bos"]:
        bos = spec["bos"]
        hf.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, hf.token_to_id(bos))],
        )
    else:
        hf.post_processor = processors.ByteLevel(trim_offsets=False)
    folder.mkdir(parents=True, exist_ok=True)
    hf.save(str(folder / "tokenizer.json"))
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 128,
        **spec["config"],
    }
    if style == "chatml":
        (folder / "chat_template.jinja").write_text(spec["template"])
    else:
        config["chat_template"] = spec["template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return hf


FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    # family: (transformers class prefix, tokenizer style, extra config)
    "llama": ("Llama", "llama3", {}),
    "mistral": ("Mistral", "llama3", {"sliding_window": 48, "max_position_embeddings": 96}),
    "qwen2": ("Qwen2", "chatml", {"tie_word_embeddings": True}),
    "mixtral": ("Mixtral", "chatml", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen2_moe": (
        "Qwen2Moe",
        "chatml",
        {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 24,
            "shared_expert_intermediate_size": 24,
            "decoder_sparse_step": 1,
            "norm_topk_prob": False,
        },
    ),
}
VOCAB = 320  # the model's rows: the tokenizer's 300 + specials, padded


def write_checkpoint(folder: Path, family: str, seed: int = 0) -> Any:
    """A random small model of `family` (every weight N(0, 0.2), biases included) and its
    family's tokenizer in `folder`; returns the transformers model (float32, eval mode)."""
    import transformers

    prefix, style, extra = FAMILIES[family]
    hf_tok = write_tokenizer(folder, style)
    ids = {k: hf_tok.token_to_id(v) if v else None for k, v in STYLES[style]["config"].items()}
    shape: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500.0},
        "tie_word_embeddings": False,
        "bos_token_id": ids.get("bos_token"),
        "eos_token_id": ids.get("eos_token"),
        "pad_token_id": ids.get("pad_token"),
    }
    cfg = getattr(transformers, f"{prefix}Config")(**(shape | extra))
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix}ForCausalLM")(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "shared_expert_gate" in name:
                p.zero_()  # lmlab's shared experts are always on (no learned gate)
            else:
                p.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    return model
