"""Typed configuration dataclasses and named presets.

Every field here is a command-line flag: `ModelConfig.n_kv_head` is `--model.n-kv-head`,
`TrainConfig.max_steps` is `--train.max-steps`. A run's full `RunConfig` is written to
`config.json` in its directory, so a run is reproducible from that file alone.

Settings read from disk go through `build_config`, the one place that checks them: unknown keys,
values of the wrong type (against each field's annotation) and numbers that are not finite are
errors naming the setting. Settings from flags are typed by tyro; each `validate` checks their
ranges, finiteness included.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# RoPE has no hard length limit, but a context this long would not fit any machine we target;
# anything above it is almost certainly a typo (an extra zero).
MAX_CONTEXT_LENGTH = 131072


class ConfigError(ValueError):
    """A configuration that cannot be used (shown to the user as one line)."""


def check_finite(obj: Any, prefix: str = "") -> None:
    """ConfigError naming the first float setting of dataclass `obj` that is NaN or infinite,
    spelled as its flag (`--PREFIX.NAME`, or `--NAME` for settings flattened into a command):
    such a value passes every `<`/`>` range check, so ranges alone do not catch it."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            flag = f"--{prefix + '.' if prefix else ''}{f.name.replace('_', '-')}"
            raise ConfigError(f"{flag} must be a finite number, got {value}")


def task_list(tasks: str | Iterable[str]) -> list[str]:
    """World task specs as a list. Entries may also be comma-separated (`--tasks chain,strings`
    as well as `--tasks chain strings`), and a plain comma string is read as a list: stage.json
    records written before task lists were lists hold one (a task spec never has a comma)."""
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    return [t.strip() for item in items for t in item.split(",") if t.strip()]


@dataclass
class MoEConfig:
    """Mixture-of-Experts feed-forward layers (`model/moe.py`); n_experts=0 means a dense model."""

    n_experts: int = 0
    """Routed experts per MoE layer (0: dense SwiGLU everywhere)."""
    top_k: int = 2
    """Experts each token is sent to (token-choice top-k)."""
    n_shared: int = 0
    """Always-on shared experts per MoE layer (DeepSeekMoE), each of hidden size d_expert."""
    d_expert: int | None = None
    """Expert SwiGLU hidden size; None means ffn_dim / (top_k + n_shared) rounded up to a
    multiple of 8, so the active FFN parameters match the dense model's."""
    every: int = 1
    """MoE in every k-th block (blocks k-1, 2k-1, ...); the others stay dense."""
    score: Literal["softmax", "sigmoid"] = "softmax"
    """Router score function: softmax (Mixtral, Switch) or sigmoid (DeepSeek-V3)."""
    renormalize: bool = True
    """Rescale the chosen experts' gate weights to sum to 1 per token."""
    aux_loss: float = 0.01
    """Switch load-balancing loss weight alpha (alpha * N * sum_i f_i P_i; 0 disables)."""
    z_loss: float = 0.001
    """Router z-loss weight (ST-MoE: mean squared logsumexp of the router logits; 0 disables)."""
    bias_speed: float = 0.001
    """DeepSeek-V3 auxiliary-loss-free balancing: per-expert selection-bias step (0 disables)."""
    capacity_factor: float | None = None
    """Switch-style expert capacity in training (tokens beyond it are dropped); None: dropless.
    Inference is always dropless."""

    def is_moe_layer(self, layer: int) -> bool:
        return self.n_experts > 0 and (layer + 1) % self.every == 0

    def validate(self) -> None:
        check_finite(self, "model.moe")
        if self.n_experts < 0 or self.n_shared < 0:
            raise ValueError("moe n_experts and n_shared must be >= 0")
        if self.n_experts == 0:
            return
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"moe top_k {self.top_k} must be in 1..n_experts {self.n_experts}")
        if self.every < 1 or (self.d_expert is not None and self.d_expert < 1):
            raise ValueError("moe every and d_expert must be >= 1")
        if self.score not in ("softmax", "sigmoid"):
            raise ValueError(f"moe score {self.score!r} must be 'softmax' or 'sigmoid'")
        if min(self.aux_loss, self.z_loss, self.bias_speed) < 0:
            raise ValueError("moe aux_loss, z_loss and bias_speed must be >= 0")
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise ValueError("moe capacity_factor must be > 0 (or None for dropless)")


@dataclass
class ModelConfig:
    """Shape of the decoder-only transformer."""

    vocab_size: int = 4096
    """Vocabulary size (for BPE, the size the tokenizer is trained to; char/byte set their own)."""
    context_length: int = 256
    """Maximum sequence length the model is trained and run at."""
    n_layer: int = 4
    """Number of transformer blocks."""
    n_head: int = 4
    """Number of query heads."""
    n_kv_head: int | None = None
    """Number of key/value heads (grouped-query attention); None means n_head (multi-head)."""
    d_model: int = 128
    """Residual stream width."""
    d_ff: int | None = None
    """SwiGLU hidden size; None means 8/3 * d_model rounded up to a multiple of 32."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    tie_embeddings: bool = True
    """Share the input embedding and output projection matrices."""
    init_std: float = 0.02
    """Standard deviation of the normal weight init (residual outputs scaled by 1/sqrt(2L))."""
    smear: bool = False
    """Token smearing: add a learned per-channel gate (zero at init) times the previous token's
    embedding to each token's embedding, so one attention layer can match "the token before
    this one" and copy what followed it (an induction head without a previous-token head).
    Not part of the Llama format: such models do not export to Hugging Face."""
    qkv_bias: bool = False
    """Learned biases on the query/key/value projections (Qwen2's layout; Llama has none)."""
    moe: MoEConfig = field(default_factory=MoEConfig)
    """Mixture-of-Experts settings (dense when moe.n_experts is 0)."""

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):  # from a saved config.json
            self.moe = build_config(MoEConfig, self.moe)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def ffn_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        return 32 * -(-(8 * self.d_model) // (3 * 32))

    @property
    def expert_dim(self) -> int:
        """Hidden size of one MoE expert (see MoEConfig.d_expert)."""
        if self.moe.d_expert:
            return self.moe.d_expert
        return 8 * -(-self.ffn_dim // (8 * (self.moe.top_k + self.moe.n_shared)))

    def validate(self) -> None:
        """Raise ValueError with a one-line message if the shape is inconsistent."""
        check_finite(self, "model")
        if min(self.vocab_size, self.context_length, self.n_layer, self.n_head, self.d_model) < 1:
            raise ValueError("model sizes must be positive integers")
        if min(self.rope_theta, self.norm_eps, self.init_std) <= 0:
            raise ValueError("model rope-theta, norm-eps and init-std must be > 0")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even for RoPE")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head {self.n_head} is not divisible by n_kv_head {self.kv_heads}")
        if self.context_length > MAX_CONTEXT_LENGTH:
            raise ValueError(
                f"context length {self.context_length} is above the maximum {MAX_CONTEXT_LENGTH}"
            )
        self.moe.validate()


DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
"""The devices a run may ask for (`--train.device`)."""


@dataclass
class TrainConfig:
    """Optimisation, evaluation and checkpointing settings of the training loop."""

    batch_size: int = 16
    """Sequences per micro-batch on each process."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    max_steps: int = 600
    """Optimizer steps in the run (the LR schedule ends here)."""
    lr: float = 3e-3
    """Peak learning rate."""
    min_lr: float = 3e-4
    """Learning rate at the end of the schedule."""
    warmup_steps: int = 30
    """Linear warmup steps."""
    schedule: Literal["cosine", "wsd"] = "cosine"
    """'cosine': warmup + cosine to min_lr; 'wsd': warmup-stable-decay (linear decay at the end)."""
    decay_frac: float = 0.2
    """Fraction of steps spent decaying in the 'wsd' schedule."""
    weight_decay: float = 0.1
    """AdamW weight decay (matrices only, not norms or embeddings)."""
    optimizer: Literal["adamw", "muon"] = "adamw"
    """'adamw', or 'muon': Muon for the transformer blocks' matrices and AdamW for the rest
    (embeddings, output projection, norms), as in modded-nanogpt and nanochat."""
    muon_lr: float = 0.02
    """Muon's peak learning rate (it follows the same schedule as lr, scaled by muon_lr / lr)."""
    muon_momentum: float = 0.95
    """Muon's Nesterov momentum."""
    muon_weight_decay: float = 0.0
    """Muon's decoupled weight decay (p <- p (1 - lr wd))."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""
    eval_every: int = 100
    """Evaluate validation loss every this many steps (and at the last step)."""
    eval_iters: int = 20
    """Validation batches per evaluation."""
    ckpt_every: int | None = None
    """Checkpoint every this many steps; None means at every evaluation."""
    keep_ckpts: int = 2
    """How many recent checkpoints to keep on disk."""
    log_every: int = 10
    """Write a metrics line every this many steps."""
    seed: int = 1337
    """Seed for init, data order and dropout-free training (exactly reproducible on CPU)."""
    compile: bool = False
    """Compile the model with torch.compile."""
    cpu_bf16: bool = False
    """bf16 autocast on the CPU too (it is always on with CUDA): matmuls in bfloat16 on CPUs
    with AMX or AVX512-BF16 units, float32 master weights and optimizer."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda[:N]'."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism under torchrun: 'ddp' (replicated) or 'fsdp' (FSDP2, sharded per block)."""

    def validate(self) -> None:
        check_finite(self, "train")
        if min(self.batch_size, self.grad_accum, self.max_steps, self.eval_iters) < 1:
            raise ValueError("batch size, grad accum, max steps and eval iters must be >= 1")
        if min(self.eval_every, self.log_every, self.keep_ckpts) < 1 or (
            self.ckpt_every is not None and self.ckpt_every < 1
        ):
            raise ValueError("eval, log and checkpoint intervals and keep-ckpts must be >= 1")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError("need 0 <= min_lr <= lr and lr > 0")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.warmup_steps < 0:
            raise ValueError("train weight-decay, grad-clip and warmup-steps must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and 0 <= self.decay_frac <= 1):
            raise ValueError("need 0 <= beta1, beta2 < 1 and 0 <= decay-frac <= 1")
        if not DEVICE.fullmatch(self.device):
            raise ValueError(f"--train.device {self.device!r} is not auto, cpu, cuda or cuda:N")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"optimizer must be adamw or muon, got {self.optimizer!r}")
        if self.muon_lr <= 0 or not 0 <= self.muon_momentum < 1 or self.muon_weight_decay < 0:
            raise ValueError("need muon_lr > 0, 0 <= muon_momentum < 1 and muon_weight_decay >= 0")
        if self.optimizer == "muon" and self.parallel == "fsdp":
            # FSDP shards each matrix across ranks; Muon must orthogonalise the whole matrix
            raise ValueError("optimizer muon needs whole matrices: use --train.parallel ddp")


@dataclass
class DataConfig:
    """Where the training text comes from and how it is tokenized."""

    corpus: str = "world"
    """A source name (world, python-stdlib, world:OPTIONS) or a path to a text file, folder,
    glob or .jsonl. `world` (the built-in task world) is the default."""
    tokenizer: str = "bpe"
    """'char', 'byte', 'bpe' (trained on the corpus) or a path to a tokenizer.json."""
    text_field: str = "text"
    """Field holding the text in JSONL corpora."""
    val_fraction: float = 0.02
    """Fraction of documents held out for validation (python-stdlib has a fixed split)."""


@dataclass
class SFTConfig:
    """What supervised fine-tuning trains on (the loop settings are a TrainConfig)."""

    data: str = "world"
    """'world' (chats generated from the task world) or a chat JSONL file of {"messages": [...]}."""
    n_world: int = 20000
    """Number of world chats to generate (train-split problems only)."""
    style: Literal["both", "direct", "cot"] = "both"
    """World replies: 'direct' answers, 'cot' worked solutions (the user asks to think step by
    step), or 'both' (half each)."""
    tasks: list[str] = field(
        default_factory=lambda: ["arith", "chain", "countdown", "strings", "icl"]
    )
    """World families to draw chats from (at the world's default weights)."""
    mix: str = ""
    """A world mix in the corpus option syntax, replacing `tasks`: task weights, knobs and
    per-task worked-solution fractions (e.g. `arith=3:arith.op=add:icl=2:icl.k=4-8:icl.cot=0`)."""
    val_fraction: float = 0.05
    """Fraction of chats held out for the validation loss."""
    pack: bool = True
    """Pack several short chats into each training row (otherwise one padded chat per row)."""
    replay: float = 0.0
    """Weight of next-token loss on the base run's pretraining data, mixed into every step
    against forgetting (0 disables; the base corpus must still be loadable)."""
    replay_rows: int = 4
    """Pretraining windows per micro-batch when replay is on."""
    pretrain_eval: bool = False
    """Measure the base corpus's validation loss before and after (always done with replay)."""
    seed: int = 0
    """Seed for world chat generation, the validation split and packing order."""

    def __post_init__(self) -> None:
        self.tasks = task_list(self.tasks)

    def validate(self) -> None:
        check_finite(self)
        if self.n_world < 2:
            raise ValueError(f"n_world must be >= 2, got {self.n_world}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 <= self.replay < 1:
            raise ValueError(f"replay must be in [0, 1), got {self.replay}")
        if self.replay_rows < 1:
            raise ValueError(f"replay rows must be >= 1, got {self.replay_rows}")


def sft_train_config() -> TrainConfig:
    """Loop settings fine-tuning starts from: a lower learning rate and a short schedule."""
    return TrainConfig(
        batch_size=16,
        max_steps=300,
        lr=5e-4,
        min_lr=5e-5,
        warmup_steps=20,
        eval_every=50,
        eval_iters=10,
    )


@dataclass
class RunConfig:
    """Everything that defines a pretraining run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a run config must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {"model", "train", "data"})
        if unknown:
            raise ConfigError(f"unknown run config section {unknown[0]!r}; use model, train, data")
        return cls(
            model=build_config(ModelConfig, d.get("model", {})),
            train=build_config(TrainConfig, d.get("train", {})),
            data=build_config(DataConfig, d.get("data", {})),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        """A run's config.json, checked: types (`build_config`), the model's shape and the loop
        settings; any problem is one ConfigError naming the file."""
        try:
            cfg = cls.from_dict(json.loads(path.read_text()))
            cfg.model.validate()
            cfg.train.validate()
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not UTF-8 text") from None
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None
        return cfg


def build_config(cls: type, d: dict[str, Any]) -> Any:
    """A `cls` dataclass from a dict read from JSON, checked against the class: a key it does
    not have is an error naming it (a typo in a hand-edited config.json must not be silently
    dropped), and so is a value that does not fit the field's annotation (`check_value`).
    Nested dataclasses are built the same way."""
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__} settings must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} setting {unknown[0]!r}; known: {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls)
    values = {k: check_value(v, hints[k], f"{cls.__name__}.{k}") for k, v in d.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:  # a __post_init__ refusing a value
        raise ConfigError(f"{cls.__name__}: {e}") from None


def check_value(value: Any, tp: Any, where: str) -> Any:
    """`value` (read from JSON) if it fits annotation `tp` — int, float (finite; an int is
    taken), bool, str, Literal choices, optional, unions, list/dict/tuple of these, nested
    dataclasses (a dict is built with `build_config`) — else ConfigError naming `where`. A
    string stands for a list of strings: records written before task lists were lists hold one
    (see `task_list`)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return check_value(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {_describe(tp)}, got {_show(value)}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, got {value}")
            return float(value)
    elif tp is str or tp is Path:
        if isinstance(value, str):
            return tp(value)
    elif origin is list:
        if isinstance(value, str) and args == (str,):
            return value
        if isinstance(value, list):
            return [check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is tuple:
        if isinstance(value, list | tuple) and (len(args) == len(value) or args[-1:] == (...,)):
            kinds = [args[0]] * len(value) if args[-1:] == (...,) else list(args)
            return tuple(
                check_value(v, t, f"{where}[{i}]")
                for i, (v, t) in enumerate(zip(value, kinds, strict=True))
            )
    elif origin is dict:
        if isinstance(value, dict):
            return {
                check_value(k, args[0], where): check_value(v, args[1], f"{where}.{k}")
                for k, v in value.items()
            }
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return build_config(tp, value)
    else:
        raise TypeError(f"build_config cannot check {where}: annotation {tp!r}")
    raise ConfigError(f"{where} must be {_describe(tp)}, got {_show(value)}")


def _describe(tp: Any) -> str:
    """An annotation in words, for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return "a JSON object"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    if tp is type(None):
        return "null"
    if tp is Path:
        return "a path"
    return f"a {getattr(tp, '__name__', tp)} object"


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


PRESETS: dict[str, RunConfig] = {
    # ~1.3M parameters: a few minutes on 2 CPU cores.
    "tiny": RunConfig(
        model=ModelConfig(vocab_size=4096, context_length=256, n_layer=4, n_head=4, d_model=128),
        train=TrainConfig(batch_size=16, max_steps=600, lr=3e-3, min_lr=3e-4, warmup_steps=30),
    ),
    # tiny with 8 experts, top-2 in every block: ~1.33M active (as tiny), ~2.95M in total.
    "tiny-moe": RunConfig(
        model=ModelConfig(
            vocab_size=4096,
            context_length=256,
            n_layer=4,
            n_head=4,
            d_model=128,
            moe=MoEConfig(n_experts=8, top_k=2),
        ),
        train=TrainConfig(batch_size=16, max_steps=600, lr=3e-3, min_lr=3e-4, warmup_steps=30),
    ),
    # ~0.85M parameters, character-level with a 512-character context: the world-run preset.
    # The task world is character-level work (digit-by-digit sums, taking strings apart letter
    # by letter, ciphers), which characters make visible to the model. A narrow 4-layer model
    # goes about 10,000 characters/s on 2 CPU cores, so 2,000 steps of 16 x 512 (16M
    # characters) fit in 30 minutes: for copying digits and letters out of the prompt, seeing
    # more text beat a wider model that saw less (docs/world.md).
    "small": RunConfig(
        model=ModelConfig(vocab_size=4096, context_length=512, n_layer=4, n_head=4, d_model=128),
        train=TrainConfig(
            batch_size=16,
            max_steps=2000,
            lr=3e-3,
            min_lr=3e-4,
            warmup_steps=100,
            eval_every=500,
            eval_iters=10,
        ),
        data=DataConfig(tokenizer="char"),
    ),
    # ~12M parameters with a 4096-token BPE vocabulary: for text and code corpora
    # (python-stdlib), and the model shape the inference, serving and PPO benchmarks time.
    "small-bpe": RunConfig(
        model=ModelConfig(vocab_size=4096, context_length=256, n_layer=6, n_head=6, d_model=384),
        train=TrainConfig(
            batch_size=16, max_steps=3000, lr=1.5e-3, min_lr=1.5e-4, warmup_steps=100
        ),
    ),
    # GPT-2 small shaped (124M with a GPT-2-sized vocabulary): for GPUs.
    "gpt2-124m": RunConfig(
        model=ModelConfig(
            vocab_size=50304, context_length=1024, n_layer=12, n_head=12, d_model=768
        ),
        train=TrainConfig(
            batch_size=32,
            grad_accum=16,
            max_steps=20000,
            lr=6e-4,
            min_lr=6e-5,
            warmup_steps=700,
            eval_every=500,
            eval_iters=50,
            compile=True,
        ),
    ),
}


def preset(name: str) -> RunConfig:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return RunConfig.from_dict(PRESETS[name].to_dict())


@dataclass
class GRPOConfig:
    """Settings of a GRPO run on verifiable world rewards."""

    task: str = "arith"
    """World task spec (e.g. arith, arith:3, chain)."""
    k: int = 8
    """Responses sampled per prompt (the group)."""
    prompts_per_step: int = 8
    """Prompts per optimizer step (batch = prompts_per_step * k responses)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (also applied when scoring them)."""
    max_new_tokens: int = 96
    """Longest response."""
    step_by_step: bool = True
    """Ask for worked solutions (the reward only checks the final answer)."""
    kl_beta: float = 0.0
    """Weight of the k3 KL penalty to the frozen SFT reference (0: no reference model)."""
    eval_n: int = 200
    """Test problems for the before/after accuracy."""

    def validate(self) -> None:
        check_finite(self)
        if self.k < 2 or self.prompts_per_step < 1:
            raise ValueError("GRPO needs k >= 2 responses per prompt and >= 1 prompt per step")
        if self.temperature <= 0 or self.max_new_tokens < 1 or self.kl_beta < 0:
            raise ValueError("need temperature > 0, max_new_tokens >= 1 and kl_beta >= 0")


@dataclass
class PPOConfig:
    """Settings of a PPO run against a reward model."""

    tasks: list[str] = field(default_factory=lambda: ["chain", "strings"])
    """World tasks whose (train-split) prompts the policy answers."""
    prompts_per_iter: int = 32
    """Rollouts per PPO iteration."""
    iterations: int = 40
    """PPO iterations (rollout, then `epochs` passes of minibatch updates)."""
    epochs: int = 2
    """Passes over each rollout batch."""
    minibatch: int = 8
    """Rollouts per minibatch update."""
    temperature: float = 0.7
    """Sampling temperature (applied in every forward pass that scores the samples)."""
    max_new_tokens: int = 64
    """Longest response."""
    kl_beta: float = 0.05
    """Initial KL coefficient."""
    kl_target: float | None = None
    """Adaptive KL target (None keeps kl_beta fixed)."""
    kl_horizon: int = 10000
    """Samples over which the adaptive coefficient moves by at most 20% (Ziegler et al.'s
    10000 suits batches of hundreds; with 32 rollouts per iteration beta moves 0.06% per
    iteration, so short runs need a smaller horizon, e.g. 320: 2% per iteration)."""
    clip: float = 0.2
    """PPO ratio clip range."""
    vf_clip: float = 0.2
    """Value clip range."""
    gamma: float = 1.0
    lam: float = 0.95
    no_eos_penalty: float = -1.0
    """Replaces the score of a response that hits max_new_tokens without <|end|>."""
    step_by_step_fraction: float = 0.5
    """Fraction of prompts that ask for a worked solution."""

    def __post_init__(self) -> None:
        self.tasks = task_list(self.tasks)

    def validate(self) -> None:
        check_finite(self)
        if min(self.prompts_per_iter, self.iterations, self.epochs, self.minibatch) < 1:
            raise ValueError("PPO sizes (prompts, iterations, epochs, minibatch) must be >= 1")
        if self.kl_horizon < 1:
            raise ValueError(f"kl_horizon must be >= 1, got {self.kl_horizon}")
        if self.temperature <= 0 or self.kl_beta < 0 or not 0 < self.clip < 1:
            raise ValueError("need temperature > 0, kl_beta >= 0 and 0 < clip < 1")
