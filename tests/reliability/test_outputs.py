"""Outputs: a command never writes into a run it did not make (`tokenize --out RUN`, `scaling
plan --out RUN`), and an --out that cannot be written — an existing file, a path under a file,
a place where nothing can be created — is one `error:` line before any work starts (issue 23,
items 3 and 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.cli import main
from tests.conftest import user_error
from tests.reliability.conftest import copy_run, digest


@pytest.mark.parametrize(
    "argv",
    [
        ["tokenize", "--corpus", "CORPUS", "--tokenizer", "char", "--out", "RUN"],
        ["scaling", "plan", "--corpus", "CORPUS", "--tokenizer", "char", "--out", "RUN"],
    ],
    ids=["tokenize", "scaling-plan"],
)
def test_an_existing_run_is_never_written_into(
    argv: list[str],
    trained_run: Path,
    corpus_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = copy_run(trained_run, tmp_path)
    before = digest(run)
    subst = {"RUN": str(run), "CORPUS": str(corpus_file)}
    err = user_error(capsys, [subst.get(a, a) for a in argv])
    assert str(run) in err and "choose another --out" in err
    assert digest(run) == before


def test_tokenize_writes_a_new_folder(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tok"
    argv = ["tokenize", "--corpus", str(corpus_file), "--tokenizer", "char", "--out", str(out)]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["stats.json", "tokenizer.json"]


# A command that checked its --out only after its work would first fail on its input: a run,
# corpus or source that does not exist. So each error below being about --out shows the check
# came first.
DIR_OUTPUTS = {
    "tokenize": ["tokenize", "--corpus", "NOPE", "--out", "OUT"],
    "pretrain": ["pretrain", "--corpus", "NOPE", "--out", "OUT"],
    "sft": ["sft", "NOPE", "--out", "OUT"],
    "dpo": ["dpo", "NOPE", "--data", "NOPE", "--out", "OUT"],
    "export": ["export", "NOPE", "--out", "OUT"],
    "import": ["import", "NOPE", "--out", "OUT"],
    "scaling-plan": ["scaling", "plan", "--corpus", "NOPE", "--out", "OUT"],
    "run": ["run", "--preset", "tiny", "--out", "OUT"],
    "emergence": ["emergence", "--out", "OUT", "--corpus", "NOPE"],
    "rlhf-overopt": ["rlhf", "overopt", "NOPE", "--out", "OUT"],
    "scaling-fit": ["scaling", "fit", "NOPE", "--out", "OUT"],
}
FILE_OUTPUTS = {
    "prefs": ["prefs", "NOPE", "--out", "OUT"],
    "label": ["label", "NOPE", "--out", "OUT"],
    "eval": ["eval", "NOPE", "--out", "OUT"],
    "reason": ["reason", "NOPE", "--out", "OUT"],
}


def _bad_out(kind: str, tmp_path: Path) -> Path:
    afile = tmp_path / "a-file.txt"
    afile.write_text("not a folder")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    return {
        "existing-file": afile,
        "existing-folder": folder,
        "under-a-file": afile / "out",
        "missing-folder": tmp_path / "no" / "such" / "out.jsonl",
        "unwritable": Path("/proc/lmlab-reliability-out"),
    }[kind]


def _check_refused(
    argv: list[str], out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if str(out).startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    before = digest(tmp_path)
    subst = {"OUT": str(out), "NOPE": str(tmp_path / "nope")}
    err = user_error(capsys, [subst.get(a, a) for a in argv])
    assert str(out) in err and "nope" not in err, err
    assert digest(tmp_path) == before


@pytest.mark.parametrize("kind", ["existing-file", "under-a-file", "unwritable"])
@pytest.mark.parametrize("command", list(DIR_OUTPUTS))
def test_a_bad_output_folder_is_refused_before_the_work(
    command: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _check_refused(DIR_OUTPUTS[command], _bad_out(kind, tmp_path), tmp_path, capsys)


@pytest.mark.parametrize("kind", ["existing-folder", "missing-folder", "unwritable"])
@pytest.mark.parametrize("command", list(FILE_OUTPUTS))
def test_a_bad_output_file_is_refused_before_the_work(
    command: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _check_refused(FILE_OUTPUTS[command], _bad_out(kind, tmp_path), tmp_path, capsys)
