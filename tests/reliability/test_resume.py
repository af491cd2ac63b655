"""Resume: a run killed before its first checkpoint resumes from step 0, the metrics rewrite of
a resume is atomic (a kill in it loses no history), a run resumes on its own tokenizer and
refuses a corpus that changed, and a failed checkpoint write resumes cleanly (issue 23, items
4, 7 and 9; items 4 and 7 and the step-0 resume were done before this suite: these tests
check them through the command line)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.runs import METRICS_FILE, latest_checkpoint
from lmlab.train.loop import truncate_metrics
from tests.conftest import run_killed, user_error
from tests.reliability.conftest import copy_run, digest, pretrain_argv


def _curve(run: Path) -> list[tuple[int, float, float | None]]:
    rows = [json.loads(x) for x in (run / METRICS_FILE).read_text().splitlines()]
    return [(r["step"], r["train_loss"], r.get("val_loss")) for r in rows]


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(
    corpus_file: Path, trained_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = pretrain_argv(corpus_file, out)
    code = f"import sys; from lmlab.cli import main; sys.exit(main({argv!r}))"
    run_killed("lmlab.train.pretrain", "next_token_loss", 2, code)  # inside step 2
    assert not (out / "checkpoints").exists() and _curve(out)[-1][0] == 1
    assert main(["pretrain", "--resume", str(out), "--quiet"]) == 0
    assert _curve(out) == _curve(trained_run)  # as if never killed, no row twice


def test_a_kill_during_the_metrics_rewrite_loses_no_history(
    trained_run: Path, tmp_path: Path
) -> None:
    """The rewrite goes to a temporary file that is fsynced, then renamed: killed at that
    fsync, the run still has every row."""
    run = copy_run(trained_run, tmp_path)
    before = (run / METRICS_FILE).read_text()
    code = (
        "from pathlib import Path; from lmlab.train.loop import truncate_metrics; "
        f"truncate_metrics(Path({str(run / METRICS_FILE)!r}), 2)"
    )
    run_killed("os", "fsync", 1, code)
    assert (run / METRICS_FILE).read_text() == before
    truncate_metrics(run / METRICS_FILE, 2)  # and done without a kill, it keeps steps <= 2
    assert [s for s, _, _ in _curve(run)] == [1, 2]


def test_a_resume_refuses_a_changed_corpus_and_keeps_the_runs_tokenizer(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus.txt"
    shutil.copy(corpus_file, corpus)
    out = tmp_path / "run"
    assert main(pretrain_argv(corpus, out, 2)) == 0
    corpus.write_text(corpus.read_text() + "\nZZZ new text with new characters: é ü\n")
    before = digest(out)
    capsys.readouterr()
    err = user_error(capsys, ["pretrain", "--resume", str(out), "--train.max-steps", "4"])
    assert "changed since" in err
    assert digest(out) == before  # tokenizer.json, config, checkpoints: all as they were


def test_a_resume_after_a_damaged_latest_pointer_does_not_start_over(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `latest` that names no checkpoint is an error, never "no checkpoint yet": a resume
    from step 0 would overwrite the run's history."""
    run = copy_run(trained_run, tmp_path)
    (run / "checkpoints" / "latest").write_text("step_000009")
    before = digest(run)
    err = user_error(capsys, ["pretrain", "--resume", str(run), "--quiet"])
    assert "incomplete" in err
    assert digest(run) == before
    (run / "checkpoints" / "latest").write_text("step_000004")
    assert latest_checkpoint(run).name == "step_000004"
