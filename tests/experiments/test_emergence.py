"""The emergence study: ladder settings, sharpness, summary and plots, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.experiments.config import EmergenceError, LadderConfig
from lmlab.experiments.emergence import plot, run_ladder, sharpness, summarize


def test_sharpness_separates_a_jump_from_a_ramp() -> None:
    assert sharpness([0.0, 0.0, 0.0, 1.0]) == pytest.approx(1.0)  # all at once: abrupt
    assert sharpness([0.0, 1 / 3, 2 / 3, 1.0]) == pytest.approx(1 / 3)  # even steps
    assert math.isnan(sharpness([0.5, 0.5, 0.5]))
    assert math.isnan(sharpness([1.0]))


def _rows() -> list[dict]:
    rows = []
    for i, (size, params) in enumerate([("nano", 1e5), ("micro", 3e5), ("tiny", 1e6)]):
        rows.append(
            {
                "size": size,
                "params": params,
                "train_flops": params * 1e7,
                "ability": "arithmetic",
                "spec": "arith:3",
                "exact_match": [0.0, 0.0, 0.6][i],
                "char_accuracy": [0.3, 0.55, 0.85][i],
                "edit_similarity": [0.3, 0.5, 0.8][i],
                "gold_logprob_per_token": [-2.0, -1.4, -0.8][i],
            }
        )
    return rows


def test_summary_shows_exact_match_abrupt_and_per_digit_smooth(tmp_path: Path) -> None:
    [entry] = summarize(_rows(), ["nano", "micro", "tiny"])
    assert entry["exact_match"] == [0.0, 0.0, 0.6]
    assert entry["exact_match_sharpness"] == pytest.approx(1.0)
    assert entry["char_accuracy_sharpness"] == pytest.approx(0.3 / 0.55)
    [png] = plot(_rows(), tmp_path)
    assert png.name == "emergence_arithmetic.png" and png.stat().st_size > 1000


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"ladder": "nano"}, "at least 2"),
        ({"ladder": "nano,huge"}, "unknown size"),
        ({"abilities": "poetry"}, "unknown ability"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_ladders(kw: dict, match: str) -> None:
    with pytest.raises(EmergenceError, match=match):
        LadderConfig(**kw).validate()


def test_cli_bad_ladder_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["emergence", "--out", str(tmp_path), "--ladder", "nano,giant"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown size 'giant'")


@pytest.mark.slow
def test_tiny_ladder_end_to_end_and_reuse(tmp_path: Path) -> None:
    cfg = LadderConfig(
        ladder="nano,micro",
        corpus="world:n=2000",
        steps=2,
        sft_steps=2,
        n_world=60,
        abilities="arithmetic",
        n=2,
    )
    result = run_ladder(cfg, tmp_path, report=lambda *_: None)
    assert [r["size"] for r in result["rows"]] == ["nano"] * 4 + ["micro"] * 4
    assert result["rows"][0]["params"] < result["rows"][-1]["params"]
    assert (tmp_path / "emergence_arithmetic.png").is_file()
    saved = json.loads((tmp_path / "emergence.json").read_text())
    assert len(saved["summary"]) == 4
    again = run_ladder(cfg, tmp_path, report=lambda *_: None)  # everything reused
    assert again["rows"] == result["rows"]
