"""`lmlab run` end to end on the tiny preset: every stage, the report card (rebuilt identically,
rendered in a real browser), resume after kills at several moments, and bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from lmlab.cli import main
from lmlab.config import RunConfig
from lmlab.lab.config import preset
from lmlab.lab.pipeline import LAB_FILE, run_lab
from lmlab.lab.report import rebuild
from lmlab.lab.steps import STEP_NAMES, corpus_val_loss
from lmlab.model.load import load_run
from tests.conftest import run_killed, tiny_plan_config, user_error

TIMING = re.compile(r"\d+:\d\d(:\d\d)?|[\d,.]+ tokens/s")
TIMING_KEYS = ("seconds", "finished", "tokens_per_s", "steps_per_s", "time_")


def _figures(root: Path) -> dict[str, Any]:
    """What a lab run measured: every step's summary without wall times, speeds and its own
    folder's name."""

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not k.startswith(TIMING_KEYS)}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x.replace(str(root), "LAB") if isinstance(x, str) else x

    record = json.loads((root / LAB_FILE).read_text())
    return {name: strip(s["summary"]) for name, s in record["steps"].items()}


def _card(root: Path) -> str:
    """report.md with the wall times and speeds masked."""
    return TIMING.sub("T", (root / "report.md").read_text())


@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    out = tmp_path_factory.mktemp("lab") / "tiny"
    run_lab(out, preset("tiny"), show_progress=False, say=lambda _: None)
    return out


def test_every_stage_runs_and_reports(tiny_lab: Path) -> None:
    record = json.loads((tiny_lab / LAB_FILE).read_text())
    assert record["stages"] == [s for s in STEP_NAMES if s != "scaling"]
    assert all(record["steps"][s]["status"] == "done" for s in record["stages"])
    card = (tiny_lab / "report.md").read_text()
    for heading in ("Summary", "Pretraining", "Supervised fine-tuning", "PPO", "GRPO",
                    "Evaluation", "Reasoning at inference", "Compute ledger"):  # fmt: skip
        assert f"## {heading}" in card
    # every figure of the summary table is read from the eval step's results
    evaluation = json.loads((tiny_lab / "eval" / "eval.json").read_text())
    # every model's validation loss is over the pretraining run's own evaluation windows
    base = record["steps"]["pretrain"]["summary"]["val_loss"]
    assert evaluation["models"]["pretrain"]["val_loss"] == pytest.approx(base, rel=1e-6)
    base_cfg = RunConfig.load(tiny_lab / "pretrain" / "config.json")
    ppo_model, tok, _ = load_run(tiny_lab / "ppo")
    want = corpus_val_loss(ppo_model, tok, base_cfg, preset("tiny").eval.val_iters)
    assert evaluation["models"]["ppo"]["val_loss"] == pytest.approx(want, rel=1e-6)
    sft_loss = evaluation["models"]["sft"]["val_loss"]
    assert f"| pretraining val loss | {evaluation['models']['pretrain']['val_loss']:.4g}" in card
    assert f"{sft_loss:.4g}" in card
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", card):
        assert (tiny_lab / image).is_file()


def test_report_rebuilds_identically(tiny_lab: Path, tmp_path: Path) -> None:
    before = {p: (tiny_lab / p).read_bytes() for p in ("report.md", "report.html")}
    rebuild(tiny_lab)
    assert {p: (tiny_lab / p).read_bytes() for p in before} == before
    assert main(["report", str(tiny_lab)]) == 0
    assert (tiny_lab / "report.html").read_bytes() == before["report.html"]


def test_report_page_renders_in_a_browser(tiny_lab: Path, browser: Any) -> None:
    """The self-contained page loads from disk with every plot decoded and nothing logged to
    the console (no missing resource, no network)."""
    browser.get((tiny_lab / "report.html").as_uri())
    assert browser.find_element("tag name", "h1").text.startswith("lmlab report card")
    images = browser.find_elements("tag name", "img")
    assert len(images) >= 4
    widths = [browser.execute_script("return arguments[0].naturalWidth", img) for img in images]
    assert all(w > 0 for w in widths)
    assert browser.get_log("browser") == []


@pytest.mark.slow
def test_killed_anywhere_resumes_to_the_same_figures(tiny_lab: Path, tmp_path: Path) -> None:
    """SIGKILL inside pretraining, then inside SFT on the resume, then inside evaluation, then
    while the report is written: each `--resume` continues, and the end is the run above."""
    out = tmp_path / "killed"
    start = f"run_lab(Path({str(out)!r}), preset('tiny'), show_progress=False)"
    again = f"run_lab(Path({str(out)!r}), resume=True, show_progress=False)"
    head = "from pathlib import Path; from lmlab.lab.config import preset;"
    head += "from lmlab.lab.pipeline import run_lab;"
    run_killed("lmlab.train.pretrain", "next_token_loss", 9, head + start)
    run_killed("lmlab.train.sft", "masked_loss", 4, head + again)
    run_killed("lmlab.lab.steps", "evaluate", 3, head + again)
    run_killed("lmlab.lab.report", "to_html", 1, head + again)
    run_lab(out, resume=True, show_progress=False, say=lambda _: None)
    assert _figures(out) == _figures(tiny_lab)
    assert _card(out).replace(str(out), "") == _card(tiny_lab).replace(str(tiny_lab), "")


def test_a_subset_of_stages_then_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub"
    argv = [
        "run",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--stages",
        "pretrain,sft,eval",
        "--quiet",
    ]
    assert main(argv) == 0
    record = json.loads((out / LAB_FILE).read_text())
    assert (
        record["stages"] == ["pretrain", "sft", "eval"]
        and "## Summary" in (out / "report.md").read_text()
    )
    capsys.readouterr()
    # rm needs prefs, which this run does not have
    assert "rm needs prefs" in user_error(capsys, ["run", "--resume", str(out), "--stages", "rm"])
    assert main(["run", "--resume", str(out), "--stages", "prefs,rm", "--quiet"]) == 0
    assert json.loads((out / LAB_FILE).read_text())["steps"]["rm"]["status"] == "done"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--stages", "pretrain,bogus"], "unknown stage 'bogus'"),
        (["--stages", "sft,pretrain"], "stages out of order"),
        (["--stages", "sft"], "stage sft needs pretrain first"),
        (["--stages", "pretrain,pretrain"], "named twice"),
    ],
)
def test_bad_stage_lists_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lab"
    err = user_error(capsys, ["run", "--preset", "tiny", "--out", str(out), *argv])
    assert message in err
    assert not out.exists()


def test_an_occupied_or_damaged_out_is_refused_and_left_alone(
    tiny_lab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert "not an empty folder" in user_error(
        capsys, ["run", "--preset", "tiny", "--out", str(other)]
    )
    assert "is not a lab run" in user_error(capsys, ["run", "--resume", str(other)])
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    assert "already holds a lab run" in user_error(
        capsys, ["run", "--preset", "tiny", "--out", str(tiny_lab)]
    )
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_lab, damaged)
    (damaged / "lab.json").write_text("{not json")
    assert "is damaged" in user_error(capsys, ["run", "--resume", str(damaged)])
    assert (damaged / "lab.json").read_text() == "{not json"


def test_a_damaged_stage_folder_is_one_line_on_resume(
    tiny_lab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = tmp_path / "cut"
    shutil.copytree(tiny_lab, lab)
    record = json.loads((lab / LAB_FILE).read_text())
    del record["steps"]["sft"]  # as if killed during SFT
    (lab / LAB_FILE).write_text(json.dumps(record))
    (lab / "sft" / "stage.json").write_text("{half a rec")
    assert "the run is damaged" in user_error(capsys, ["run", "--resume", str(lab)])
    assert (lab / "sft" / "stage.json").read_text() == "{half a rec"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # a 6-run sweep's fit is degenerate
def test_the_scaling_stage_fits_and_reports(corpus_file: Path, tmp_path: Path) -> None:
    """A tiny sweep through the lab: trained, fitted, the inference-aware optimum reported."""
    cfg = preset("tiny")
    cfg.scaling = tiny_plan_config(corpus_file)
    out = tmp_path / "lab"
    run_lab(out, cfg, stages=["scaling"], show_progress=False, say=lambda _: None)
    summary = json.loads((out / LAB_FILE).read_text())["steps"]["scaling"]["summary"]
    assert summary["points"] == 6
    assert summary["prediction"]["budget"] > 0
    card = (out / "report.md").read_text()
    assert "## Scaling laws" in card and "6 runs" in card
