"""The steps of a lab run, in their one order: what each needs, does, writes and reports.

Every step works in its own folder under the lab run (`runs/lab/sft`, `runs/lab/eval`, ...) and
returns a summary of plain numbers, which the pipeline records in `lab.json` and the report
reads. Training steps are the stages of `lmlab.train` (each a run directory with its own
`stage.json`): after a kill, the cut one resumes from its latest checkpoint. The other steps
(tokenizer, preferences, evaluation, reasoning, scaling) are recomputed from scratch when cut:
they hold only what they derive, deterministically, from the models.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmlab.config import PPOConfig, RunConfig
from lmlab.data import world
from lmlab.data.corpora import load_corpus
from lmlab.data.shards import Batches, build_shards, get_tokenizer
from lmlab.data.tokenizer import Tokenizer
from lmlab.eval.annotate import generate_prefs
from lmlab.eval.harness import evaluate
from lmlab.eval.judge import win_rate
from lmlab.experiments.overopt import run_overopt
from lmlab.experiments.sweep import run_sweep
from lmlab.infer import Engine
from lmlab.lab.config import LabConfig
from lmlab.model.load import load_run
from lmlab.model.transformer import flops_per_token, param_counts
from lmlab.reason.compare import compare, plot
from lmlab.runs import STAGE_FILE, is_run, read_metrics, write_json
from lmlab.scaling.fit import fit_all
from lmlab.scaling.plan import make_plan, resolve_corpus, write_plan
from lmlab.scaling.plots import plot_all
from lmlab.scaling.report import predict
from lmlab.scaling.results import sweep_points
from lmlab.train import dpo, grpo, ppo, pretrain, reward, sft
from lmlab.train.pretrain import next_token_loss
from lmlab.train.stage import StageResult, finished_summary


@dataclass
class Lab:
    """A lab run in progress: its folder, its settings, how chatty to be."""

    root: Path
    cfg: LabConfig
    show_progress: bool = True

    def dir(self, step: str) -> Path:
        return self.root / step

    @property
    def tokenizer_file(self) -> Path:
        return self.dir("tokenizer") / "tokenizer.json"

    def seeded(self, base: int) -> int:
        return base + self.cfg.seed


@dataclass(frozen=True)
class Step:
    name: str
    doc: str
    requires: tuple[str, ...]
    run: Callable[[Lab], dict[str, Any]]
    enabled: Callable[[LabConfig], bool] = lambda cfg: True
    """Whether the preset includes the step (the MoE twin, GRPO and scaling are optional)."""


# --- helpers ----------------------------------------------------------------------------------


def _training(
    out: Path, start: Callable[[], StageResult], resume: Callable[[], StageResult]
) -> dict[str, Any]:
    """A training stage's summary: recorded if it finished, resumed if it was cut, else run."""
    done = finished_summary(out) if (out / STAGE_FILE).is_file() else None
    if done is not None:
        return done
    if (out / STAGE_FILE).is_file():
        return resume().summary
    return start().summary


def _fresh(path: Path) -> Path:
    """An empty folder for a derived step (what a cut attempt left is recomputed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _pretrain_config(lab: Lab) -> RunConfig:
    cfg = copy.deepcopy(lab.cfg.pretrain)
    cfg.train.seed = lab.seeded(cfg.train.seed)
    if lab.tokenizer_file.is_file():
        cfg.data.tokenizer = str(lab.tokenizer_file)
    return cfg


@torch.no_grad()
def corpus_val_loss(model: nn.Module, tok: Tokenizer, base: RunConfig, iters: int) -> float:
    """Mean next-token loss of `model` on the validation split of the pretraining corpus, over
    the windows `base` (the pretraining run's config) evaluates: the same windows for every
    model of a lab run, so their losses compare."""
    corpus = load_corpus(base.data.corpus, base.data.val_fraction, base.data.text_field)
    shards = build_shards(corpus, tok, show_progress=False)
    batches = Batches(shards.val, base.model.context_length, base.train.seed)
    model.eval()
    losses = [
        next_token_loss(model, b)[0].item()
        for b in batches.eval_batches(iters, base.train.batch_size)
    ]
    return statistics.fmean(losses)


def training_flops(run: Path) -> float:
    """Training FLOPs of a run: tokens trained (its last metrics row) times FLOPs per token
    (forward and backward: 6 N_matmul + attention)."""
    rows = [r for r in read_metrics(run) if "tokens" in r]
    if not rows or not is_run(run):
        return 0.0
    cfg = RunConfig.load(run / "config.json")
    return float(rows[-1]["tokens"]) * flops_per_token(cfg.model)["train"]


# --- the steps --------------------------------------------------------------------------------


def tokenizer_step(lab: Lab) -> dict[str, Any]:
    cfg = copy.deepcopy(lab.cfg.pretrain)
    corpus = load_corpus(cfg.data.corpus, cfg.data.val_fraction, cfg.data.text_field)
    tok = get_tokenizer(cfg, corpus)
    out = _fresh(lab.dir("tokenizer"))
    tok.save(out / "tokenizer.json")
    sample = corpus.val[:200]
    chars = sum(map(len, sample))
    tokens = sum(len(tok.encode(d)) for d in sample)
    return {
        "kind": cfg.data.tokenizer,
        "vocab_size": tok.vocab_size,
        "corpus": cfg.data.corpus,
        "train_documents": len(corpus.train),
        "val_documents": len(corpus.val),
        "chars_per_token": chars / max(tokens, 1),
    }


def pretrain_step(lab: Lab) -> dict[str, Any]:
    out = lab.dir("pretrain")
    show = lab.show_progress
    return _training(
        out,
        lambda: pretrain.pretrain(_pretrain_config(lab), out, show_progress=show),
        lambda: pretrain.resume(out, show_progress=show),
    )


def moe_step(lab: Lab) -> dict[str, Any]:
    """The MoE twin: the same shape and the same tokens (data, seed, steps), its dense FFNs
    replaced by experts whose active parameters match them."""
    cfg = _pretrain_config(lab)
    assert lab.cfg.moe is not None
    cfg.model.moe = copy.deepcopy(lab.cfg.moe)
    out = lab.dir("moe")
    show = lab.show_progress
    return _training(
        out,
        lambda: pretrain.pretrain(cfg, out, show_progress=show),
        lambda: pretrain.resume(out, show_progress=show),
    )


def sft_step(lab: Lab) -> dict[str, Any]:
    out, show = lab.dir("sft"), lab.show_progress
    train = replace(lab.cfg.sft_train, seed=lab.seeded(lab.cfg.sft_train.seed))
    cfg = replace(lab.cfg.sft, seed=lab.seeded(lab.cfg.sft.seed))
    return _training(
        out,
        lambda: sft.sft(lab.dir("pretrain"), out, train, cfg, show_progress=show),
        lambda: sft.resume(out, show_progress=show),
    )


def prefs_step(lab: Lab) -> dict[str, Any]:
    s = lab.cfg.prefs
    out = _fresh(lab.dir("prefs"))
    summary = generate_prefs(
        lab.dir("sft"),
        s.tasks,
        s.n_prompts,
        s.k,
        out / "prefs.jsonl",
        s.noise,
        lab.seeded(0),
        max_new_tokens=s.max_new_tokens,
        margin=s.margin,
        show_progress=lab.show_progress,
    )
    summary.pop("out", None)
    return summary


def rm_step(lab: Lab) -> dict[str, Any]:
    out, show = lab.dir("rm"), lab.show_progress
    train = replace(lab.cfg.rm_train, seed=lab.seeded(lab.cfg.rm_train.seed))
    data = lab.dir("prefs") / "prefs.jsonl"
    return _training(
        out,
        lambda: reward.train_reward_model(lab.dir("sft"), data, out, train, show_progress=show),
        lambda: reward.resume(out, show_progress=show),
    )


def ppo_step(lab: Lab) -> dict[str, Any]:
    out, show = lab.dir("ppo"), lab.show_progress
    train = replace(lab.cfg.ppo_train, seed=lab.seeded(lab.cfg.ppo_train.seed))
    return _training(
        out,
        lambda: ppo.train_ppo(lab.dir("sft"), lab.dir("rm"), out, train, lab.cfg.ppo, show),
        lambda: ppo.resume(out, show_progress=show),
    )


def dpo_step(lab: Lab) -> dict[str, Any]:
    out, show = lab.dir("dpo"), lab.show_progress
    assert lab.cfg.dpo_train is not None
    train = replace(lab.cfg.dpo_train, seed=lab.seeded(lab.cfg.dpo_train.seed))
    data = lab.dir("prefs") / "prefs.jsonl"
    return _training(
        out,
        lambda: dpo.train_dpo(lab.dir("sft"), data, out, train, lab.cfg.dpo_beta, show),
        lambda: dpo.resume(out, show_progress=show),
    )


def grpo_step(lab: Lab) -> dict[str, Any]:
    assert lab.cfg.grpo is not None
    out, show, cfg = lab.dir("grpo"), lab.show_progress, lab.cfg.grpo
    train = replace(lab.cfg.grpo_train, seed=lab.seeded(lab.cfg.grpo_train.seed))
    return _training(
        out,
        lambda: grpo.train_grpo(lab.dir("sft"), out, train, cfg, show_progress=show),
        lambda: grpo.resume(out, show_progress=show),
    )


def overopt_step(lab: Lab) -> dict[str, Any]:
    """Reward over-optimisation on the SFT model (recomputed from scratch if cut)."""
    s = lab.cfg.overopt
    assert s is not None
    out = _fresh(lab.dir("overopt"))
    ppo_cfg = PPOConfig(
        tasks=list(s.tasks), iterations=s.iterations, kl_beta=0.0, max_new_tokens=s.max_new_tokens
    )
    summary = run_overopt(
        lab.dir("sft"),
        out,
        list(s.tasks),
        s.n_pref_prompts,
        s.noise,
        ppo=ppo_cfg,
        bon_prompts=s.bon_prompts,
        bon_max=s.bon_max,
        seed=lab.seeded(0),
        show_progress=lab.show_progress,
    )
    return {k: v for k, v in summary.items() if not k.startswith("samples")}


CHAT_MODELS = ("sft", "ppo", "dpo", "grpo")
"""The steps whose models answer in the chat format (the others are base models)."""


def eval_step(lab: Lab) -> dict[str, Any]:
    """Every model of the run on one suite: the pretraining corpus's validation loss, each task
    directly and step by step, and in-context learning by number of examples — chat models
    asked in the chat format, base models in their pretraining documents' format after
    `base_shots` solved examples; and the RL models' gold-judged win rates over SFT."""
    s = lab.cfg.eval
    out = _fresh(lab.dir("eval"))
    models = [m for m in ("pretrain", "moe", *CHAT_MODELS) if finished_summary_of(lab, m)]
    report: dict[str, Any] = {"models": {}}
    seed = lab.seeded(0)
    base = RunConfig.load(lab.dir("pretrain") / "config.json")
    for name in models:
        model, tok, cfg = load_run(lab.dir(name))
        row: dict[str, Any] = {"val_loss": corpus_val_loss(model, tok, base, s.val_iters)}
        row["params"] = param_counts(cfg.model)["total"]
        engine = Engine(model, tok, max_batch=32)
        style, shots = ("chat", 0) if name in CHAT_MODELS else ("plain", s.base_shots)
        flops = 0.0
        icl = [f"icl:k={k}" for k in s.icl_shots]
        for key, tasks, strategy in (("direct", s.tasks, "direct"), ("cot", s.tasks, "cot"),
                                     ("icl", icl, "direct")):  # fmt: skip
            r = evaluate(model, tok, tasks, strategy, s.n, seed, engine=engine, style=style,
                         shots=shots)  # fmt: skip
            row[key] = _task_scores(r)
            flops += sum(t["flops"] for t in r["tasks"].values())
        row["style"], row["eval_flops"] = style, flops
        report["models"][name] = row
    for name in ("ppo", "dpo", "grpo"):
        if name in models and "sft" in models:
            w = win_rate(
                lab.dir(name),
                lab.dir("sft"),
                s.judge_tasks,
                s.judge_n,
                seed,
                max_new_tokens=s.judge_max_new_tokens,
            )
            report.setdefault("win_rates", {})[name] = {
                k: w[k]
                for k in ("win_rate", "ci95", "wins", "ties", "losses", "at_margin")
                if k in w
            }
    write_json(out / "eval.json", report)
    return report


def finished_summary_of(lab: Lab, step: str) -> bool:
    out = lab.dir(step)
    return (out / STAGE_FILE).is_file() and finished_summary(out) is not None


def _task_scores(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    keep = ("accuracy", "exact_match", "char_accuracy", "gold_logprob_per_token", "cut_off")
    return {spec: {k: r[k] for k in keep} for spec, r in report["tasks"].items()}


def reason_step(lab: Lab) -> dict[str, Any]:
    """Reasoning strategies on held-out problems with the SFT model: accuracy against the
    compute (FLOPs per question, prefill included) each spends; one table and plot per
    comparison of the preset."""
    out = _fresh(lab.dir("reason"))
    engine = Engine.from_checkpoint(lab.dir("sft"), max_batch=64)
    comparisons = []
    for i, s in enumerate(lab.cfg.reason):
        name, knobs = world.parse_task(s.task)
        problems = world.generate(name, s.n, seed=lab.seeded(0), split="test", **knobs)
        settings: dict[str, Any] = {"task": s.task, "seed": lab.seeded(0)}
        if s.evaluator is not None:
            settings["evaluator"] = s.evaluator
        rows = compare(engine, problems, s.strategies, settings)
        plot_file = f"accuracy_vs_compute_{i}.png"
        plot(rows, out / plot_file, f"{s.task}, n = {s.n} (held-out)")
        comparisons.append({"task": s.task, "n": s.n, "rows": rows, "plot": plot_file})
    summary = {"comparisons": comparisons}
    write_json(out / "reason.json", summary)
    return summary


def scaling_step(lab: Lab) -> dict[str, Any]:
    """A small sweep, the Chinchilla fits, and the inference-aware optimum for the preset's
    model at its training compute and the inference tokens this run spent."""
    assert lab.cfg.scaling is not None
    plan_cfg = copy.deepcopy(lab.cfg.scaling)
    out = lab.dir("scaling")
    if not (out / "plan.json").is_file():
        _fresh(out)
        write_plan(make_plan(plan_cfg, resolve_corpus(plan_cfg)), out)
    run_sweep(out, workers=1, report=lambda _: None)
    pts = sweep_points(out)
    fits = fit_all(pts, n_bootstrap=100)
    budget = training_flops(lab.dir("pretrain")) or max(pts.flops)
    (out / "plots").mkdir(exist_ok=True)
    plot_all(pts, fits, out / "plots", budget)
    prediction = predict(fits, budget, inference_tokens=_inference_tokens(lab))
    summary = {"points": len(pts.run), "prediction": prediction}
    write_json(out / "scaling.json", summary)
    return summary


def _inference_tokens(lab: Lab) -> float:
    """Tokens the run's reasoning step processed per question, times its questions (what a
    deployment of the preset's model would serve, at this run's scale)."""
    path = lab.dir("reason") / "reason.json"
    if not path.is_file():
        return 0.0
    return float(
        sum(
            (r["tokens"] + r["prompt_tokens"]) * c["n"]
            for c in json.loads(path.read_text())["comparisons"]
            for r in c["rows"]
        )
    )


STEPS: tuple[Step, ...] = (
    Step("tokenizer", "train the tokenizer on the pretraining corpus", (), tokenizer_step),
    Step("pretrain", "pretrain the base model", (), pretrain_step),
    Step(
        "moe",
        "pretrain the MoE twin on the same tokens",
        (),
        moe_step,
        lambda cfg: cfg.moe is not None,
    ),
    Step("sft", "supervised fine-tuning on world chats", ("pretrain",), sft_step),
    Step("prefs", "sample preferences, labelled by the world annotator", ("sft",), prefs_step),
    Step("rm", "train the reward model", ("sft", "prefs"), rm_step),
    Step("ppo", "PPO against the reward model", ("sft", "rm"), ppo_step),
    Step(
        "dpo",
        "DPO on the same preferences",
        ("sft", "prefs"),
        dpo_step,
        lambda cfg: cfg.dpo_train is not None,
    ),
    Step(
        "grpo",
        "GRPO on verifiable rewards",
        ("sft",),
        grpo_step,
        lambda cfg: cfg.grpo is not None,
    ),
    Step(
        "overopt",
        "reward over-optimisation: best-of-n and PPO against a noisy proxy",
        ("sft",),
        overopt_step,
        lambda cfg: cfg.overopt is not None,
    ),
    Step("eval", "evaluate every model of the run", ("pretrain",), eval_step),
    Step("reason", "reasoning strategies: accuracy against compute", ("sft",), reason_step),
    Step(
        "scaling",
        "a scaling sweep and the Chinchilla fits",
        (),
        scaling_step,
        lambda cfg: cfg.scaling is not None,
    ),
)
"""Every step, in the order a lab run takes them."""

STEP_NAMES = tuple(s.name for s in STEPS)
