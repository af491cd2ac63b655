"""Sweep planning: for each FLOP budget, a ladder of model shapes and the tokens each may train.

All shapes come from one depth/width family (d_model = aspect * n_layer, heads of `head_dim`),
so a sweep varies size along one line, as Chinchilla's and Kaplan's sweeps do. A run at budget
C with training FLOPs per token f trains D = C / f tokens, rounded to whole optimizer steps.
Both countings are explicit and switchable because the choice moves the fitted exponents
(Kaplan et al. 2020 count non-embedding parameters, Chinchilla counts all; Pearce & Song 2024):

- `count`: N is every parameter (`total`) or the non-embedding ones (`non_embedding`); for MoE
  models the active counts are used (one token's parameters).
- `flops`: f is `exact` (6 N_matmul + attention, `model.transformer.flops_per_token`) or `6N`
  (6 times the counted N).

Each run gets its own schedule ending at its own length (cosine to 10% of the peak; a run cut
from a longer schedule would overstate its loss, the error Chinchilla corrected in Kaplan et
al.), a short warmup, and AdamW beta2 = 0.99 when a step holds few tokens (Porian et al. 2024
find beta2 = 0.95 unstable at small batch sizes).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig, build_config
from lmlab.data.corpora import load_corpus
from lmlab.data.shards import get_tokenizer
from lmlab.model.transformer import Transformer, flops_per_token, param_counts
from lmlab.runs import LOCK_FILE, check_output_dir, lock_dir, write_atomic
from lmlab.scaling.config import PlanConfig, ScalingError

PLAN_FILE = "plan.json"
# Below this many tokens per optimizer step, AdamW's beta2 = 0.95 is too short a memory for the
# noisy small-batch gradients (Porian et al. 2024 use 0.99 at small batch sizes).
SMALL_BATCH_TOKENS = 2**18
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
"""What a planned run may be called (its folder under SWEEP/runs)."""


@dataclass
class Shape:
    n_layer: int
    d_model: int
    params: int
    """N as the plan counts it."""
    params_total: int
    params_non_embedding: int
    flops_per_token: float

    def model_config(self, cfg: PlanConfig) -> ModelConfig:
        return shape_config(cfg, self.n_layer, self.d_model)


def shape_config(cfg: PlanConfig, n_layer: int, d_model: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=cfg.vocab_size,
        context_length=cfg.context_length,
        n_layer=n_layer,
        n_head=d_model // cfg.head_dim,
        d_model=d_model,
    )


def family(cfg: PlanConfig) -> list[Shape]:
    """The depth/width family, smallest first: every width d_model that is a multiple of
    head_dim, with n_layer = d_model / aspect rounded half up (at least 1, at most max_layers).
    Stepping the width rather than the depth gives a fine ladder (about 1.4x in N per step
    for mid-sized shapes) from a single aspect ratio."""
    shapes = []
    for h in range(1, 100_000):
        d = h * cfg.head_dim
        n_layer = max(1, math.floor(d / cfg.aspect + 0.5))
        if n_layer > cfg.max_layers:
            break
        m = shape_config(cfg, n_layer, d)
        m.validate()
        counts = param_counts(m)
        n = counts["active"] if cfg.count == "total" else counts["active_non_embedding"]
        f = flops_per_token(m)["train"] if cfg.flops == "exact" else 6.0 * n
        shapes.append(Shape(n_layer, d, n, counts["active"], counts["active_non_embedding"], f))
    return sorted(shapes, key=lambda s: s.params)


@dataclass
class PlannedRun:
    name: str
    budget: float
    n_layer: int
    d_model: int
    params: int
    params_total: int
    params_non_embedding: int
    flops_per_token: float
    steps: int
    tokens: int
    flops: float
    """FLOPs the run will actually use (steps rounded: within 2.5% of the budget)."""
    est_seconds: float | None
    config: dict[str, Any]
    """The run's full RunConfig."""


def run_config(cfg: PlanConfig, shape: Shape, steps: int) -> RunConfig:
    """One run's config: its own cosine schedule to 10%, short warmup, small-batch beta2."""
    lr = cfg.lr * min(1.0, cfg.lr_width / shape.d_model)
    every = max(1, steps // cfg.evals)
    return RunConfig(
        model=shape.model_config(cfg),
        train=TrainConfig(
            batch_size=cfg.batch_size,
            grad_accum=1,
            max_steps=steps,
            lr=lr,
            min_lr=lr * cfg.min_lr_frac,
            warmup_steps=max(1, round(cfg.warmup_frac * steps)),
            schedule="cosine",
            beta2=0.99 if cfg.tokens_per_step < SMALL_BATCH_TOKENS else 0.95,
            eval_every=every,
            eval_iters=cfg.eval_iters,
            ckpt_every=every,
            keep_ckpts=1,
            log_every=every,
            seed=cfg.seed,
        ),
        data=DataConfig(corpus=cfg.corpus, tokenizer=cfg.tokenizer),
    )


def ladder(cfg: PlanConfig, budget: float, shapes: list[Shape]) -> list[Shape]:
    """`cfg.sizes` consecutive family shapes around the one with `center_tpp` tokens per
    parameter, among those that get at least `min_steps` steps at this budget."""
    tps = cfg.tokens_per_step
    fits = [s for s in shapes if budget / (s.flops_per_token * tps) >= cfg.min_steps - 0.5]
    if not fits:
        s = shapes[0]
        need = cfg.min_steps * tps * s.flops_per_token
        raise ScalingError(
            f"budget {budget:.3g} is too small for the smallest shape ({s.params:,} params, "
            f"{s.flops_per_token:.3g} FLOPs/token): it needs >= {need:.3g} FLOPs for "
            f"{cfg.min_steps} steps of {tps} tokens; raise the budget or lower --min-steps"
        )
    if len(fits) < cfg.sizes:
        raise ScalingError(
            f"budget {budget:.3g} affords only {len(fits)} of the family's shapes "
            f"(>= {cfg.min_steps} steps each) but --sizes is {cfg.sizes}; raise the budget"
        )
    centre = math.log(math.sqrt(budget / (6 * cfg.center_tpp)))
    best = min(
        range(len(fits) - cfg.sizes + 1),
        key=lambda i: abs(
            sum(math.log(s.params) for s in fits[i : i + cfg.sizes]) / cfg.sizes - centre
        ),
    )
    return fits[best : best + cfg.sizes]


def plan_run(
    cfg: PlanConfig, budget: float, shape: Shape, name: str, est: dict[tuple[int, int], float]
) -> PlannedRun:
    tps = cfg.tokens_per_step
    steps = max(cfg.min_steps, round(budget / (shape.flops_per_token * tps)))
    tokens = steps * tps
    rate = est.get((shape.n_layer, shape.d_model))
    seconds = None
    if rate:
        evals = cfg.evals * cfg.eval_iters * tps / 3  # a forward pass is a third of a step
        seconds = (tokens + evals) / rate
    return PlannedRun(
        name,
        budget,
        shape.n_layer,
        shape.d_model,
        shape.params,
        shape.params_total,
        shape.params_non_embedding,
        shape.flops_per_token,
        steps,
        tokens,
        tokens * shape.flops_per_token,
        seconds,
        run_config(cfg, shape, steps).to_dict(),
    )


def probe_throughput(cfg: PlanConfig, shape: Shape) -> float:
    """Training tokens per second of one shape on this machine with one torch thread (random
    tokens, on the CPU), after one untimed warm-up step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each sweep worker runs (see scaling.run)
    try:
        return _probe(cfg, shape)
    finally:
        torch.set_num_threads(threads)


def _probe(cfg: PlanConfig, shape: Shape) -> float:
    model = Transformer(shape.model_config(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.context_length + 1), generator=g)
    t0 = 0.0
    for i in range(cfg.probe_steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return cfg.probe_steps * cfg.tokens_per_step / (time.perf_counter() - t0)


def resolve_corpus(cfg: PlanConfig) -> str:
    """Load the corpus and build (or fetch) its tokenizer, as every run will; set
    `cfg.vocab_size` to the model vocabulary the runs will really have (char/byte tokenizers
    fix their own) and return the corpus fingerprint the sweep is tied to."""

    run = RunConfig(
        model=ModelConfig(vocab_size=cfg.vocab_size),
        data=DataConfig(corpus=cfg.corpus, tokenizer=cfg.tokenizer),
    )
    corpus = load_corpus(cfg.corpus, run.data.val_fraction, run.data.text_field)
    get_tokenizer(run, corpus)
    cfg.vocab_size = run.model.vocab_size
    return corpus.fingerprint


def make_plan(cfg: PlanConfig, fingerprint: str | None = None) -> dict[str, Any]:
    """The whole sweep as a JSON-able dict: settings, the family and every run."""
    cfg.validate()
    shapes = family(cfg)
    ladders = {b: ladder(cfg, b, shapes) for b in cfg.budget_list()}
    est: dict[tuple[int, int], float] = {}
    if cfg.probe_steps > 0:
        for s in {(s.n_layer, s.d_model): s for lad in ladders.values() for s in lad}.values():
            est[(s.n_layer, s.d_model)] = probe_throughput(cfg, s)
    runs = [
        plan_run(cfg, b, s, f"C{b:.2e}_L{s.n_layer:02d}_d{s.d_model:04d}", est)
        for b, lad in ladders.items()
        for s in lad
    ]
    return {
        "version": 1,
        "settings": asdict(cfg),
        "corpus": cfg.corpus,
        "fingerprint": fingerprint,
        "probe_tokens_per_s": {f"L{k[0]}_d{k[1]}": v for k, v in est.items()},
        "runs": [asdict(r) for r in runs],
    }


def check_plan_out(out: Path) -> None:
    """Refuse, before any planning, an --out that cannot take a sweep: a file, an unwritable
    place, a folder another process is writing, or a non-empty folder that is not a sweep (a
    run's directory, say: planning into it would mix a sweep into the run)."""
    check_output_dir(out)
    if (
        out.is_dir()
        and not (out / PLAN_FILE).is_file()
        and any(p.name != LOCK_FILE for p in out.iterdir())
    ):
        raise ScalingError(f"{out} is not empty and holds no sweep; choose another --out")


def write_plan(plan: dict[str, Any], out: Path) -> Path:
    """Write OUT/plan.json (holding OUT's lock); refuses a directory that is not empty and not
    a sweep, or that holds a sweep of another corpus or another plan with runs started."""
    check_plan_out(out)
    with lock_dir(out):
        _check_replan(plan, out)
        write_atomic(out / PLAN_FILE, json.dumps(plan, indent=2) + "\n")
    return out / PLAN_FILE


def _check_replan(plan: dict[str, Any], out: Path) -> None:
    path = out / PLAN_FILE
    if path.is_file():
        old = load_plan(out)
        if old["corpus"] != plan["corpus"] or (
            old.get("fingerprint")
            and plan.get("fingerprint")
            and old["fingerprint"] != plan["fingerprint"]
        ):
            raise ScalingError(
                f"{out} holds a sweep on corpus {old['corpus']!r} "
                f"(fingerprint {str(old.get('fingerprint'))[:12]}), not {plan['corpus']!r}; "
                "choose another --out"
            )
        started = [r["name"] for r in old["runs"] if (out / "runs" / r["name"]).exists()]
        if started and [r["name"] for r in old["runs"]] != [r["name"] for r in plan["runs"]]:
            raise ScalingError(
                f"{out} holds a different plan with {len(started)} run(s) started; "
                "choose another --out"
            )


def load_plan(sweep: Path) -> dict[str, Any]:
    path = sweep / PLAN_FILE
    if not path.is_file():
        raise ScalingError(
            f"{sweep} is not a sweep (no {PLAN_FILE}); make one with `lmlab scaling plan`"
        )
    try:
        plan = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ScalingError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(plan, dict) or not {"corpus", "runs", "settings"} <= plan.keys():
        raise ScalingError(f"{path} is not an lmlab sweep plan (needs corpus, runs, settings)")
    if not isinstance(plan["runs"], list) or not plan["runs"]:
        raise ScalingError(f"{path} lists no runs")
    names = set()
    for r in plan["runs"]:
        name = r.get("name") if isinstance(r, dict) else None
        # a run name becomes SWEEP/runs/NAME, which `scaling run` may delete and retrain: it
        # must be one plain folder name, never a path (`../x`, `/abs`)
        if not isinstance(name, str) or not RUN_NAME.fullmatch(name) or name in names:
            raise ScalingError(
                f"{path} names a run {str(name)[:80]!r}: run names must be distinct plain "
                "folder names (letters, digits, . _ + -), not paths; refused"
            )
        names.add(name)
    return plan


def plan_config(plan: dict[str, Any]) -> PlanConfig:
    """The plan's settings, type-checked (`build_config`); settings this version no longer has
    are ignored, so older plans still load."""
    if not isinstance(plan["settings"], dict):
        raise ScalingError("a plan's settings must be a JSON object")
    names = set(PlanConfig.__dataclass_fields__)
    return build_config(PlanConfig, {k: v for k, v in plan["settings"].items() if k in names})


def nearest_shape(cfg: PlanConfig, n: float) -> Shape:
    """The family shape whose N (as the plan counts it) is closest to n in log space."""
    return min(family(cfg), key=lambda s: abs(math.log(s.params / n)))
