"""What a lab run does: one dataclass holding every stage's settings, and the named presets.

A preset is the whole recipe of `lmlab run` — pretraining, the MoE twin, SFT, preferences, the
reward model, PPO, GRPO, evaluation, reasoning and the scaling sweep — sized for a machine and a
time budget. The preset a lab run used is recorded in its `lab.json`, so `--resume` and
`lmlab report` read the settings the run actually had, not today's defaults.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lmlab.config import (
    ConfigError,
    DataConfig,
    GRPOConfig,
    ModelConfig,
    MoEConfig,
    PPOConfig,
    RunConfig,
    SFTConfig,
    TrainConfig,
    build_config,
)
from lmlab.scaling.config import PlanConfig


@dataclass
class PrefsSettings:
    """Preference data from the SFT model, labelled by the world's gold annotator."""

    tasks: list[str] = field(default_factory=lambda: ["chain", "strings"])
    n_prompts: int = 600
    k: int = 4
    """Responses sampled per prompt."""
    max_new_tokens: int = 160
    margin: float = 0.02
    """Gold difference below which two responses tie (no pair)."""
    noise: float = 0.0


@dataclass
class OveroptSettings:
    """Reward over-optimisation (Gao et al. 2022): a proxy reward model from few noisy labels,
    best-of-n and PPO against it, both measured in proxy and gold reward (`rlhf overopt`)."""

    tasks: list[str] = field(default_factory=lambda: ["chain", "strings"])
    n_pref_prompts: int = 300
    noise: float = 0.25
    bon_prompts: int = 64
    bon_max: int = 16
    iterations: int = 60
    """PPO iterations against the proxy (no KL penalty)."""
    max_new_tokens: int = 64


@dataclass
class EvalSettings:
    """The evaluation suite every model of the run is measured on (held-out test problems in
    held-out phrasings), and the RL runs' gold-judged win rates over SFT."""

    tasks: list[str] = field(default_factory=lambda: ["arith:3:op=add", "strings", "chain"])
    """Chat tasks, each asked directly and step by step."""
    icl_shots: list[int] = field(default_factory=lambda: [0, 2, 8])
    """In-context learning by number of examples (`icl:k=K`), asked directly."""
    n: int = 200
    """Problems per task."""
    base_shots: int = 2
    """Solved examples before each question to a base model (dropped where they overflow)."""
    val_iters: int = 10
    """Batches of the pretraining corpus's validation split for the validation loss."""
    judge_tasks: list[str] = field(default_factory=lambda: ["chain", "strings"])
    judge_n: int = 200
    judge_max_new_tokens: int = 160


@dataclass
class ReasonSettings:
    """One comparison of strategies on held-out problems with the SFT model (accuracy against
    compute)."""

    task: str = "arith:3:op=add"
    strategies: list[str] = field(
        default_factory=lambda: ["direct", "cot", "sc@4", "tot", "adaptive"]
    )
    n: int = 100
    evaluator: str | None = None
    """Tree of thoughts' state evaluator (None: the strategy's default)."""


@dataclass
class LabConfig:
    """Every stage of `lmlab run`."""

    name: str = "custom"
    seed: int = 0
    """Seed of every stage (added to each stage's own default seed)."""
    pretrain: RunConfig = field(default_factory=RunConfig)
    moe: MoEConfig | None = None
    """An MoE twin with the same active parameters, trained on the same tokens (None: none)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    sft_train: TrainConfig = field(default_factory=TrainConfig)
    prefs: PrefsSettings = field(default_factory=PrefsSettings)
    rm_train: TrainConfig = field(default_factory=TrainConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    ppo_train: TrainConfig = field(default_factory=TrainConfig)
    dpo_train: TrainConfig | None = None
    """DPO on the same preference pairs (None: no DPO)."""
    dpo_beta: float = 0.1
    grpo: GRPOConfig | None = None
    grpo_train: TrainConfig = field(default_factory=TrainConfig)
    overopt: OveroptSettings | None = None
    """The over-optimisation experiment on the SFT model (None: not run)."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    reason: list[ReasonSettings] = field(default_factory=lambda: [ReasonSettings()])
    """The comparisons of the reasoning step; the first is the report's headline."""
    scaling: PlanConfig | None = None
    """A small scaling sweep with the Chinchilla fits (None: no sweep)."""
    minutes: dict[str, float] = field(default_factory=dict)
    """Expected minutes of each step on 2 CPU cores (for the progress line's estimate)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabConfig:
        """A LabConfig from its `to_dict` form (a lab.json), strict about unknown keys."""
        nested: dict[str, type] = {
            "pretrain": RunConfig,
            "moe": MoEConfig,
            "sft": SFTConfig,
            "sft_train": TrainConfig,
            "prefs": PrefsSettings,
            "rm_train": TrainConfig,
            "ppo": PPOConfig,
            "ppo_train": TrainConfig,
            "dpo_train": TrainConfig,
            "grpo": GRPOConfig,
            "grpo_train": TrainConfig,
            "overopt": OveroptSettings,
            "eval": EvalSettings,
            "reason": ReasonSettings,
            "scaling": PlanConfig,
        }
        if not isinstance(d, dict):
            raise ConfigError("a lab config must be a JSON object")
        values = dict(d)
        for key, cls_ in nested.items():
            if values.get(key) is not None:
                v = values[key]
                if cls_ is RunConfig:
                    values[key] = RunConfig.from_dict(v)
                elif isinstance(v, list):
                    values[key] = [build_config(cls_, item) for item in v]
                else:
                    values[key] = build_config(cls_, v)
        return build_config(cls, values)


def _train(steps: int, lr: float, batch: int, **kw: Any) -> TrainConfig:
    """Loop settings of a fine-tuning or RL stage: a short cosine from `lr` to lr / 10."""
    settings: dict[str, Any] = {
        "max_steps": steps,
        "lr": lr,
        "min_lr": lr / 10,
        "warmup_steps": min(10, max(1, steps // 10)),
        "batch_size": batch,
        "eval_every": max(1, steps // 4),
        "eval_iters": 4,
    }
    return TrainConfig(**{**settings, **kw})


def _tiny() -> LabConfig:
    """Seconds per stage: checks the whole pipeline (tests, a first look); learns nothing."""
    model = ModelConfig(context_length=256, n_layer=1, n_head=2, d_model=32)
    return LabConfig(
        name="tiny",
        pretrain=RunConfig(
            model=model,
            train=TrainConfig(
                batch_size=4,
                max_steps=12,
                lr=3e-3,
                min_lr=3e-4,
                warmup_steps=2,
                eval_every=6,
                eval_iters=2,
                log_every=2,
            ),
            data=DataConfig(corpus="world:n=600", tokenizer="char"),
        ),
        moe=MoEConfig(n_experts=4, top_k=2),
        sft=SFTConfig(n_world=120, replay=0.2, replay_rows=2),
        sft_train=_train(8, 1e-3, 4, log_every=2),
        prefs=PrefsSettings(n_prompts=16, k=3, max_new_tokens=24, margin=0.0),
        rm_train=_train(6, 1e-3, 4, log_every=2),
        ppo=PPOConfig(prompts_per_iter=4, iterations=3, minibatch=2, max_new_tokens=24),
        ppo_train=_train(1, 1e-5, 1, ckpt_every=2),
        dpo_train=_train(4, 1e-4, 4, log_every=2),
        grpo=GRPOConfig(task="arith:1", k=4, prompts_per_step=2, max_new_tokens=24, eval_n=8),
        grpo_train=_train(3, 1e-5, 1, ckpt_every=2),
        overopt=OveroptSettings(
            tasks=["arith:1"],
            n_pref_prompts=12,
            bon_prompts=4,
            bon_max=4,
            iterations=3,
            max_new_tokens=16,
        ),
        eval=EvalSettings(
            tasks=["arith:1"],
            icl_shots=[0, 2],
            n=6,
            val_iters=2,
            judge_tasks=["arith:1"],
            judge_n=6,
            judge_max_new_tokens=24,
        ),
        reason=[
            ReasonSettings(task="arith:1", strategies=["direct", "cot", "sc@2"], n=4),
            ReasonSettings(
                task="countdown:numbers=2", strategies=["cot", "tot"], n=2, evaluator="verifier"
            ),
        ],
        minutes={},
    )


def _world_model(steps: int, corpus: str, **train: Any) -> RunConfig:
    """The world preset's model (lmlab.config's `small`: 4 x 128, characters, context 512)
    pretrained for `steps` steps of 16 x 512 characters."""
    return RunConfig(
        model=ModelConfig(context_length=512, n_layer=4, n_head=4, d_model=128),
        train=TrainConfig(
            batch_size=16,
            max_steps=steps,
            lr=3e-3,
            min_lr=3e-4,
            warmup_steps=max(10, steps // 20),
            eval_every=max(50, steps // 4),
            eval_iters=10,
            **train,
        ),
        data=DataConfig(corpus=corpus, tokenizer="char"),
    )


FOCUS = "arith=3:strings=3:icl=3:arith.op=add:icl.k=2-10"
"""The world families the demo's report measures: addition, the string operations and ICL
episodes (the speedrun's focus mix, docs/speedrun.md)."""


def _demo() -> LabConfig:
    """About ten minutes on 2 CPU cores: every stage once. Pretraining and SFT follow the
    speedrun's recipe (docs/speedrun.md) cut to the demo's budget: only the families the report
    measures, Muon for the block matrices, and replay against forgetting."""
    pretrain = _world_model(
        600, f"world:n=60000:{FOCUS}:arith.cot=0.9:strings.cot=0.9:icl.cot=0.3", optimizer="muon"
    )
    pretrain.train.warmup_steps, pretrain.train.eval_every, pretrain.train.eval_iters = 50, 300, 5
    return LabConfig(
        name="demo",
        pretrain=pretrain,
        sft=SFTConfig(
            n_world=20000, mix=f"{FOCUS}:arith.cot=1:strings.cot=0.9:icl.cot=0", replay=0.2
        ),
        sft_train=_train(
            300, 1e-3, 16, eval_every=150, eval_iters=5, optimizer="muon", muon_lr=0.01
        ),
        prefs=PrefsSettings(tasks=["strings"], n_prompts=160, k=4, max_new_tokens=96),
        rm_train=_train(60, 1e-4, 16),
        ppo=PPOConfig(
            tasks=["strings"], prompts_per_iter=16, iterations=8, minibatch=8, max_new_tokens=96
        ),
        ppo_train=_train(1, 3e-5, 1, ckpt_every=4),
        grpo=GRPOConfig(task="arith:1", k=4, prompts_per_step=4, max_new_tokens=96, eval_n=50),
        grpo_train=_train(8, 3e-5, 1, ckpt_every=4),
        eval=EvalSettings(
            tasks=["arith:3:op=add", "strings"],
            icl_shots=[0, 8],
            n=100,
            val_iters=5,
            judge_tasks=["strings"],
            judge_n=100,
            judge_max_new_tokens=96,
        ),
        reason=[ReasonSettings(task="arith:3:op=add", strategies=["direct", "cot", "sc@4"], n=50)],
        minutes={
            "tokenizer": 0.3,
            "pretrain": 5.0,
            "moe": 0,
            "sft": 3.0,
            "prefs": 0.3,
            "rm": 0.5,
            "ppo": 0.3,
            "grpo": 0.2,
            "eval": 1.0,
            "reason": 0.3,
        },
    )


def _cpu() -> LabConfig:
    """About an hour on 2 CPU cores: the runs the documentation quotes."""
    return LabConfig(
        name="cpu",
        pretrain=_world_model(2000, "world"),
        moe=None,
        sft=SFTConfig(n_world=40000, replay=0.2),
        sft_train=_train(560, 1e-3, 16, eval_every=140, eval_iters=10),
        prefs=PrefsSettings(n_prompts=2000, k=4, max_new_tokens=160),
        rm_train=_train(150, 1e-4, 16),
        ppo=PPOConfig(
            prompts_per_iter=32, iterations=120, max_new_tokens=160, kl_target=6.0, kl_horizon=320
        ),
        ppo_train=_train(1, 5e-5, 1, ckpt_every=10),
        dpo_train=_train(100, 5e-5, 16),
        grpo=GRPOConfig(task="arith:3:op=add", max_new_tokens=300, eval_n=200),
        grpo_train=_train(60, 3e-5, 1, ckpt_every=10),
        overopt=OveroptSettings(),
        eval=EvalSettings(
            tasks=["arith:3:op=add", "strings", "chain"],
            icl_shots=[0, 1, 2, 4, 8],
            n=300,
            judge_tasks=["chain", "strings"],
            judge_n=300,
        ),
        reason=[
            ReasonSettings(
                task="arith:3:op=add", strategies=["direct", "cot", "sc@8", "adaptive"], n=100
            ),
            ReasonSettings(
                task="countdown:numbers=2", strategies=["cot", "tot"], n=100, evaluator="verifier"
            ),
        ],
        scaling=PlanConfig(
            corpus="world:n=20000",
            tokenizer="char",
            budgets="3e11,1e12,3e12",
            sizes=4,
            context_length=128,
        ),
        minutes={
            "tokenizer": 0.5,
            "pretrain": 28,
            "sft": 9.5,
            "prefs": 4,
            "rm": 2.5,
            "ppo": 6,
            "dpo": 2,
            "grpo": 6,
            "eval": 6,
            "reason": 4,
            "scaling": 6,
        },
    )


def _gpu() -> LabConfig:
    """One 80-140 GB GPU, bf16 autocast and torch.compile: a wider, deeper world model (not yet
    measured on a GPU: the sizes are a starting point)."""
    cfg = _cpu()
    cfg.name = "gpu"
    cfg.pretrain = RunConfig(
        model=ModelConfig(context_length=512, n_layer=12, n_head=8, d_model=512),
        train=TrainConfig(
            batch_size=64,
            max_steps=20000,
            lr=2e-3,
            min_lr=2e-4,
            warmup_steps=500,
            eval_every=2000,
            eval_iters=20,
            compile=True,
        ),
        data=DataConfig(corpus="world:n=1000000", tokenizer="char"),
    )
    cfg.moe = MoEConfig(n_experts=8, top_k=2)
    cfg.sft = SFTConfig(n_world=200000, replay=0.2)
    cfg.sft_train = _train(3000, 5e-4, 64, eval_every=500, compile=True)
    cfg.minutes = {}
    return cfg


PRESETS: dict[str, LabConfig] = {
    "demo": _demo(),
    "cpu": _cpu(),
    "gpu": _gpu(),
    "tiny": _tiny(),
}


def preset(name: str) -> LabConfig:
    """A fresh copy of a named lab preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
