"""Locks: one process writes a run, sweep, lab folder or preference file at a time. A second
writer gets one `error:` line naming the holder's pid and changes nothing; the first finishes
correctly; a lock whose holder died is free again (issue 23, item 6)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmlab.model.load import load_run
from lmlab.runs import LOCK_FILE, LockedError, lock_dir, lock_file, read_stage
from tests.conftest import plan_tiny_sweep, user_error
from tests.reliability.conftest import ROOT, copy_run, digest, lmlab, one_error_line, pretrain_argv

HOLDER = """
import sys
from pathlib import Path
from lmlab.runs import lock_dir, lock_file
held = []
for line in sys.stdin:  # "dir PATH" or "file PATH": take that lock and keep it
    kind, path = line.rstrip("\\n").split(" ", 1)
    held.append((lock_dir if kind == "dir" else lock_file)(Path(path)))
    print("held", flush=True)
"""


class Holder:
    """Another process that takes locks when asked and keeps them until it is killed (one
    process for many tests: starting Python with torch costs seconds)."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.pid = self.proc.pid

    def hold(self, kind: str, path: Path) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{kind} {path}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "held"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
        self.proc.wait()


@pytest.fixture(scope="module")
def holder() -> Iterator[Holder]:
    h = Holder()
    yield h
    h.kill()


def test_a_lock_names_its_holder_and_is_free_once_the_holder_dies(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = Holder()
    try:
        holder.hold("dir", run)
        with pytest.raises(LockedError, match=f"pid {holder.pid}\\)"):
            lock_dir(run)
    finally:
        holder.kill()  # the lock file stays, the lock does not
    assert (run / LOCK_FILE).is_file()
    with lock_dir(run):
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not (run / LOCK_FILE).exists()


def test_a_lock_taken_on_a_new_folder_leaves_nothing_when_nothing_was_written(
    tmp_path: Path,
) -> None:
    with lock_dir(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()


# Each writing command, given a folder or file another process is writing.
WRITERS = {
    "tokenize": ("dir", ["tokenize", "--corpus", "CORPUS", "--tokenizer", "char", "--out", "P"]),
    "pretrain": ("dir", ["pretrain", "--corpus", "CORPUS", "--tokenizer", "char", "--out", "P"]),
    "pretrain-resume": ("run", ["pretrain", "--resume", "P"]),
    "sft": ("dir", ["sft", "RUN", "--out", "P"]),
    "scaling-plan": ("dir", ["scaling", "plan", "--corpus", "CORPUS", "--out", "P"]),
    "scaling-run": ("sweep", ["scaling", "run", "P"]),
    "run": ("dir", ["run", "--preset", "tiny", "--out", "P"]),
    "run-resume": ("lab", ["run", "--resume", "P"]),
    "prefs": ("file", ["prefs", "RUN", "--out", "P"]),
    "label": ("file", ["label", "RUN", "--out", "P"]),
    "import": ("dir", ["import", "RUN", "--out", "P"]),
}


@pytest.mark.parametrize("command", list(WRITERS))
def test_every_writer_refuses_a_folder_another_process_writes(
    command: str,
    trained_run: Path,
    corpus_file: Path,
    tmp_path: Path,
    holder: Holder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kind, argv = WRITERS[command]
    path = tmp_path / "target"
    if kind == "run":
        path = copy_run(trained_run, tmp_path, "target")
    elif kind == "sweep":
        plan_tiny_sweep(corpus_file, path)
    elif kind == "lab":
        path.mkdir()
        (path / "lab.json").write_text(json.dumps({"config": {}, "steps": {}, "stages": []}))
    elif kind == "file":
        path = tmp_path / "prefs.jsonl"
    holder.hold("file" if kind == "file" else "dir", path)
    before = digest(tmp_path)
    subst = {"P": str(path), "RUN": str(trained_run), "CORPUS": str(corpus_file)}
    capsys.readouterr()
    err = user_error(capsys, [subst.get(a, a) for a in argv])
    assert f"pid {holder.pid})" in err
    assert digest(tmp_path) == before


PAUSED = """
import sys, time
from pathlib import Path
import lmlab.train.pretrain as P
from lmlab.cli import main

go, real, calls = Path(sys.argv[1]), P.next_token_loss, [0]

def paused(model, batch):  # step 3 waits for the test: the race is certain, not timed
    calls[0] += 1
    if calls[0] == 3:
        (go.parent / "waiting").touch()
        while not go.exists():
            time.sleep(0.05)
    return real(model, batch)

P.next_token_loss = paused
sys.exit(main(sys.argv[2:]))
"""


def test_two_pretrain_processes_on_one_folder(corpus_file: Path, tmp_path: Path) -> None:
    """While the first trains, a second fresh start and a resume of the same folder are each
    one error naming the first's pid and change nothing; the first finishes with its own
    settings, every metrics row once, and no lock left behind."""
    out = tmp_path / "run"
    argv = pretrain_argv(corpus_file, out, 6, "--train.seed", "1")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSED, str(tmp_path / "go"), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "waiting").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        before = digest(out)
        second = lmlab(*pretrain_argv(corpus_file, out, 4, "--train.seed", "2"))
        resumed = lmlab("pretrain", "--resume", str(out), "--quiet")
        for proc in (second, resumed):
            assert f"pid {first.pid})" in one_error_line(proc)
        assert digest(out) == before
        (tmp_path / "go").touch()
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err[-2000:]
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    _, _, cfg = load_run(out)
    assert cfg.train.seed == 1 and cfg.train.max_steps == 6
    record = read_stage(out)
    assert record is not None and record["status"] == "done"
    assert not (out / LOCK_FILE).exists()


def test_a_file_lock_is_beside_the_file_and_gone_after(tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    with lock_file(out):
        assert (tmp_path / ".labels.jsonl.lock").is_file()
    assert list(tmp_path.iterdir()) == []
