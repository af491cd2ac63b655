"""Tests for lmlab.eval.annotate: pairs labelled by a judge (the world's gold annotator or an
injected one), and a person's session, whose labels survive a kill and which resumes."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmlab.data import world
from lmlab.data.prefs import read_prefs
from lmlab.eval.annotate import generate_prefs, label_pairs

ROOT = Path(__file__).resolve().parents[2]


def _start(run: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmlab",
            "label",
            str(run),
            "--out",
            str(out),
            "--n",
            "3",
            "--tasks",
            "arith:1",
            "--max-new-tokens",
            "12",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_label_survives_kill_and_resumes(chat_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    proc = _start(chat_run, out)
    assert proc.stdin is not None
    proc.stdin.write("a\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no label written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_prefs(out)
    assert len(first) == 1 and first[0].meta["source"] == "human"

    proc = _start(chat_run, out)
    _, err = proc.communicate("b\nb\nb\n", timeout=300)
    assert proc.returncode == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0] == json.loads(out.read_text().splitlines()[0])
    assert len({r["id"] for r in rows}) == len(rows) >= 2  # the first prompt was not asked again
    assert len(read_prefs(out)) == len(rows)


def test_label_pairs_chooses_higher_gold_and_noise_flips() -> None:
    p = world.generate("arith", 1, seed=3, digits=2, op="add")[0]
    responses = [f"Answer: {p.answer}", "Answer: -1", "no idea"]
    pairs = label_pairs(p, "q", responses, random.Random(0), noise=0.0)
    assert pairs and all(x.chosen == responses[0] for x in pairs)
    flipped = label_pairs(p, "q", responses, random.Random(0), noise=0.4999)
    noisy = [label_pairs(p, "q", responses, random.Random(s), noise=0.3) for s in range(200)]
    rate = sum(x.meta["flipped"] for ps in noisy for x in ps) / sum(len(ps) for ps in noisy)
    assert 0.2 < rate < 0.4
    assert all(x.meta["source"] == "world" for x in flipped)


def test_label_pairs_margin_drops_near_ties() -> None:
    p = world.generate("arith", 1, seed=3, digits=2, op="add")[0]
    # two wrong answers 8 characters apart differ by 0.004 in gold: a tie at margin 0.02
    near = ["Answer: -1", "Answer: -1 or -2"]
    assert len(label_pairs(p, "q", near, random.Random(0))) == 1
    assert label_pairs(p, "q", near, random.Random(0), margin=0.02) == []
    far = [f"Answer: {p.answer}", *near]  # the right answer wins by more than 1
    pairs = label_pairs(p, "q", far, random.Random(0), margin=0.02)
    assert len(pairs) == 2 and all(x.chosen == far[0] for x in pairs)
    assert all(x.meta["gold_chosen"] - x.meta["gold_rejected"] >= 0.02 for x in pairs)


def test_label_pairs_with_an_injected_judge() -> None:
    p = world.generate("arith", 1, seed=3, digits=2, op="add")[0]
    right, wrong = f"Answer: {p.answer}", "Answer: -1"
    # a judge that prefers the wrong answer, which the world's gold annotator never does
    pairs = label_pairs(p, "q", [right, wrong], random.Random(0), judge=lambda _, r: r.count("-"))
    assert [(x.chosen, x.rejected) for x in pairs] == [(wrong, right)]
    assert (pairs[0].meta["gold_chosen"], pairs[0].meta["gold_rejected"]) == (1, 0)
    assert [x.chosen for x in label_pairs(p, "q", [right, wrong], random.Random(0))] == [right]


def test_generate_prefs_labels_with_the_judge_it_is_given(chat_run: Path, tmp_path: Path) -> None:
    def judge(problem: world.Problem, response: str) -> float:
        return float(len(response))  # the longer response wins

    out = tmp_path / "prefs.jsonl"
    summary = generate_prefs(
        chat_run, ["arith:1"], 4, 3, out, max_new_tokens=8, show_progress=False, judge=judge
    )
    pairs = read_prefs(out)
    assert summary["pairs"] == len(pairs) > 0
    for x in pairs:
        assert x.meta["gold_chosen"] == len(x.chosen) > len(x.rejected) == x.meta["gold_rejected"]
