"""The inference engine: batched generation with a preallocated KV cache and a slot scheduler.

This is the ONE generation path: the CLI (`sample`, `generate`, `chat`), evaluation, reasoning
strategies, RL rollouts and the server all call it.

Design (continuous batching, as in Orca, Yu et al. 2022, and vLLM):

- The cache holds `max_batch` *slots*, each with room for a whole sequence. A request of `n`
  samples takes `n` slots; its prompt is prefilled once and the prompt's keys/values are copied
  to the sibling slots.
- `step()` runs one decode step for every running slot, then admits waiting requests into free
  slots (prefilling them, which yields their first token). Each slot keeps its own position and
  cache length, so requests of any length join and leave at any step; a finished sequence frees
  its slot at once. `generate()`, `stream()` and `chat()` are thin loops over `add_request` and
  `step`.
- Decoding runs over slots 0..hi (hi = highest busy slot) as one batch; the rows of idle slots in
  between are computed and ignored. Per-row attention masks cover each row's own cache length.

Sampling happens in float32, in this order: temperature, top-k, top-p (nucleus, Holtzman et al.
2020), min-p (Nguyen et al. 2024); temperature 0 is greedy. The random numbers come from a
counter-based generator (Salmon et al. 2011): every sample draws from its own *stream* of the
seed, whose key (a hash of seed and stream index, set when the sample takes its slot) is hashed
with the step `t` and the token id, so the whole batch is sampled with a handful of tensor ops.
A `generate` call numbers its samples across prompts: prompt i's sample j is stream i*n + j.
So every prompt and sample of a call draws independent noise (one stream for all prompts would
tie prompt i's choices to prompt k's), and `generate([p, p])` gives exactly what
`generate([p], n=2)` gives. A request queued on its own (`add_request`, hence `stream`, `chat`
and the server) takes streams 0..n-1, or n streams from `first_stream` on. A sample depends
only on its seed and stream, never on which other requests share the batch or when it joined;
two calls with the same seed reuse the same streams, so a caller that splits one job into
several calls gives each call its own seed.

Stops: a sequence ends at a stop token (`<|end|>`, or a checkpoint's end of turn and EOS:
`Tokenizer.stop_ids`, unless `ignore_eos`; plus `stop_token_ids`;
the stop token is kept in `token_ids` and `logprobs` but not in `text`), at a stop string
(matched on the decoded text, also across token boundaries; the text is cut before it, while
`token_ids` keep every token generated up to the one that completed it), or after
`max_new_tokens` (finish_reason "length"). Logprobs are the model's own log-probabilities of the
chosen tokens (log-softmax of the raw logits, before temperature and filtering), so their sum is
the sequence log-likelihood; `top_logprobs` adds the most likely tokens at each position (among
those the engine can emit: never vocabulary padding), with values from the same log-softmax, so
a greedy token's logprob equals the first alternative's exactly. `prompt_logprobs` scores the
prompt itself from the logits of the forward pass that prefills it (no second forward), and
`max_new_tokens=0` with it scores a prompt without generating (what log-likelihood evaluation
asks: lm-eval's `loglikelihood` requests). A prompt plus `max_new_tokens` longer than the
context is an error (no silent truncation).
"""

from __future__ import annotations

import importlib
import itertools
import re
import types
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from lmlab.bounds import MAX_DECODE_STEPS, MAX_SLOTS
from lmlab.data.tokenizer import Message, Tokenizer
from lmlab.infer.kernels import decode_attention_op
from lmlab.infer.packed import can_prepack, prepacked
from lmlab.model.load import load_run


class GenerationError(ValueError):
    """Bad input to the engine (the message names the problem and the fix).

    `field` names the `SamplingParams` field at fault when there is one, so that a caller (the
    server) can point at its own input without parsing the message."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class SamplingParams:
    """How to sample one request."""

    max_new_tokens: int = 64
    """Most tokens to generate per sample."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_k: int | None = None
    """Keep only the k most likely tokens (None: all)."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches top_p (nucleus sampling)."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the most likely token."""
    n: int = 1
    """Samples per prompt (sharing one prefill)."""
    stop: list[str] | None = None
    """Stop strings, matched on the decoded text and excluded from it."""
    stop_token_ids: list[int] | None = None
    """Extra stop tokens; <|end|> always stops too unless ignore_eos."""
    ignore_eos: bool = False
    """Do not stop at <|end|> (only at stop_token_ids, stop strings or the length)."""
    seed: int | None = None
    """Sampling seed; prompt i's sample j of a `generate` call draws from stream i*n + j of it
    (None: each prompt draws a seed from torch's global generator)."""
    logprobs: bool = False
    """Return the log-probability of every generated token."""
    top_logprobs: int = 0
    """With logprobs or prompt_logprobs: also this many most likely tokens at each position and
    their log-probabilities."""
    prompt_logprobs: bool = False
    """Return the log-probability of every prompt token after the first (scored by the prefill's
    forward pass); with max_new_tokens=0 the prompt is scored and nothing is generated."""

    def validate(self, vocab_size: int, max_batch: int) -> None:
        """Raise GenerationError with a one-line message if a field is out of range."""
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise GenerationError(
                f"max_new_tokens must be >= 1, got {self.max_new_tokens}", "max_new_tokens"
            )
        if self.max_new_tokens == 0 and not self.prompt_logprobs:
            raise GenerationError(
                "max_new_tokens=0 only scores a prompt: it needs prompt_logprobs=True",
                "max_new_tokens",
            )
        if not isinstance(self.top_logprobs, int) or not 0 <= self.top_logprobs <= vocab_size:
            raise GenerationError(
                f"top_logprobs must be in [0, {vocab_size}], got {self.top_logprobs}",
                "top_logprobs",
            )
        if self.top_logprobs and not (self.logprobs or self.prompt_logprobs):
            raise GenerationError(
                "top_logprobs needs logprobs (or prompt_logprobs) on", "top_logprobs"
            )
        if not isinstance(self.n, int) or self.n < 1:
            raise GenerationError(f"n must be >= 1, got {self.n}", "n")
        if self.n > max_batch:
            raise GenerationError(f"n={self.n} exceeds the engine's max_batch={max_batch}", "n")
        if not self.temperature >= 0:
            raise GenerationError(
                f"temperature must be >= 0, got {self.temperature}", "temperature"
            )
        if self.top_k is not None and self.top_k < 1:
            raise GenerationError(f"top_k must be >= 1 or None, got {self.top_k}", "top_k")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}", "top_p")
        if not 0 <= self.min_p <= 1:
            raise GenerationError(f"min_p must be in [0, 1], got {self.min_p}", "min_p")
        if self.stop is not None and (
            not isinstance(self.stop, (list, tuple))
            or not all(isinstance(s, str) and s for s in self.stop)
        ):
            raise GenerationError(
                f"stop must be a list of non-empty strings, got {type(self.stop).__name__} "
                f"{self.stop!r}",
                "stop",
            )
        if self.stop_token_ids is not None and (
            not isinstance(self.stop_token_ids, (list, tuple))
            or not all(isinstance(t, int) and 0 <= t < vocab_size for t in self.stop_token_ids)
        ):
            raise GenerationError(
                f"stop_token_ids must be a list of token ids in [0, {vocab_size}), "
                f"got {self.stop_token_ids!r}",
                "stop_token_ids",
            )


@dataclass
class Completion:
    """One generated sample."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "cancelled" (see `Engine.cancel`)
    logprobs: list[float] | None
    prompt_tokens: int
    top_logprobs: list[list[tuple[int, float]]] | None = None
    """Per generated token: the `top_logprobs` most likely (token id, logprob), best first."""
    prompt_logprobs: list[float] | None = None
    """log p(prompt[t] | prompt[:t]) for t = 1 .. len(prompt) - 1 (the first token has none)."""
    prompt_top_logprobs: list[list[tuple[int, float]]] | None = None
    """The alternatives at each of those prompt positions."""


TopLogprobs = list[tuple[int, float]]
"""The most likely (token id, logprob) at one position, best first."""


# --- sampling -------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
_GOLDEN = 0x9E3779B1
_T = TypeVar("_T")
# Decode steps per compiled call when every running row decodes greedily (see `_decode`).
_COMPILED_STEPS = 4


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (Mueller's xorshift-multiply) on int64 tensors without overflow."""
    x = x & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x


def _exponential_noise(keys: Tensor, counters: Tensor, vocab: int) -> Tensor:
    """Exp(1) noise [B, V] that depends only on each row's (key, counter) and the token id."""
    step_key = _mix32(keys ^ _mix32(counters + _GOLDEN))
    token = (torch.arange(vocab, device=keys.device) * _GOLDEN) & _M32
    h = _mix32(_mix32(step_key[:, None] + token) ^ step_key[:, None])
    u = ((h >> 8).float() + 0.5) / 16777216.0  # 24-bit uniforms strictly inside (0, 1)
    return -torch.log(u)


def stream_key(seed: int, stream: int) -> int:
    """The noise key of stream `stream` of `seed`: a sample's row key (see the module docstring),
    set once per slot at admission; each decode step hashes it with the step counter."""
    return int(_mix32(_mix32(torch.tensor(seed & _M32)) + (stream * _GOLDEN & _M32)))


def filter_logits(logits: Tensor, top_k: Tensor, top_p: Tensor, min_p: Tensor) -> Tensor:
    """Set filtered-out logits to -inf: top-k, then top-p, then min-p (per-row parameters).

    logits [B, V] float32 (already divided by the temperature); top_k [B] long (V = off),
    top_p [B] float (1 = off), min_p [B] float (0 = off).
    """
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(logits.shape[-1], device=logits.device)
    sorted_logits = sorted_logits.masked_fill(rank >= top_k[:, None], -float("inf"))
    probs = sorted_logits.softmax(-1)
    # Keep a token while the mass strictly before it is below top_p (the first always stays).
    before = probs.cumsum(-1) - probs
    drop = (before >= top_p[:, None]) | (probs < min_p[:, None] * probs[:, :1])
    sorted_logits = sorted_logits.masked_fill(drop, -float("inf"))
    return torch.full_like(logits, -float("inf")).scatter(-1, order, sorted_logits)


def sample_tokens(
    logits: Tensor,
    temperature: Tensor,
    top_k: Tensor,
    top_p: Tensor,
    min_p: Tensor,
    keys: Tensor,
    counters: Tensor,
    need_filter: bool = True,
) -> Tensor:
    """Next tokens [B] from float32 logits [B, V]; rows with temperature 0 take the argmax.

    Sampling is the Gumbel-max trick in its exponential form: argmax(p / E) with E ~ Exp(1)
    draws from p, with E from the counter-based hash so each row is reproducible on its own.
    """
    greedy = logits.argmax(-1)
    scaled = logits / torch.where(temperature > 0, temperature, 1.0)[:, None]
    if need_filter:
        scaled = filter_logits(scaled, top_k, top_p, min_p)
    probs = scaled.softmax(-1)
    drawn = (probs / _exponential_noise(keys, counters, logits.shape[-1])).argmax(-1)
    return torch.where(temperature > 0, drawn, greedy)


# --- the KV cache ---------------------------------------------------------------------------


class SlotCache:
    """Preallocated keys/values [max_batch, H_kv, max_len, D] per layer, one row per slot.

    Implements the `KVCache` protocol of `model/transformer.py` in two modes set by the engine
    before each forward: prefill (write the prompt of rows `slots` at positions 0..T-1 and
    attend causally over it) and decode (write one token per row 0..B-1 at its own position
    and attend over each row's first `length + 1` positions).
    """

    def __init__(
        self,
        n_layer: int,
        max_batch: int,
        n_kv: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        attention: Callable[[Tensor, Tensor, Tensor, Tensor, float], Tensor] | None = None,
    ) -> None:
        shape = (max_batch, n_kv, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.max_len = max_len
        self._slots: Tensor | None = None
        self._rows = torch.arange(max_batch, device=device)
        self._pos: Tensor | None = None
        self._span = 0
        self._mask: Tensor | None = None
        self._attention = attention  # a fused decode-attention kernel (infer/kernels.py)

    def begin_prefill(self, slots: Tensor) -> None:
        self._slots = slots

    def begin_decode(self, positions: Tensor, span: int) -> None:
        """positions [B]: where each row's new token goes; span: max(positions) + 1."""
        self._slots = None
        self._pos = positions
        self._span = span
        self._mask = None  # built by the first layer, inside the (compiled) decode step

    def mark_static(self) -> None:
        """Tell torch.compile that the cache tensors never change shape (see `Engine`)."""
        for t in (*self.k, *self.v, self._rows):
            torch._dynamo.mark_static(t)

    @property
    def span(self) -> int:
        """Positions a decode step attends over (set by `begin_decode`)."""
        return self._span

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        kc, vc = self.k[layer], self.v[layer]
        if self._slots is not None:
            T = k.shape[2]
            kc[self._slots, :, :T] = k
            vc[self._slots, :, :T] = v
            return k, v, None
        assert self._pos is not None
        if self._mask is None:
            ar = torch.arange(self._span, device=self._pos.device)
            self._mask = (ar[None, :] <= self._pos[:, None])[:, None, None, :]
        B = self._write_step(layer, k, v)
        return kc[:B, :, : self._span], vc[:B, :, : self._span], self._mask

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor | None:
        """A decode step's attention by the fused kernel, if the cache has one."""
        if self._attention is None or self._slots is not None:
            return None
        assert self._pos is not None
        self._write_step(layer, k, v)
        return self._attention(q, self.k[layer], self.v[layer], self._pos, q.shape[-1] ** -0.5)

    def _write_step(self, layer: int, k: Tensor, v: Tensor) -> int:
        """Write a decode step's keys/values (row b at its own position); returns B."""
        B = k.shape[0]
        rows = self._rows[:B]
        self.k[layer][rows, :, self._pos] = k[:, :, 0]
        self.v[layer][rows, :, self._pos] = v[:, :, 0]
        return B

    def copy_slot(self, src: int, dst: list[int], length: int) -> None:
        """Copy the first `length` cached positions of slot `src` into slots `dst`."""
        for kc, vc in zip(self.k, self.v, strict=True):
            kc[dst, :, :length] = kc[src, :, :length]
            vc[dst, :, :length] = vc[src, :, :length]


# --- requests -------------------------------------------------------------------------------


@dataclass
class _Seq:
    """One sample of a request, living in one slot while it decodes."""

    request: Request
    index: int
    slot: int = -1
    length: int = 0  # tokens in this slot's cache
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[TopLogprobs] = field(default_factory=list)
    finish_reason: str | None = None
    stop_at: int | None = None  # text cut (a stop string was found there)

    def text(self, tok: Tokenizer) -> str:
        """Text of the tokens so far (without a final stop token, cut before a stop string)."""
        ids = self.token_ids
        if self.finish_reason == "stop" and self.stop_at is None:
            ids = ids[:-1]
        text = tok.decode(ids)
        return text if self.stop_at is None else text[: self.stop_at]


@dataclass
class Request:
    """A prompt and its samples; the handle `add_request` returns."""

    id: int
    prompt: list[int]
    params: SamplingParams
    seed: int
    stop_ids: frozenset[int]
    first_stream: int = 0
    """The seed's noise stream of sample 0; sample i draws from stream first_stream + i."""
    seqs: list[_Seq] = field(default_factory=list)
    prompt_logprobs: list[float] | None = None
    prompt_top_logprobs: list[TopLogprobs] | None = None

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.seqs)

    def completions(self, tok: Tokenizer) -> list[Completion]:
        if not self.finished:
            raise GenerationError(f"request {self.id} is still running")
        p = self.params
        return [
            Completion(
                text=s.text(tok),
                token_ids=list(s.token_ids),
                finish_reason=s.finish_reason or "length",
                logprobs=list(s.logprobs) if p.logprobs else None,
                prompt_tokens=len(self.prompt),
                top_logprobs=list(s.top_logprobs) if p.logprobs and p.top_logprobs else None,
                prompt_logprobs=self.prompt_logprobs,
                prompt_top_logprobs=self.prompt_top_logprobs,
            )
            for s in self.seqs
        ]


# --- the engine -----------------------------------------------------------------------------


class Engine:
    """Batched generation over a slot scheduler (see the module docstring).

    model: an lmlab `Transformer` (dense or MoE); tokenizer: its tokenizer; max_batch: slots,
    i.e. sequences decoded together; device: where the model and cache live (default: the
    model's); max_seq_len: cache length per slot (default: the model's context); compile:
    compile the decode step with `torch.compile` (dynamic shapes, frozen weights: the first
    call is slow, and later weight updates are not seen, so not for models still training);
    prepack: run the linear layers on weights reordered once for oneDNN (`infer/packed.py`;
    float32 CPU models only, ignored elsewhere; frozen weights too). `from_checkpoint` turns
    prepacking on; the plain constructor leaves it off because its model may still be training.
    native_attention: decode steps attend with the fused C++ kernel of `infer/kernels.py` (float32
    CPU only; built on first use; default: when `compile` is on; falls back to PyTorch ops, with
    a warning, where it cannot be built).
    decode_steps: greedy decode steps per call when every running row is greedy and has that many
    tokens to go (default: 4 with `compile`, else 1). The argmax of one step feeds the next
    inside one (compiled) graph, so the per-call costs are paid once per `decode_steps` tokens;
    the tokens are exactly those of single steps. A row that stops mid-way drops the rest;
    rows that sample, or are near their end, run single steps. `step()` then yields up to
    `decode_steps` tokens per row, and a waiting request joins after the call.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        max_batch: int = 32,
        device: str | torch.device | None = None,
        max_seq_len: int | None = None,
        compile: bool = False,
        prepack: bool = False,
        native_attention: bool | None = None,
        decode_steps: int | None = None,
    ) -> None:
        # Bounded (lmlab.bounds): every slot preallocates a whole sequence's keys and values.
        if not isinstance(max_batch, int) or not 1 <= max_batch <= MAX_SLOTS:
            raise GenerationError(f"max_batch must be in [1, {MAX_SLOTS}], got {max_batch}")
        steps = decode_steps if decode_steps is not None else (_COMPILED_STEPS if compile else 1)
        if not isinstance(steps, int) or not 1 <= steps <= MAX_DECODE_STEPS:
            raise GenerationError(f"decode_steps must be in [1, {MAX_DECODE_STEPS}], got {steps}")
        cfg = model.cfg  # type: ignore[attr-defined]
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        model = model.to(self.device).eval()
        self.prepacked = prepack and can_prepack(model)
        self.model = prepacked(model, max_batch) if self.prepacked else model
        # The decode step (one token per row through the model, then the greedy choice) is one
        # fixed graph of small ops. Compiling it (dynamic batch and span) fuses the elementwise
        # work, and inductor's freezing pass turns the weights into constants (inference only)
        # and prepacks them for oneDNN matmuls called straight from the graph. Prefill stays
        # eager, on the prepacked layers when there are.
        self.compiled = compile
        self.decode_steps = steps
        self._decode_fn = self._compiled(Engine._decode_logits) if compile else self._decode_logits
        self._multi_fn = self._compiled(Engine._decode_multi) if compile else self._decode_multi
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.max_batch = max_batch
        self.max_len = min(cfg.context_length, max_seq_len or cfg.context_length)
        dtype = next(model.parameters()).dtype
        with torch.inference_mode():
            self.cache = SlotCache(
                cfg.n_layer,
                max_batch,
                cfg.kv_heads,
                self.max_len,
                cfg.head_dim,
                dtype,
                self.device,
                attention=self._native_attention(native_attention, dtype),
            )
            z = dict(device=self.device)
            # Per-slot state, on the device, so a decode step needs no host-side assembly.
            self.tokens = torch.zeros(max_batch, dtype=torch.long, **z)
            self.prev = torch.zeros(max_batch, dtype=torch.long, **z)  # token before `tokens`
            self.lengths = torch.zeros(max_batch, dtype=torch.long, **z)
            self.counters = torch.zeros(max_batch, dtype=torch.long, **z)
            self.keys = torch.zeros(max_batch, dtype=torch.long, **z)
            self.temperature = torch.zeros(max_batch, **z)
            self.top_k = torch.full((max_batch,), cfg.vocab_size, dtype=torch.long, **z)
            self.top_p = torch.ones(max_batch, **z)
            self.min_p = torch.zeros(max_batch, **z)
            self.active = torch.zeros(max_batch, dtype=torch.long, **z)
        self._unknown: Tensor | None = None
        if tokenizer.vocab_size < cfg.vocab_size:
            self._unknown = torch.arange(cfg.vocab_size, device=self.device) >= tokenizer.vocab_size
        if compile:
            # Only the batch and the span vary between decode steps. The cache keeps its shape
            # for the engine's life: marked static, its sizes are constants in the compiled
            # step, not symbols whose relations dynamo re-checks in Python on every call (120
            # guards -> 10; a one-row step 5-9% faster, `small-bpe` shape, 2-core CPU).
            self.cache.mark_static()
            if self._unknown is not None:
                torch._dynamo.mark_static(self._unknown)
        vocab = tokenizer.hf.get_vocab(with_added_tokens=False)
        self._byte_ids = frozenset(i for t, i in vocab.items() if _BYTE_TOKEN.fullmatch(t))
        self.slots: list[_Seq | None] = [None] * max_batch
        self.waiting: deque[Request] = deque()
        self._ids = itertools.count()
        self._hi = 0  # decode batch covers slots [0, _hi)

    def _compiled(self, fn: Callable[..., _T]) -> Callable[..., _T]:
        """`fn` (a decode-step method: `_decode_logits` or `_decode_multi`) compiled for this
        engine alone.

        torch.compile keeps its graphs per code object, and this engine's weights are frozen
        into them, so the step runs on a copy of the method's code that only this engine
        calls: no other engine can match its graphs. When the whole step is one graph, that
        makes dynamo's guards on the model's modules redundant (the model must not change once
        compiled, as with the frozen weights), and they are dropped: about 880 guards -> 65, a
        one-row decode step 6-7% faster (`small-bpe` shape, 2-core CPU; at 16 rows no change
        beyond the noise). Guards on the inputs, the cache and global state stay, so a new
        shape still compiles a new graph. A step that breaks into several graphs (an MoE
        model's data-dependent dispatch) keeps every guard: its inner frames run code that
        other layers share, and only the guards on the modules tell their graphs apart.
        """
        config = importlib.import_module("torch._inductor.config")
        own = types.MethodType(
            types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__), self
        )
        guarded = torch.compile(own, dynamic=True)
        skip = getattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe", None)
        current = (
            guarded
            if skip is None
            else torch.compile(own, dynamic=True, fullgraph=True, options={"guard_filter_fn": skip})
        )

        def step(*args: Tensor) -> _T:
            nonlocal current
            # Freezing is on only around the compiled call (where a new graph may be compiled):
            # globally it would also freeze a model that another part of the program trains.
            # Set directly: `config.patch` costs 16 us a step, this 3.
            before, config.freezing = config.freezing, True
            try:
                return current(*args)
            except RuntimeError:
                if current is guarded:
                    raise
                # Not one graph (dynamo's Unsupported, or a data-dependent shape): keep every
                # guard from now on. A genuine error is raised again by the guarded call.
                current = guarded
                return guarded(*args)
            finally:
                config.freezing = before

        return step

    def _native_attention(
        self, wanted: bool | None, dtype: torch.dtype
    ) -> Callable[[Tensor, Tensor, Tensor, Tensor, float], Tensor] | None:
        """The fused decode-attention kernel if wanted (default: with `compile`) and usable:
        float32 on the CPU, and buildable here (infer/kernels.py)."""
        if not (self.compiled if wanted is None else wanted):
            return None
        if self.device.type != "cpu" or dtype != torch.float32:
            return None

        return decode_attention_op()

    @classmethod
    def from_checkpoint(
        cls, run_dir: str | Path, device: str | torch.device = "cpu", **kw: Any
    ) -> Engine:
        """An engine over the latest checkpoint of an lmlab run directory."""

        model, tok, _ = load_run(Path(run_dir), device)
        kw.setdefault("prepack", True)  # a loaded checkpoint is for inference only
        return cls(model, tok, device=device, **kw)

    # --- scheduler --------------------------------------------------------------------------

    def encode_prompt(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids of a prompt: text as `Tokenizer.encode_prompt` reads it (BOS in front where
        the tokenizer adds one, as lmlab's does); a list of ids is used as-is."""
        if isinstance(prompt, str):
            ids = self.tokenizer.encode_prompt(prompt)
            if not ids:
                raise GenerationError("the prompt is empty and this tokenizer adds no BOS")
            return ids
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            if not prompt:
                raise GenerationError("a prompt of token ids is empty; give at least one token")
            bad = [t for t in prompt if not 0 <= t < self.cfg.vocab_size]
            if bad:
                raise GenerationError(
                    f"prompt token id {bad[0]} is outside the vocabulary [0, {self.cfg.vocab_size})"
                )
            return list(prompt)
        raise GenerationError(
            f"a prompt must be a string or a list of token ids, got {type(prompt).__name__}"
        )

    def _check(self, ids: list[int], params: SamplingParams) -> None:
        params.validate(self.cfg.vocab_size, self.max_batch)
        if len(ids) + params.max_new_tokens > self.max_len:
            raise GenerationError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds "
                f"the context length {self.max_len}; shorten the prompt or lower max_new_tokens"
            )

    def add_request(
        self, prompt: str | Sequence[int], params: SamplingParams, first_stream: int = 0
    ) -> Request:
        """Queue a request; it joins the running batch at the next `step()` with free slots.

        Its samples draw from noise streams first_stream .. first_stream + n - 1 of the seed
        (see the module docstring): pass `i * n` for the i-th prompt of a `generate` call to
        reproduce that prompt's samples on their own.
        """
        if not isinstance(first_stream, int) or first_stream < 0:
            raise GenerationError(f"first_stream must be >= 0, got {first_stream!r}")
        ids = self.encode_prompt(prompt)
        self._check(ids, params)
        return self._enqueue(ids, params, first_stream)

    def _enqueue(self, ids: list[int], params: SamplingParams, first_stream: int) -> Request:
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**31, ()))
        stop_ids = set(params.stop_token_ids or [])
        if not params.ignore_eos:
            stop_ids |= self.tokenizer.stop_ids
        req = Request(next(self._ids), ids, params, seed, frozenset(stop_ids), first_stream)
        req.seqs = [_Seq(req, i) for i in range(params.n)]
        self.waiting.append(req)
        return req

    def has_work(self) -> bool:
        return bool(self.waiting) or any(s is not None for s in self.slots)

    @torch.inference_mode()
    def cancel(self, request: Request) -> None:
        """Stop a request now: drop it from the queue, end its running samples (finish_reason
        "cancelled") and free their slots for the next step (a server calls this when its
        client disconnects)."""
        self.waiting = deque(r for r in self.waiting if r is not request)
        for s in request.seqs:
            if s.finish_reason is None:
                s.finish_reason = "cancelled"
                if 0 <= s.slot < self.max_batch and self.slots[s.slot] is s:
                    self._free(s)

    @torch.inference_mode()
    def step(self) -> list[Request]:
        """One decode step for every running slot, then admit and prefill waiting requests.

        Returns the requests that finished during this step.
        """
        done: list[Request] = []
        if self._hi:
            self._decode(done)
        admitted: list[Request] = []
        free = [i for i, s in enumerate(self.slots) if s is None]
        while self.waiting and len(free) >= self.waiting[0].params.n:
            req = self.waiting.popleft()
            for seq in req.seqs:
                seq.slot = free.pop(0)
                self.slots[seq.slot] = seq
                self._hi = max(self._hi, seq.slot + 1)
            admitted.append(req)
        if admitted:
            self._prefill(admitted, done)
        return done

    def _set_slot_params(self, seq: _Seq) -> None:
        p, s = seq.request.params, seq.slot
        self.temperature[s] = p.temperature
        self.top_k[s] = min(p.top_k or self.cfg.vocab_size, self.cfg.vocab_size)
        self.top_p[s] = p.top_p
        self.min_p[s] = p.min_p
        self.keys[s] = stream_key(seq.request.seed, seq.request.first_stream + seq.index)
        self.counters[s] = 0
        self.active[s] = 1

    def _prefill(self, reqs: list[Request], done: list[Request]) -> None:
        """Run all new prompts as one right-padded batch; each yields its samples' first token."""
        lens = [len(r.prompt) for r in reqs]
        T = max(lens)
        idx = torch.full((len(reqs), T), self.tokenizer.pad_id, dtype=torch.long)
        for i, r in enumerate(reqs):
            idx[i, : lens[i]] = torch.tensor(r.prompt)
        first = torch.tensor([r.seqs[0].slot for r in reqs], device=self.device)
        # Right padding keeps every real token's causal view exact; the pad positions written
        # past a row's length are masked out and later overwritten by its decode steps.
        self.cache.begin_prefill(first)
        hidden = self.model.hidden_states(idx.to(self.device), cache=self.cache)
        # Only the last real position of each prompt needs logits, unless it is to be scored.
        last = self.model.lm_head(hidden[torch.arange(len(reqs)), torch.tensor(lens) - 1]).float()
        rows, seqs = [], []
        for i, r in enumerate(reqs):
            if r.params.prompt_logprobs:
                self._score_prompt(r, hidden[i, : lens[i] - 1])
            if r.params.max_new_tokens == 0:  # scored only: nothing to generate
                for s in r.seqs:
                    s.finish_reason = "length"
                    self._free(s)
                done.append(r)
                continue
            others = [s.slot for s in r.seqs[1:]]
            if others:
                self.cache.copy_slot(r.seqs[0].slot, others, lens[i])
            for s in r.seqs:
                s.length = lens[i]
                self.lengths[s.slot] = lens[i]
                self._set_slot_params(s)
                rows.append(i)
                seqs.append(s)
        if not seqs:
            return
        slots = torch.tensor([s.slot for s in seqs], device=self.device)
        # Each sample's first decode step follows its prompt's last token.
        self.prev[slots] = torch.tensor([s.request.prompt[-1] for s in seqs], device=self.device)
        self._advance(slots, last[torch.tensor(rows, device=self.device)], seqs, done)

    def _score_prompt(self, r: Request, hidden: Tensor) -> None:
        """The prompt's own log-probabilities from its prefill's hidden states [T-1, D] (the
        positions whose next token is a prompt token): the same forward pass, no second one."""
        lsm = self.model.lm_head(hidden).float().log_softmax(-1)
        target = torch.tensor(r.prompt[1:], dtype=torch.long, device=lsm.device)
        r.prompt_logprobs = lsm.gather(-1, target[:, None])[:, 0].tolist()
        k = r.params.top_logprobs
        r.prompt_top_logprobs = self._top(lsm, [k] * len(target)) if k else None

    def _top(self, lsm: Tensor, ks: list[int]) -> list[TopLogprobs]:
        """Per row of log-probabilities [N, V]: its ks[row] most likely tokens the engine can
        emit (vocabulary padding excluded), best first."""
        k = min(max(ks), self.tokenizer.vocab_size)
        values, ids = self._allowed(lsm).topk(k, dim=-1)
        rows = zip(ids.tolist(), values.tolist(), strict=True)
        return [list(zip(i[:n], v[:n], strict=True)) for (i, v), n in zip(rows, ks, strict=True)]

    def _decode(self, done: list[Request]) -> None:
        B = self._hi
        seqs = self.slots[:B]
        span = max(s.length for s in seqs if s is not None) + 1
        positions = self.lengths[:B]
        self.cache.begin_decode(positions, span)
        args = (self.tokens[:B], positions, self.prev[:B])
        if self._multi_step(seqs):
            steps = self._multi_fn(*args, self.active[:B])
        else:
            steps = [self._decode_fn(*args)]
        for logits, greedy in steps:
            self.prev[:B] = self.tokens[:B]  # the token just fed precedes the one chosen next
            self.lengths[:B] += self.active[:B]
            for s in seqs:
                if s is not None:
                    s.length += 1
            self._advance(slice(0, B), logits, seqs, done, greedy)
            seqs = self.slots[:B]  # a row that finished drops its later tokens

    def _multi_step(self, seqs: list[_Seq | None]) -> bool:
        """Whether this step may decode `decode_steps` tokens per row in one call: every running
        row is greedy (the argmax of one step feeds the next inside the compiled graph) and has
        at least that many tokens still to come (so its cache has room for them all)."""
        k = self.decode_steps
        return k > 1 and all(
            s is None
            or (
                s.request.params.temperature == 0
                and s.request.params.max_new_tokens - len(s.token_ids) >= k
            )
            for s in seqs
        )

    def _decode_logits(
        self, tokens: Tensor, positions: Tensor, prev: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One decode step's float32 logits [B, V] and greedy tokens [B] (the step that
        `compile` compiles, so the argmax is fused into the graph too)."""
        logits = self.model(tokens[:, None], positions[:, None], self.cache, prev)[:, -1].float()
        return logits, self._allowed(logits).argmax(-1)

    def _decode_multi(
        self, tokens: Tensor, positions: Tensor, prev: Tensor, active: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        """`decode_steps` greedy decode steps in a row, each feeding its argmax to the next:
        the logits and greedy tokens of each. Compiled as one graph, the per-call cost of a
        compiled step (guards, wrappers, the engine's bookkeeping) is paid once for them all."""
        out = [self._decode_logits(tokens, positions, prev)]
        for _ in range(self.decode_steps - 1):
            prev, tokens = tokens, out[-1][1]
            positions = positions + active  # idle rows (active 0) stay where they are
            self.cache.begin_decode(positions, self.cache.span + 1)
            out.append(self._decode_logits(tokens, positions, prev))
        return out

    def _allowed(self, logits: Tensor) -> Tensor:
        """Logits with the ids past the tokenizer (vocabulary padding) at -inf: never drawn."""
        return logits if self._unknown is None else logits.masked_fill(self._unknown, -float("inf"))

    def _advance(
        self,
        rows: Tensor | slice,
        raw: Tensor,
        seqs: list[_Seq | None],
        done: list[Request],
        greedy: Tensor | None = None,
    ) -> None:
        """Choose the next token of `rows` from their float32 logits `raw` (`greedy`: their
        argmax, if already computed) and do the per-sequence bookkeeping."""
        live = [s for s in seqs if s is not None]
        sampling = any(s.request.params.temperature > 0 for s in live)
        if sampling or greedy is None:
            logits = self._allowed(raw)
        if sampling:
            need_filter = any(
                (p := s.request.params).top_k is not None or p.top_p < 1 or p.min_p > 0
                for s in live
            )
            nxt = sample_tokens(
                logits,
                self.temperature[rows],
                self.top_k[rows],
                self.top_p[rows],
                self.min_p[rows],
                self.keys[rows],
                self.counters[rows],
                need_filter,
            )
            self.counters[rows] += 1
        else:
            nxt = greedy if greedy is not None else logits.argmax(-1)
        self.tokens[rows] = nxt
        want_lp = any(s.request.params.logprobs for s in live)
        lps, tops = None, None
        if want_lp:
            lsm = raw.log_softmax(-1)
            lps = lsm.gather(-1, nxt[:, None])[:, 0].tolist()
            ks = [s.request.params.top_logprobs if s is not None else 0 for s in seqs]
            if any(ks):
                tops = self._top(lsm, ks)
        for j, (s, t) in enumerate(zip(seqs, nxt.tolist(), strict=True)):
            if s is None:
                continue
            s.token_ids.append(t)
            if lps is not None and s.request.params.logprobs:
                s.logprobs.append(lps[j])
                if tops is not None and s.request.params.top_logprobs:
                    s.top_logprobs.append(tops[j])
            if self._finished(s, t):
                self._free(s)
                if s.request.finished:
                    done.append(s.request)

    def _finished(self, s: _Seq, t: int) -> bool:
        p = s.request.params
        if t in s.request.stop_ids:
            s.finish_reason = "stop"
            return True
        if p.stop:
            text = self.tokenizer.decode(s.token_ids)
            hits = [i for i in (text.find(x) for x in p.stop) if i >= 0]
            if hits:
                s.finish_reason, s.stop_at = "stop", min(hits)
                return True
        if len(s.token_ids) >= p.max_new_tokens:
            s.finish_reason = "length"
            return True
        return False

    def _free(self, s: _Seq) -> None:
        self.slots[s.slot] = None
        self.active[s.slot] = 0
        self.lengths[s.slot] = 0
        while self._hi and self.slots[self._hi - 1] is None:
            self._hi -= 1

    def warm_up(self) -> None:
        """Run two short generations, one row and then two, so that a compiled engine has
        compiled the graphs of both decode-step shapes (torch.compile specialises one row),
        single and multi-step, before the first real request. Leaves no request behind."""
        if self.has_work():
            raise GenerationError("warm_up needs an idle engine")
        # The prefill's token, a multi-step call if the engine makes them, then a single step.
        steps = self.decode_steps if self.decode_steps > 1 else 0
        params = SamplingParams(max_new_tokens=steps + 2, temperature=0.0, ignore_eos=True)
        # Two-token prompts: the attention span (3) then differs from the row count (2), so
        # the compiler does not take them for one size.
        prompt = [self.tokenizer.bos_id] * 2
        for rows in (1, min(2, self.max_batch)):
            self.generate([prompt] * rows, params)

    # --- front ends -------------------------------------------------------------------------

    def generate(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        """Completions for each prompt (a list of `params.n` per prompt, in prompt order)."""
        params = params or SamplingParams()
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
            raise GenerationError("prompts must be a list of strings or of token-id lists")
        if not prompts:
            raise GenerationError("no prompts given; pass at least one")
        encoded = [self.encode_prompt(p) for p in prompts]
        for ids in encoded:  # validate everything before queueing anything
            self._check(ids, params)
        # Prompt i's samples take streams i*n .. i*n + n-1 of the seed (see module docstring).
        reqs = [self._enqueue(ids, params, i * params.n) for i, ids in enumerate(encoded)]
        while not all(r.finished for r in reqs):
            self.step()
        return [r.completions(self.tokenizer) for r in reqs]

    def stream(
        self, prompt: str | Sequence[int], params: SamplingParams | None = None
    ) -> Iterator[str]:
        """Yield the completion's text in pieces as it is generated (`params.n` must be 1).

        Text is yielded once it is settled (see `settled_text`), so the pieces join to exactly
        the final `Completion.text`.
        """
        params = params or SamplingParams()
        if params.n != 1:
            raise GenerationError(f"stream needs n=1, got n={params.n}")
        req = self.add_request(prompt, params)
        seq, sent = req.seqs[0], 0
        while not req.finished:
            self.step()
            text = self.settled_text(seq)
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)

    def settled_text(self, seq: _Seq) -> str:
        """The text of a sample that later tokens cannot change: all of it once finished;
        while running, without a tail that could still become a stop string, an incomplete
        UTF-8 character, or a trailing run of byte-fallback tokens (`<0xHH>`, char tokenizers),
        which the decoder turns into text only as a whole."""
        if seq.finish_reason is not None:
            return seq.text(self.tokenizer)
        ids = seq.token_ids
        k = len(ids)
        while k and ids[k - 1] in self._byte_ids:
            k -= 1
        text = self.tokenizer.decode(ids[:k]).rstrip("\ufffd")
        stops = seq.request.params.stop or []
        hold = max((j for x in stops for j in range(1, len(x)) if text.endswith(x[:j])), default=0)
        return text[: len(text) - hold]

    def chat(self, messages: list[Message], params: SamplingParams | None = None) -> Completion:
        """The assistant's reply to a conversation (chat template of the tokenizer)."""
        params = params or SamplingParams()
        if params.n != 1:
            raise GenerationError(f"chat returns one reply; got n={params.n}")
        ids, _ = self.tokenizer.encode_chat(messages, add_generation_prompt=True)
        return self.generate([ids], params)[0][0]
