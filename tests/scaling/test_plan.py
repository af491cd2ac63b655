"""Tests for lmlab.scaling.plan: ladders, budgets within 5%, per-run schedules, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.config import RunConfig
from lmlab.data.tokenizer import char_tokenizer
from lmlab.model.transformer import flops_per_token, param_counts
from lmlab.scaling.config import PlanConfig, ScalingError
from lmlab.scaling.plan import family, make_plan, resolve_corpus, write_plan
from tests.conftest import tiny_plan_config


def test_plan_honours_budgets_and_per_run_schedules(corpus_file: Path) -> None:
    cfg = tiny_plan_config(
        corpus_file, budgets="1e9,3e9,1e10", sizes=5, min_steps=20, probe_steps=1
    )
    fingerprint = resolve_corpus(cfg)
    # The char tokenizer's vocabulary padded to 64, as the runs will have it.
    vocab = char_tokenizer([corpus_file.read_text()]).vocab_size
    assert cfg.vocab_size == -(-vocab // 64) * 64 != PlanConfig.vocab_size
    plan = make_plan(cfg, fingerprint)
    assert plan["fingerprint"] == fingerprint and len(plan["runs"]) == 15
    for budget in (1e9, 3e9, 1e10):
        runs = [r for r in plan["runs"] if r["budget"] == budget]
        assert len({r["params"] for r in runs}) == 5
        for r in runs:
            assert abs(r["flops"] / budget - 1) <= 0.05, r["name"]
            run = RunConfig.from_dict(r["config"])
            # The planner's FLOPs are the model's own accounting times the tokens trained.
            assert r["flops_per_token"] == flops_per_token(run.model)["train"]
            assert r["params"] == param_counts(run.model)["total"]
            assert r["tokens"] == run.train.max_steps * run.train.batch_size * 32
            t = run.train
            assert t.max_steps == r["steps"] >= 20 and t.schedule == "cosine"
            assert t.min_lr == pytest.approx(0.1 * t.lr)
            assert 1 <= t.warmup_steps <= max(1, round(0.05 * t.max_steps))
            assert t.beta2 == 0.99  # 64-token steps: a small batch
            assert t.ckpt_every == t.eval_every and run.data.corpus == str(corpus_file)
            assert r["est_seconds"] > 0
    # Bigger budgets move the ladder up (or keep it), never down.
    means = [sum(r["params"] for r in plan["runs"] if r["budget"] == b) for b in (1e9, 1e10)]
    assert means[1] >= means[0]


def test_count_and_flops_switches(corpus_file: Path) -> None:
    total = family(tiny_plan_config(corpus_file, vocab_size=64))
    ne = family(tiny_plan_config(corpus_file, vocab_size=64, count="non_embedding"))
    six = family(tiny_plan_config(corpus_file, vocab_size=64, flops="6N"))
    for a, b, c in zip(total, ne, six, strict=True):
        assert b.params == a.params_non_embedding < a.params == a.params_total
        assert b.flops_per_token == a.flops_per_token
        assert c.flops_per_token == 6 * c.params


def test_budget_too_small_for_smallest_shape(corpus_file: Path) -> None:
    cfg = tiny_plan_config(corpus_file, vocab_size=64, budgets="1e3", min_steps=20)
    with pytest.raises(ScalingError, match=r"budget 1e\+03 is too small for the smallest shape"):
        make_plan(cfg)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"budgets": "1e9,abc"}, "comma-separated numbers"),
        ({"budgets": "-1e9"}, "positive"),
        ({"sizes": 2}, "3 or more"),
        ({"head_dim": 7}, "even"),
    ],
)
def test_bad_settings(corpus_file: Path, kw: dict[str, object], match: str) -> None:
    with pytest.raises(ScalingError, match=match):
        make_plan(tiny_plan_config(corpus_file, vocab_size=64, **kw))


def test_sweep_dir_from_another_corpus(corpus_file: Path, tmp_path: Path) -> None:
    cfg = tiny_plan_config(corpus_file, vocab_size=64)
    write_plan(make_plan(cfg, "abc"), tmp_path / "sweep")
    other = tmp_path / "other.txt"
    other.write_text("x = 1\n" * 500)
    plan2 = make_plan(tiny_plan_config(other, vocab_size=64), "def")
    with pytest.raises(ScalingError, match="holds a sweep on corpus"):
        write_plan(plan2, tmp_path / "sweep")
    write_plan(make_plan(cfg, "abc"), tmp_path / "sweep")  # same plan again: fine
