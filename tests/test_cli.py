"""Tests for lmlab.cli: bad input gives one clear line, exit code 2, and loses nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tyro

from lmlab.cli import main
from lmlab.commands.dpo import DPOArgs
from lmlab.commands.grpo import GRPOArgs
from lmlab.commands.ppo import PPOArgs
from lmlab.commands.prefs import PrefsArgs
from lmlab.commands.rm import RewardArgs
from tests.conftest import trl_preference_row, user_error

TINY = [
    "--model.n-layer",
    "1",
    "--model.d-model",
    "32",
    "--model.context-length",
    "32",
    "--train.batch-size",
    "2",
    "--train.eval-iters",
    "1",
    "--quiet",
]


def test_pretrain_sample_info_resume(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = [
        "pretrain",
        "--corpus",
        str(corpus_file),
        "--tokenizer",
        "char",
        *TINY,
        "--train.max-steps",
        "4",
        "--train.eval-every",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "tokens", "train_loss"} <= rows[0].keys()
    assert "val_loss" in rows[1]
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert main(["pretrain", "--resume", str(out), "--train.max-steps", "6", "--quiet"]) == 0
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    assert main(["sample", str(out), "--prompt", "def ", "--max-new-tokens", "5"]) == 0
    assert main(["info", str(out)]) == 0
    assert main(["info", "--preset", "small"]) == 0
    assert "params non-embedding" in capsys.readouterr().out

    # an output directory that already holds a run is refused and left untouched
    before = (out / "config.json").read_text()
    err = user_error(capsys, [*argv[:-1], str(out)])
    assert "already holds a run" in err
    assert (out / "config.json").read_text() == before


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--corpus", "no/such/path.txt"], "not a known source"),
        (["--corpus", "EMPTY"], "empty"),
        (["--corpus", "LATIN1"], "not UTF-8"),
        (["--model.vocab-size", "100", "--tokenizer", "bpe"], "too small"),
        (["--model.context-length", "1000000"], "above the maximum"),
        (["--preset", "huge"], "unknown preset"),
    ],
)
def test_pretrain_bad_input(
    extra: list[str],
    expect: str,
    tmp_path: Path,
    corpus_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    subst = {"EMPTY": str(tmp_path / "empty.txt"), "LATIN1": str(tmp_path / "latin1.txt")}
    extra = [subst.get(a, a) for a in extra]
    base = [
        "pretrain",
        "--corpus",
        str(corpus_file),
        "--tokenizer",
        "char",
        *TINY,
        "--train.max-steps",
        "1",
        "--out",
        str(tmp_path / "out"),
    ]
    assert expect in user_error(capsys, base + extra)
    assert not (tmp_path / "out").exists()


def test_resume_without_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing to resume is one clear line (a run with config and tokenizer but no checkpoint
    yet does resume, from step 0: tests/train/test_loop.py)."""
    assert "no run to resume" in user_error(capsys, ["pretrain", "--resume", str(tmp_path)])
    (tmp_path / "config.json").write_text("{}")
    assert "no run to resume" in user_error(capsys, ["pretrain", "--resume", str(tmp_path)])


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_rlhf_needs_a_known_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert "usage: lmlab rlhf overopt" in user_error(capsys, ["rlhf", "bogus"])


@pytest.mark.parametrize(
    ("cls", "argv"),
    [
        (PrefsArgs, ["runs/sft", "--out", "p.jsonl"]),
        (RewardArgs, ["runs/sft", "--data", "p.jsonl", "--out", "rm"]),
        (DPOArgs, ["runs/sft", "--data", "p.jsonl", "--out", "dpo"]),
        (GRPOArgs, ["runs/sft", "--out", "grpo"]),
        (PPOArgs, ["runs/sft", "--reward", "rm", "--out", "ppo"]),
    ],
    ids=["prefs", "rm", "dpo", "grpo", "ppo"],
)
def test_long_rlhf_commands_take_quiet(cls: type, argv: list[str]) -> None:
    assert tyro.cli(cls, args=[*argv, "--quiet"]).quiet
    assert not tyro.cli(cls, args=argv).quiet


@pytest.mark.parametrize(
    ("group", "typo"), [("model", "n_layerz"), ("train", "max_stepz"), ("data", "corpuss")]
)
def test_a_typo_in_a_runs_config_json_is_one_line_naming_it(
    group: str, typo: str, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg[group][typo] = 1
    (run / "config.json").write_text(json.dumps(cfg))
    err = user_error(capsys, ["generate", str(run), "--max-new-tokens", "2"])
    assert str(run / "config.json") in err and repr(typo) in err


@pytest.mark.parametrize("command", ["rm", "dpo"])
def test_a_bad_preference_row_is_one_line_and_writes_nothing(
    command: str, chat_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "prefs.jsonl"
    reply = [{"role": "assistant", "content": "It is blue."}]
    rows = [trl_preference_row("conv-implicit"), {"chosen": reply, "rejected": reply[:0]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    err = user_error(capsys, [command, str(chat_run), "--data", str(data), "--out", str(out)])
    assert f"{data}:2: " in err and "rejected" in err
    assert not out.exists()
