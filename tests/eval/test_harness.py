"""The eval harness: scoring through a stub engine, the real engine end to end, `lmlab eval`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.data import world
from lmlab.data.tokenizer import Tokenizer
from lmlab.data.world.countdown import solve
from lmlab.eval.harness import evaluate, plain_gold, plain_prompt, print_table, score
from lmlab.model.load import load_run
from lmlab.model.transformer import FlopModel


@dataclass
class _Completion:
    text: str
    token_ids: list[int]
    finish_reason: str = "stop"


class _OracleEngine:
    """Answers every prompt with the gold reply of the problem it was built from (or a fixed
    wrong one), to check the harness's bookkeeping without a trained model."""

    def __init__(self, tok: Tokenizer, replies: dict[tuple[int, ...], str]) -> None:
        self.tok, self.replies = tok, replies
        self.calls: list[int] = []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        assert params.temperature == 0
        texts = [self.replies.get(tuple(p), "wrong") for p in prompts]
        return [[_Completion(t, [*self.tok.encode(t), self.tok.end_id])] for t in texts]


def _oracle(tok, spec: str, n: int, cot: bool, corrupt: bool = False) -> _OracleEngine:
    name, knobs = world.parse_task(spec)
    replies = {}
    for p in world.generate(name, n, seed=0, split="test", **knobs):
        reply = world.response(p, cot)
        replies[tuple(world.prompt_ids(tok, p, cot))] = reply + ("1" if corrupt else "")
    return _OracleEngine(tok, replies)


@pytest.mark.parametrize("strategy", ["direct", "cot"])
def test_perfect_answers_score_one(tiny_run: Path, strategy: str) -> None:
    model, tok, _ = load_run(tiny_run)
    engine = _oracle(tok, "arith:2", 10, strategy == "cot")
    report = evaluate(model, tok, ["arith:2"], strategy, n=10, batch_size=4, engine=engine)
    r = report["tasks"]["arith:2"]
    assert r["accuracy"] == r["exact_match"] == r["char_accuracy"] == 1.0
    assert r["edit_distance"] == 0.0
    assert engine.calls == [4, 4, 2]
    if strategy == "direct":  # (worked solutions do not fit this model's 64-token context)
        assert r["gold_logprob"] < 0 and r["gold_logprob_per_token"] < 0
    json.dumps(report)


def test_corrupted_answers_get_partial_credit(tiny_run: Path) -> None:
    model, tok, _ = load_run(tiny_run)
    engine = _oracle(tok, "strings:5:op=reverse", 8, False, corrupt=True)
    report = evaluate(model, tok, ["strings:5:op=reverse"], "direct", n=8, engine=engine)
    r = report["tasks"]["strings:5:op=reverse"]
    assert r["accuracy"] == r["exact_match"] == 0.0
    assert r["char_accuracy"] == pytest.approx(5 / 6)
    assert r["edit_distance"] == pytest.approx(1 / 6)


def test_score_uses_the_verifier_for_countdown() -> None:
    p = world.generate("countdown", 1, seed=3, numbers=3)[0]
    other = solve(p.data["numbers"], p.data["target"])
    assert other is not None
    row = score(p, f"Some work\nAnswer: {other.replace(' ', '')}")
    assert row["correct"] == 1.0
    a, b, c = p.data["numbers"]
    assert score(p, f"Answer: {a} + {b} + {c} + 1")["correct"] == 0.0


def test_real_engine_end_to_end(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, tok, _ = load_run(tiny_run)
    tasks = ["arith:1", "strings:2:op=upper", "arith:1:op=add"]  # short enough for 64 tokens
    report = evaluate(model, tok, tasks, "direct", n=3, seed=1, max_new_tokens=4, batch_size=2)
    assert list(report["tasks"]) == tasks
    for r in report["tasks"].values():
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["char_accuracy"] <= 1
        assert len(r["examples"]) == 3
    again = evaluate(model, tok, tasks, "direct", n=3, seed=1, max_new_tokens=4, batch_size=2)
    strip = lambda rep: {k: {**v, "examples": v["examples"]} for k, v in rep["tasks"].items()}  # noqa: E731
    assert strip(report) == strip(again)  # greedy and seeded: reproducible
    print_table(report)
    assert "arith:1" in capsys.readouterr().out


def test_bad_inputs(tiny_run: Path) -> None:
    model, tok, _ = load_run(tiny_run)
    with pytest.raises(ValueError, match="unknown task 'calculus'"):
        evaluate(model, tok, ["arith", "calculus"], engine=object())
    with pytest.raises(ValueError, match="unknown strategy 'tot'"):
        evaluate(model, tok, ["arith"], "tot", engine=object())
    with pytest.raises(ValueError, match=r"digits must be in 1\.\.12"):
        evaluate(model, tok, ["arith:99"], engine=object())
    with pytest.raises(ValueError, match="leave no room to answer"):
        evaluate(model, tok, ["icl:k=16:rule=cipher"], n=2, engine=object())


def test_cli_eval(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval.json"
    argv = [
        "eval",
        str(tiny_run),
        "--tasks",
        "arith:1,strings:2:op=reverse",
        "--n",
        "2",
        "--out",
        str(out),
    ]
    assert main([*argv, "--max-new-tokens", "3"]) == 0
    report = json.loads(out.read_text())
    assert set(report["tasks"]) == {"arith:1", "strings:2:op=reverse"} and report["n"] == 2
    assert main(["eval", str(tiny_run), "--tasks", "arith:0"]) == 2
    assert "digits must be in 1..12" in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--tasks", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_cli_eval_compiled_gives_the_eager_report(tiny_run: Path, tmp_path: Path) -> None:
    argv = ["eval", str(tiny_run), "--tasks", "arith:1,strings:2:op=reverse", "--n", "4"]
    argv += ["--max-new-tokens", "6"]
    reports = []
    for extra, name in (([], "eager.json"), (["--compile"], "compiled.json")):
        assert main([*argv, *extra, "--out", str(tmp_path / name)]) == 0
        reports.append(json.loads((tmp_path / name).read_text()))
    for r in reports:
        r.pop("seconds")
    assert reports[0] == reports[1]  # same greedy outputs, so the same metrics and examples
    assert main([*argv, "--compile", "--judge", "world", "--baseline", str(tiny_run)]) == 2


@pytest.mark.parametrize("cot", [False, True])
def test_plain_prompt_and_gold_are_a_pretraining_document(tiny_run: Path, cot: bool) -> None:
    """A base model is asked in the pretraining corpus's own words: the prompt and the gold
    continuation together are exactly how the world corpus writes the problem as a document."""
    _, tok, _ = load_run(tiny_run)
    p = world.generate("arith", 1, seed=2, split="test", digits=2)[0]
    shots = [7, 8, 9]
    ids = plain_prompt(tok, p, cot, shots)
    assert ids[:3] == shots and ids[3] == tok.bos_id
    assert tok.decode(ids[4:]) + plain_gold(p, cot) == world.render(p, cot)


def test_plain_style_counts_tokens_and_flops(tiny_run: Path) -> None:
    """The report counts what the engine prefilled and generated, and their forward FLOPs."""
    model, tok, _ = load_run(tiny_run)
    report = evaluate(model, tok, ["arith:1"], "direct", n=3, seed=1, max_new_tokens=4,
                      style="plain", shots=1)  # fmt: skip
    r = report["tasks"]["arith:1"]
    problems = world.generate("arith", 3, seed=1, split="test", digits=1)
    assert r["style"] == "plain" and report["style"] == "plain"
    prompts = [len(plain_prompt(tok, p, False, [])) for p in problems]  # shots overflow 64
    assert r["prompt_tokens"] == sum(prompts)
    assert 3 <= r["generated_tokens"] <= 12
    fm = FlopModel.of(model)
    assert r["flops"] >= sum(fm.request(n, [1]) for n in prompts)
    with pytest.raises(ValueError, match="unknown prompt style"):
        evaluate(model, tok, ["arith:1"], n=1, style="fancy")
