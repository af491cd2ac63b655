"""Damaged files are one `error:` line (exit 2, no traceback) and change nothing: a config.json
of the wrong types or shape, a corrupt tokenizer.json, truncated, garbage or empty weights, and
a Hugging Face folder whose config lacks settings (issue 23, item 13; damaged optimizer, RNG
and state files on resume are in test_checkpoints.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from lmlab.cli import main
from lmlab.config import ConfigError, RunConfig, SFTConfig, TrainConfig, build_config
from lmlab.runs import MANIFEST_FILE, latest_checkpoint
from tests.conftest import user_error
from tests.reliability.conftest import copy_run, digest

# What reads a run: each command, given RUN (and OUT where it writes a new folder).
READERS = {
    "sample": ["sample", "RUN", "--prompt", "def", "--max-new-tokens", "2"],
    "generate": ["generate", "RUN", "--prompt", "def", "--max-new-tokens", "2"],
    "resume": ["pretrain", "--resume", "RUN", "--train.max-steps", "6", "--quiet"],
    "sft": ["sft", "RUN", "--out", "OUT", "--quiet"],
    "export": ["export", "RUN", "--out", "OUT"],
    "eval": ["eval", "RUN", "--tasks", "arith:1", "--n", "1"],
}


def _refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], commands: list[str]
) -> list[str]:
    """Every command in `commands` on `run`: one error line each, nothing changed or made."""
    before = digest(run)
    errors = []
    for name in commands:
        subst = {"RUN": str(run), "OUT": str(tmp_path / "out")}
        errors.append(user_error(capsys, [subst.get(a, a) for a in READERS[name]]))
        assert digest(run) == before and not (tmp_path / "out").exists(), name
    return errors


def _edit(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def edit(cfg: dict[str, Any]) -> Any:
        section, name = key.split(".", 1)
        if name == "*":
            cfg[section] = value
        else:
            cfg[section][name] = value
        return cfg

    return edit


CONFIGS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "string-for-int": (_edit("model.n_layer", "1"), "ModelConfig.n_layer must be an integer"),
    "int-for-bool": (_edit("model.tie_embeddings", 1), "must be true or false"),
    "nan": (_edit("train.lr", math.nan), "TrainConfig.lr must be a finite number"),
    "infinity": (_edit("model.rope_theta", math.inf), "must be a finite number"),
    "not-a-choice": (_edit("train.schedule", "linear"), "one of 'cosine', 'wsd'"),
    "nested": (_edit("model.moe", {"n_experts": "8"}), "MoEConfig.n_experts"),
    "list-for-section": (_edit("model.*", []), "must be a JSON object"),
    "shape": (_edit("model.d_model", 30), "not divisible by n_head"),
    "range": (_edit("train.min_lr", 1.0), "min_lr <= lr"),
    "unknown-key": (_edit("model.n_layers", 2), "unknown ModelConfig setting 'n_layers'"),
    "top-level-list": (lambda cfg: [cfg], "must be a JSON object"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_a_config_json_of_the_wrong_types_or_shape_is_one_error_line(
    case: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(trained_run, tmp_path)
    edit, expect = CONFIGS[case]
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(edit(cfg)))
    errors = _refused(run, tmp_path, capsys, ["sample", "resume", "sft", "export"])
    errors.append(user_error(capsys, ["info", str(run)]))
    assert all(expect in e and "config.json" in e for e in errors), errors


def test_config_types_are_checked_in_one_place() -> None:
    """build_config checks every annotation kind the configs use."""
    assert build_config(TrainConfig, {"lr": 1, "ckpt_every": None}).lr == 1.0
    assert build_config(TrainConfig, {"ckpt_every": 5}).ckpt_every == 5
    with pytest.raises(ConfigError, match="ckpt_every must be an integer or null"):
        build_config(TrainConfig, {"ckpt_every": 2.5})
    with pytest.raises(ConfigError, match="an integer, got true"):
        build_config(TrainConfig, {"max_steps": True})
    with pytest.raises(ConfigError, match=r"SFTConfig.tasks\[1\] must be a string"):
        build_config(SFTConfig, {"tasks": ["arith", 3]})
    assert build_config(SFTConfig, {"tasks": "arith,chain"}).tasks == ["arith", "chain"]
    with pytest.raises(ConfigError, match="unknown run config section"):
        RunConfig.from_dict({"modle": {}})


TOKENIZERS: dict[str, Callable[[Path], None]] = {
    "garbage": lambda p: p.write_bytes(b"\x00\xffnot json"),
    "empty": lambda p: p.write_text(""),
    "wrong-json": lambda p: p.write_text('{"model": 3}'),
    "no-chat-tokens": lambda p: HFTokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")).save(
        str(p)
    ),
}


@pytest.mark.parametrize("case", list(TOKENIZERS))
def test_a_corrupt_tokenizer_json_is_one_error_line(
    case: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(trained_run, tmp_path)
    TOKENIZERS[case](run / "tokenizer.json")
    errors = _refused(run, tmp_path, capsys, ["sample", "generate", "resume", "sft", "export"])
    assert all("tokenizer" in e for e in errors), errors


WEIGHTS: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda data: data[: len(data) // 2],
    "garbage": lambda data: b"\xde\xad\xbe\xef" * 64,
    "empty": lambda data: b"",
    "header-only": lambda data: data[: 8 + int.from_bytes(data[:8], "little")],
}


@pytest.mark.parametrize("case", list(WEIGHTS))
def test_unreadable_weights_are_one_error_line_everywhere(
    case: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a manifest (a checkpoint from before checksums) reading the file finds the
    damage; with one, its checksum does (test_checkpoints.py)."""
    run = copy_run(trained_run, tmp_path)
    ckpt = latest_checkpoint(run)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(WEIGHTS[case](weights.read_bytes()))
    (ckpt / MANIFEST_FILE).unlink()
    errors = _refused(run, tmp_path, capsys, list(READERS))
    assert all("model.safetensors" in e for e in errors), errors


@pytest.fixture(scope="module")
def hf_folder(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "hf"
    assert main(["export", str(trained_run), "--out", str(out)]) == 0
    return out


HF_CONFIGS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    **{
        f"no-{key}": (lambda cfg, key=key: {k: v for k, v in cfg.items() if k != key}, key)
        for key in (
            "hidden_size",
            "num_attention_heads",
            "num_hidden_layers",
            "vocab_size",
            "intermediate_size",
            "model_type",
        )
    },
    "string-size": (lambda cfg: {**cfg, "hidden_size": "32"}, "wrong type"),
    "list": (lambda cfg: [cfg], "wrong type"),
}


@pytest.mark.parametrize("case", list(HF_CONFIGS))
def test_an_hf_config_lacking_settings_is_one_error_line(
    case: str, hf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = copy_run(hf_folder, tmp_path, "hf")
    edit, expect = HF_CONFIGS[case]
    (src / "config.json").write_text(
        json.dumps(edit(json.loads((src / "config.json").read_text())))
    )
    err = user_error(capsys, ["import", str(src), "--out", str(tmp_path / "out")])
    assert expect in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", list(WEIGHTS))
def test_unreadable_hf_weights_are_one_error_line(
    case: str, hf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = copy_run(hf_folder, tmp_path, "hf")
    weights = src / "model.safetensors"
    weights.write_bytes(WEIGHTS[case](weights.read_bytes()))
    err = user_error(capsys, ["import", str(src), "--out", str(tmp_path / "out")])
    assert "model.safetensors" in err or "lacks tensor" in err
    assert not (tmp_path / "out").exists()
