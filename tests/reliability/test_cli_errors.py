"""Every command over bad input (issue 23, items 13 and 15): a misspelt or unknown flag, a bad
value, a size out of its limits, a missing input, an occupied or impossible output. Each case
must exit with code 2 and print exactly one stderr line, `error: ...`, saying what is wrong,
with no traceback, and leave every file as it was (the folder the command runs in, its inputs
and the existing outputs are compared before and after)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from lmlab.cli import COMMANDS, main

CASES: list[tuple[str, str, str]] = [
    # (argv with {placeholders}, category, a fragment the error line must hold)
    ("", "bad_flag", "no command given"),
    ("pretrian", "bad_flag", "perhaps you meant 'pretrain'"),
    ("pretrain --train.max-step 3", "bad_flag", "perhaps you meant --train.max-steps"),
    ("pretrain --trian.lr 1", "bad_flag", "perhaps you meant --train.lr"),
    ("pretrain --train.max-steps abc", "bad_value", "cannot parse --train.max-steps"),
    ("pretrain --train.schedule bogus", "bad_value", "invalid choice 'bogus'"),
    ("pretrain --train.log-every 0 --out {new}", "size", "--train.log-every must be in [1,"),
    ("pretrain --model.init-std nan --out {new}", "bad_value", "--model.init-std must be a finite"),
    ("pretrain --model.init-std 0 --out {new}", "bad_value", "--model.init-std must be > 0"),
    ("pretrain --train.lr inf --out {new}", "bad_value", "--train.lr must be a finite number"),
    ("pretrain --train.weight-decay nan", "bad_value", "--train.weight-decay must be a finite"),
    ("pretrain --train.warmup-steps -1", "size", "--train.warmup-steps must be >= 0, got -1"),
    ("pretrain --model.vocab-size 1000000000000", "size", "--model.vocab-size must be in"),
    ("pretrain --resume {missing}", "missing_path", "no run to resume"),
    ("pretrain --corpus {corpus} --tokenizer char --out {occupied}", "occupied", "already holds"),
    ("pretrain --out {afile}/run", "occupied", "is a file, not a folder"),
    ("tokenize --out {new} --vocab-sise 500", "bad_flag", "perhaps you meant --vocab-size"),
    ("tokenize --out {new} --corpus {corpus} --val-fraction nan", "bad_value", "--val-fraction"),
    ("tokenize --out {new} --corpus {corpus} --vocab-size -5", "size", "--vocab-size must be >= 0"),
    ("tokenize --out {new} --corpus {missing}", "missing_path", "not a known source"),
    ("tokenize --out {afile}/sub --corpus {corpus}", "occupied", "is a file, not a folder"),
    ("info {run} --model.n-layer 3", "bad_value", "--model.* flags describe a preset"),
    ("info --model.n-head abc", "bad_value", "cannot parse --model.n-head"),
    ("info {missing}", "missing_path", "is not an lmlab run"),
    ("sample {run} --temperature abc", "bad_value", "cannot parse --temperature"),
    ("sample {run} --temperature nan", "bad_value", "--temperature must be a finite number"),
    ("sample {run} --n 0", "size", "--n must be in [1, 1024], got 0"),
    ("sample {run} --max-new-tokens 0", "size", "--max-new-tokens must be in [1,"),
    ("sample {missing}", "missing_path", "not an lmlab run"),
    ("generate {run} --device bogus", "bad_value", "--device 'bogus' is not a device"),
    ("generate {run} --device cuda:7", "bad_value", "CUDA device"),
    ("generate {run} --top-p 0", "bad_value", "top_p must be in (0, 1]"),
    ("generate {run} --n 100000", "size", "--n must be in [1, 1024]"),
    ("generate {missing}", "missing_path", "not an lmlab run"),
    ("chat {run} --device bogus", "bad_value", "--device 'bogus' is not a device"),
    ("chat {run} --temperature -1", "bad_value", "temperature must be >= 0"),
    ("chat {run} --max-new-tokens 1000000000000", "size", "--max-new-tokens must be in"),
    ("export {run} --format onnx", "bad_value", "invalid choice 'onnx'"),
    ("export {run} --out {occupied}", "occupied", "is not empty; choose another --out"),
    ("export {missing} --out {new}", "missing_path", "not an lmlab run"),
    ("evaluate {missing} --tasks add", "missing_path", "is not an lmlab run"),
    ("evaluate {run} --tasks add --out {afile}/x.json", "occupied", "x.json"),
    ("import {missing} --out {new}", "missing_path", "is not a Hugging Face checkpoint"),
    ("import {run} --out {afile}/x", "occupied", "is a file, not a folder"),
    ("moe-stats {run} --batches 0", "size", "--batches must be in [1, 100000], got 0"),
    ("moe-stats {run} --batch-size 1000000000000", "size", "--batch-size must be in"),
    ("moe-stats {missing}", "missing_path", "not an lmlab run"),
    ("world bogus", "bad_flag", "usage: lmlab world"),
    ("world sample --task bogus", "bad_value", "unknown task 'bogus'"),
    ("world sample --n abc", "bad_value", "cannot parse --n"),
    ("world sample --n 0", "size", "--n must be in [1, 1000000], got 0"),
    ("sft {run} --out {new} --train.beta2 nan", "bad_value", "--train.beta2 must be a finite"),
    ("sft {run} --out {new} --style bogus", "bad_value", "invalid choice 'bogus'"),
    ("sft {run} --out {new} --n-world 1", "size", "--n-world must be in [2, 1000000]"),
    ("sft {run} --out {occupied}", "occupied", "already holds a run"),
    ("sft {run} --out {afile}/x", "occupied", "is a file, not a folder"),
    ("sft {missing} --out {new}", "missing_path", "not an lmlab run"),
    ("eval {run} --tasks bogus", "bad_value", "unknown task 'bogus'"),
    ("eval {run} --strategy bogus", "bad_value", "unknown strategy 'bogus'"),
    ("eval {run} --max-new-tokens 0", "size", "--max-new-tokens must be in [1, 131072], got 0"),
    ("eval {run} --n 0", "size", "--n must be in [1, 1000000], got 0"),
    ("eval {run} --device bogus", "bad_value", "--device 'bogus' is not a device"),
    ("eval {run} --out {afile}/x.json", "occupied", "is a file, not a folder"),
    ("eval {missing}", "missing_path", "not an lmlab run"),
    ("reason {run} --strategy sc@100000", "size", "k must be in [1, 64], got 100000"),
    ("reason {run} --strategy bogus", "bad_value", "unknown strategy 'bogus'"),
    ("reason {run} --strategy sc --temperature nan", "bad_value", "--temperature must be a"),
    ("reason {run} --batch-size 0", "size", "--batch-size must be in [1, 1024], got 0"),
    ("reason {run} --breadht 3", "bad_flag", "perhaps you meant --breadth"),
    ("reason {run} --compare direct,cot --plot {afile}/p.png", "occupied", "is a file"),
    ("reason {missing}", "missing_path", "not an lmlab run"),
    ("emergence --out {new} --ladder bogus", "bad_value", "unknown size 'bogus'"),
    ("emergence --out {new} --steps 0", "size", "steps must be >= 1"),
    ("emergence --out {afile}/x", "occupied", "is a file, not a folder"),
    ("prefs {run} --out {new}.jsonl --noise nan", "bad_value", "--noise must be a finite"),
    ("prefs {run} --out {new}.jsonl --n-prompts 0", "size", "--n-prompts must be in [1,"),
    ("prefs {run} --out {new}.jsonl --annotator bogus", "bad_value", "unknown annotator"),
    ("prefs {run} --out {prefs}", "occupied", "exists"),
    ("prefs {missing} --out {new}.jsonl", "missing_path", "not an lmlab run"),
    ("label {run} --out {new}.jsonl --n 0", "size", "--n must be in [1, 1000000], got 0"),
    ("label {missing} --out {new}.jsonl", "missing_path", "not an lmlab run"),
    ("rm {run} --data {prefs} --out {new} --val-fraction nan", "bad_value", "--val-fraction"),
    ("rm {run} --data {missing} --out {new}", "missing_path", "does not exist"),
    ("rm {run} --data {prefs} --out {occupied}", "occupied", "already holds a run"),
    ("rm {run} --data {prefs} --out {afile}/x", "occupied", "is a file, not a folder"),
    ("dpo {run} --data {prefs} --out {new} --beta nan", "bad_value", "--beta must be a finite"),
    ("dpo {run} --data {prefs} --out {new} --beta inf", "bad_value", "--beta must be a finite"),
    ("dpo {run} --data {prefs} --out {occupied}", "occupied", "already holds a run"),
    ("grpo {run} --out {new} --k 1", "size", "--k must be in [2, 64], got 1"),
    ("grpo {run} --out {new} --temperature nan", "bad_value", "--temperature must be a finite"),
    ("grpo {run} --out {afile}/x", "occupied", "is a file, not a folder"),
    ("grpo {missing} --out {new}", "missing_path", "not an lmlab run"),
    ("ppo {run} --reward {missing} --out {new}", "missing_path", "is not an lmlab run"),
    ("ppo {run} --reward {run} --out {new} --clip nan", "bad_value", "--clip must be a finite"),
    ("ppo {run} --reward {run} --out {occupied}", "occupied", "already holds a run"),
    ("rlhf bogus", "bad_flag", "usage: lmlab rlhf overopt"),
    ("rlhf overopt {run} --out {new} --noise nan", "bad_value", "--noise must be a finite"),
    ("rlhf overopt {run} --out {new} --bon-max 1000", "size", "--bon-max must be in [1, 64]"),
    ("rlhf overopt {missing} --out {new}", "missing_path", "not an lmlab run"),
    ("rlhf overopt {run} --out {nonempty}", "occupied", "not empty"),
    ("scaling bogus", "bad_flag", "usage: lmlab scaling"),
    ("scaling plan --out {new} --sizes 2", "size", "--sizes 2"),
    ("scaling plan --out {new} --lr nan", "bad_value", "--lr must be a finite number"),
    ("scaling plan --out {afile}/x", "occupied", "is a file, not a folder"),
    ("scaling run {missing}", "missing_path", "is not a sweep"),
    ("scaling run {run} --workers 0", "size", "--workers must be in [1, 256], got 0"),
    ("scaling fit {missing}", "missing_path", "does not exist"),
    ("scaling fit {corpus} --count bogus", "bad_value", "invalid choice 'bogus'"),
    ("scaling fit {corpus} --starts 0", "size", "--starts must be in [1, 10000], got 0"),
    ("scaling predict {corpus}", "bad_flag", "missing --budget"),
    ("scaling predict {corpus} --budget nan", "bad_value", "--budget must be a finite number"),
    ("scaling predict {missing} --budget 1e18", "missing_path", "does not exist"),
    ("serve {run} --port 70000", "size", "--port must be in [0, 65535], got 70000"),
    ("serve {run} --max-batch 0", "size", "--max-batch must be in [1, 1024], got 0"),
    ("serve {run} --timeout inf", "bad_value", "--timeout must be a finite number"),
    ("serve {run} --device bogus", "bad_value", "--device 'bogus' is not a device"),
    ("serve {run} --max-qeue 3", "bad_flag", "perhaps you meant --max-queue"),
    ("serve {missing}", "missing_path", "not an lmlab run"),
    ("run --preset bogus", "bad_value", "unknown preset 'bogus'"),
    ("run --resume {missing}", "missing_path", "is not a lab run"),
    ("run --out {afile}/x", "occupied", "is a file, not a folder"),
    ("report {missing}", "missing_path", "is not a lab run"),
    ("report {run}", "missing_path", "is not a lab run"),
]


def _snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                out[os.path.join(dirpath, d)] = "dir"
            for f in filenames:
                path = os.path.join(dirpath, f)
                out[path] = hashlib.sha1(Path(path).read_bytes()).hexdigest()
    return out


@pytest.fixture
def places(tmp_path: Path, tiny_run: Path, corpus_file: Path, prefs_file: Path) -> dict[str, Path]:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(tiny_run, tmp_path / "occupied")
    (tmp_path / "nonempty").mkdir()
    (tmp_path / "nonempty" / "keep.txt").write_text("keep\n")
    (tmp_path / "afile").write_text("a plain file\n")
    prefs = tmp_path / "prefs.jsonl"
    shutil.copy(prefs_file, prefs)
    return {
        "run": tiny_run,
        "corpus": corpus_file,
        "prefs": prefs,
        "new": work / "new",
        "missing": tmp_path / "no_such_path",
        "occupied": tmp_path / "occupied",
        "nonempty": tmp_path / "nonempty",
        "afile": tmp_path / "afile",
        "work": work,
    }


@pytest.mark.parametrize(("argv", "category", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_changes_nothing(
    argv: str,
    category: str,
    fragment: str,
    places: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(places["work"])  # a default output would land here, and be seen
    roots = (places["work"].parent, places["run"], places["corpus"].parent)
    before = _snapshot(*roots)
    code = main([a.format(**places) for a in argv.split()])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert _snapshot(*roots) == before, f"{category}: files changed"


def test_every_command_is_in_the_table() -> None:
    tried = {c[0].split()[0] for c in CASES if c[0]}
    assert set(COMMANDS) <= tried, set(COMMANDS) - tried
