"""Tests for lmlab.model.hf on foreign checkpoints: Llama, Mistral, Qwen2, Mixtral and Qwen2-MoE
models built here with their own BPE tokenizers, special tokens and chat templates, imported,
compared with transformers, fine-tuned (one SFT and one DPO step) and exported back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lmlab.cli import main
from lmlab.config import SFTConfig, TrainConfig
from lmlab.data.tokenizer import Tokenizer
from lmlab.infer import Engine, GenerationError, SamplingParams
from lmlab.model.hf import import_hf
from lmlab.model.load import load_run
from lmlab.train.dpo import train_dpo
from lmlab.train.sft import sft
from tests.model.foreign import FAMILIES, VOCAB, write_checkpoint

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5  # float32 on both sides (see test_hf.py)
CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": "I am fine."},
    {"role": "user", "content": "how are you? <|im_end|><|eot_id|>"},
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Each family's folder and its transformers model, built once for the module."""
    root = tmp_path_factory.mktemp("foreign")
    return {f: (root / f, write_checkpoint(root / f, f)) for f in FAMILIES}


@pytest.fixture(scope="module")
def imported(
    checkpoints: dict[str, tuple[Path, Any]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("imported")
    return {f: import_hf(folder, root / f) for f, (folder, _) in checkpoints.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_import_gives_the_same_logits(
    checkpoints: dict[str, tuple[Path, Any]], imported: dict[str, Path], family: str
) -> None:
    _, hf = checkpoints[family]
    model, tok, cfg = load_run(imported[family])
    assert cfg.model.qkv_bias == (family in ("qwen2", "qwen2_moe"))  # Qwen2's biases are kept
    # Mistral's sliding window (48 of 96 positions) caps the context, where it is exact
    assert cfg.model.context_length == (48 if family == "mistral" else 128)
    ids = torch.randint(0, tok.vocab_size, (2, cfg.model.context_length))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, rtol=0, atol=ATOL)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_tokenizer_and_chat_template_match_transformers(
    checkpoints: dict[str, tuple[Path, Any]], imported: dict[str, Path], family: str
) -> None:
    folder, _ = checkpoints[family]
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    tok = Tokenizer.load(imported[family] / "tokenizer.json")  # what every stage loads
    assert tok.config is not None and (imported[family] / "tokenizer_config.json").is_file()
    for text in ["hello there", "x <|im_start|> y <|begin_of_text|>"]:
        assert tok.encode_prompt(text) == hf_tok(text)["input_ids"]
    for chat, prompt in [(CHAT, True), (CHAT[:3], False)]:
        ref = hf_tok.apply_chat_template(
            chat, add_generation_prompt=prompt, sanitize_control_tokens=True
        )["input_ids"]
        assert tok.encode_chat(chat, add_generation_prompt=prompt)[0] == ref
    assert tok.end_id == hf_tok.convert_tokens_to_ids(
        "<|eot_id|>" if family == "llama" else "<|im_end|>"
    )


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_generation_equals_transformers(
    checkpoints: dict[str, tuple[Path, Any]],
    imported: dict[str, Path],
    family: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, hf = checkpoints[family]
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    model, tok, _ = load_run(imported[family])
    unused = list(range(tok.vocab_size, VOCAB))

    def hf_greedy(ids: list[int]) -> list[int]:
        with torch.no_grad():
            out = hf.generate(
                torch.tensor([ids]),
                max_new_tokens=12,
                do_sample=False,
                eos_token_id=sorted(tok.stop_ids),
                suppress_tokens=unused,
            )
        return out[0, len(ids) :].tolist()

    capsys.readouterr()
    argv = ["generate", str(imported[family]), "--prompt", "hello", "--temperature", "0"]
    assert main([*argv, "--json", "--max-new-tokens", "12"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["token_ids"] == hf_greedy(hf_tok("hello")["input_ids"])
    chat_ids = hf_tok.apply_chat_template(CHAT[:2], add_generation_prompt=True)["input_ids"]
    reply = Engine(model, tok).chat(CHAT[:2], SamplingParams(12, 0.0))
    assert reply.token_ids == hf_greedy(chat_ids)
    assert reply.text == hf_tok.decode(hf_greedy(chat_ids), skip_special_tokens=True)
    if family == "qwen2":  # no BOS: an empty prompt has no token to start from
        with pytest.raises(GenerationError, match="empty and this tokenizer adds no BOS"):
            Engine(model, tok).generate([""], SamplingParams(4, 0.0))


def test_sft_and_dpo_steps_then_export_round_trip(
    imported: dict[str, Path], checkpoints: dict[str, tuple[Path, Any]], tmp_path: Path
) -> None:
    base = imported["qwen2"]
    chats = [
        [
            {"role": "user", "content": f"what is {i} + 1?"},
            {"role": "assistant", "content": str(i + 1)},
        ]
        for i in range(12)
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
    train = TrainConfig(max_steps=1, batch_size=2, eval_every=1, eval_iters=1, device="cpu")
    sft(base, tmp_path / "sft", train, SFTConfig(data=str(data)), show_progress=False)
    prefs = tmp_path / "prefs.jsonl"
    rows = [{"prompt": f"{i} + 1?", "chosen": str(i + 1), "rejected": "no idea"} for i in range(8)]
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_dpo(tmp_path / "sft", prefs, tmp_path / "dpo", train, show_progress=False)
    metrics = (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[0])["step"] == 1
    model, tok, _ = load_run(tmp_path / "dpo")
    assert tok.config == Tokenizer.load(base / "tokenizer.json").config  # the template travels
    # the fine-tuned run exports back to the checkpoint's own format and tokenizer
    assert main(["export", str(tmp_path / "dpo"), "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    assert type(hf).__name__ == "Qwen2ForCausalLM"
    ids = torch.randint(0, tok.vocab_size, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=ATOL)
    original = transformers.AutoTokenizer.from_pretrained(checkpoints["qwen2"][0])
    exported = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert exported.apply_chat_template(CHAT, add_generation_prompt=True) == (
        original.apply_chat_template(CHAT, add_generation_prompt=True)
    )
    assert exported("hello")["input_ids"] == original("hello")["input_ids"]


def test_cli_import_caps_the_context(
    checkpoints: dict[str, tuple[Path, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, hf = checkpoints["llama"]
    out = tmp_path / "short"
    assert main(["import", str(folder), "--out", str(out), "--context-length", "32"]) == 0
    model, _, cfg = load_run(out)
    assert cfg.model.context_length == 32
    ids = torch.randint(0, 300, (1, 32))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, rtol=0, atol=ATOL)
    too_long = ["import", str(folder), "--out", str(tmp_path / "long"), "--context-length", "999"]
    capsys.readouterr()
    assert main(too_long) == 2
    assert "not within the checkpoint's 128 positions" in capsys.readouterr().err
    assert not (tmp_path / "long").exists()
