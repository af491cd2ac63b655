"""benchmarks/speedrun.py: the --quick path runs end to end and prints the JSON record; every
recipe keeps the test split's phrasings out of everything it trains on."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lmlab.data import world
from lmlab.data.world import arith, chain, countdown, icl, strings
from lmlab.data.world.base import split_templates

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "speedrun.py"


@functools.cache
def _load() -> ModuleType:
    """The benchmark script as a module (registered first: its dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location("speedrun_benchmark", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_the_record(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("minutes_to_add3", "minutes_to_strings", "minutes_to_icl8"):
        assert record[key] is None or isinstance(record[key], float)
    for key in ("minutes_total", "minutes_pretrain", "minutes_eval", "add3", "strings"):
        assert isinstance(record[key], float | int)
    for key in ("icl8", "icl0", "pretrain_tokens_per_s", "sft_tokens_per_s"):
        assert isinstance(record[key], float | int)
    assert 0 <= record["add3"] <= 1 and record["threads"] == 1 and record["quick"] is True
    assert isinstance(record["forgetting"], float) and isinstance(record["forgetting_ok"], bool)
    assert record["curve"] and {"step", "minutes", "add3", "strings", "icl8"} <= set(
        record["curve"][-1]
    )
    assert (tmp_path / "recipe.json").is_file()


HELD_OUT = [
    *split_templates(arith.TEMPLATES)["test"],
    *split_templates(chain.QUESTIONS)["test"],
    *split_templates(countdown.TEMPLATES)["test"],
    *(t for ts in strings.TEMPLATES.values() for t in split_templates(ts)["test"]),
    *split_templates(icl.HEADERS)["test"],
]


def _pattern(template: str) -> re.Pattern[str]:
    """A held-out template as a regex over one line (its placeholders match any text)."""
    parts = re.split(r"\{[a-z]+\}", template)
    return re.compile(r"[^\n]*?".join(re.escape(p) for p in parts))


@pytest.mark.parametrize("name", sorted(_load().RECIPES))
def test_recipes_never_train_on_held_out_phrasings(name: str) -> None:
    bench = _load()
    texts = bench.training_texts(bench.RECIPES[name](), docs=3000, chats=1500)
    assert len(texts) > 4000
    patterns = [_pattern(t) for t in HELD_OUT]
    for text in texts:
        for template, pattern in zip(HELD_OUT, patterns, strict=True):
            assert not pattern.search(text), (template, text[:200])
    # the check itself finds held-out phrasings where they are
    for task in ("arith", "strings", "icl"):
        asked = world.generate(task, 20, seed=1, split="test")
        assert all(any(p.search(q.question) for p in patterns) for q in asked)
