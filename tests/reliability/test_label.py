"""`lmlab label`: a last line torn by a kill is repaired (a whole row missing its newline) or
dropped (half a row, whose prompt is then asked again) before anything is appended, so the file
stays readable by `lmlab rm`; and --out is checked before the model loads and the first
question is asked (issue 23, item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from lmlab.data.prefs import read_prefs
from lmlab.eval.annotate import label_session, repair_tail
from lmlab.runs import RunDirError

TASKS = ["arith:1"]


def _label(run: Path, out: Path, n: int) -> dict[str, int]:
    return label_session(
        run, out, n, TASKS, max_new_tokens=8, ask=lambda _: "a", console=Console(quiet=True)
    )


def _never(question: str) -> str:
    raise AssertionError("a question was asked")


def test_a_torn_last_row_is_dropped_and_its_prompt_asked_again(
    chat_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "labels.jsonl"
    _label(chat_run, out, 2)
    rows = out.read_text().splitlines()
    assert rows, "the tiny model gave no two distinct answers to label"
    torn = rows[-1][: len(rows[-1]) // 2]  # a kill in the middle of the last write
    out.write_text("".join(r + "\n" for r in rows[:-1]) + torn)
    counts = _label(chat_run, out, 2)
    assert counts["labelled"] == 1 and counts["already"] == len(rows) - 1
    pairs = read_prefs(out)  # readable by `lmlab rm`
    assert len(pairs) == len(rows)
    assert [json.loads(r)["id"] for r in out.read_text().splitlines()] == [
        json.loads(r)["id"] for r in rows
    ]


def test_a_whole_last_row_without_its_newline_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    row = {"prompt": "p", "chosen": "a", "rejected": "b", "id": "x"}
    out.write_text(json.dumps(row))
    assert repair_tail(out) == f"completed the last line of {out}"
    out.write_text(out.read_text() + json.dumps(row)[:10])
    assert repair_tail(out) is not None and repair_tail(out) is None
    assert out.read_text() == json.dumps(row) + "\n"


@pytest.mark.parametrize("kind", ["folder", "missing-parent"])
def test_out_is_checked_before_the_model_loads_or_a_question_is_asked(
    kind: str, tmp_path: Path
) -> None:
    out = {"folder": tmp_path, "missing-parent": tmp_path / "no" / "labels.jsonl"}[kind]
    with pytest.raises(RunDirError, match="cannot write"):
        # the run does not exist either: had it been loaded first, that would be the error
        label_session(tmp_path / "no-run", out, 1, TASKS, ask=_never)
