"""Pydantic request and response models of the OpenAI-compatible API (the OpenAPI schema).

Field names and shapes follow OpenAI's chat completions, completions and models endpoints, and
vLLM's `/tokenize`, `/detokenize` and `/tokenizer_info`. Beyond OpenAI's fields a request may
carry `top_k`, `min_p`, `ignore_eos` (as vLLM accepts them, e.g. through the `openai` client's
`extra_body`) and `reasoning`, the strategy that answers it. OpenAI fields this server does not
implement (tools, logit_bias, JSON response formats, ...) are declared here so that a request
using them gets a 400 naming the field (`serve/unsupported.py`) instead of being silently
ignored; fields OpenAI does not have are ignored, as OpenAI-compatible servers commonly do.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmlab.bounds import MAX_SAMPLES

INT64 = 2**63 - 1


class ReasoningOptions(BaseModel):
    """How to answer: `direct` (the model's reply) or a strategy of `lmlab.reason`."""

    model_config = ConfigDict(extra="allow")

    strategy: str = Field("direct", max_length=64)
    """direct, cot, fewshot-cot, sc, sc-weighted, tot or adaptive."""
    k: int | None = Field(None, ge=1, le=MAX_SAMPLES)
    """The strategy's count (samples for sc, breadth for tot, shots for fewshot-cot)."""
    return_traces: bool = False
    """Return every response the model wrote for the question."""


class StreamOptions(BaseModel):
    include_usage: bool = False
    """Send a last chunk with the usage counts (and no choices) before [DONE]."""


class _SamplingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=256)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-INT64, le=INT64)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    user: str | None = None
    top_k: int | None = Field(None, ge=1, le=INT64)
    min_p: float | None = Field(None, ge=0, le=1)
    ignore_eos: bool = False
    reasoning: ReasoningOptions | None = None
    logit_bias: dict[str, float] | None = None
    """Not supported: a non-empty map is a 400."""


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    """Only `text` is supported (JSON modes would need constrained decoding): others are a 400."""


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=INT64)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    """With logprobs: the most likely tokens at each position (0-20)."""
    max_completion_tokens: int | None = Field(None, ge=1, le=INT64)
    response_format: ResponseFormat | None = None
    # Not supported (a 400 naming the field when set to anything that would have an effect):
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    store: bool | None = None


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0, le=INT64)
    """0 generates nothing: with echo, the prompt is returned (and scored, with logprobs)."""
    logprobs: int | None = Field(None, ge=0, le=5)
    """The chosen tokens' log-probabilities and this many most likely alternatives (0-5)."""
    echo: bool | None = False
    """Return the prompt before the completion (with logprobs: its tokens' log-probabilities,
    the first token's null)."""
    suffix: str | None = None
    """Not supported (a non-empty suffix is a 400)."""
    best_of: int | None = Field(None, ge=1, le=128)
    """Only best_of equal to n (or 1) is supported."""


# --- responses --------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Compute(BaseModel):
    tokens: int
    """Tokens generated (all samples, all stages)."""
    prompt_tokens: int
    """Prompt tokens prefilled."""
    flops: float
    """Forward FLOPs spent."""
    calls: int
    """Engine requests made."""


class Reasoning(BaseModel):
    """What a reasoning strategy did (in the response when `reasoning` was requested)."""

    strategy: str
    answer: str | None = None
    confidence: float | None = None
    compute: Compute
    traces: list[str] | None = None
    info: dict[str, Any] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    reasoning: Reasoning | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    reasoning: Reasoning | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    """The first prompt token of an echo has none (null)."""
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    reasoning: Reasoning | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lmlab"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    strategies: list[str]
    max_batch: int
    running: int
    """Busy engine slots."""
    waiting: int
    """Requests queued in the engine for free slots."""
    pending: int
    """Requests the server holds (running, queued, or reasoning)."""
    max_pending: int
    """Above this many pending requests new ones get 429."""
    steps: int
    tokens: int
    """Engine steps run and tokens generated since start."""


# --- tokenizer and server endpoints (vLLM's shapes) ------------------------------------------


class TokenizeRequest(BaseModel):
    """Text (`prompt`) or a conversation (`messages`, in the chat template) to token ids."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, max_length=256)
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_special_tokens: bool = True
    """prompt: put <|bos|> first, as the completions endpoint does with text prompts."""
    add_generation_prompt: bool = True
    """messages: end with the assistant's turn marker, as the chat endpoint does."""
    return_token_strs: bool = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, max_length=256)
    tokens: list[int] = Field(max_length=1_000_000)


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfo(BaseModel):
    """What a client needs to tokenize as the server does (lm-eval's remote tokenizer)."""

    tokenizer_class: str = "lmlab"
    bos_token: str
    eos_token: str
    pad_token: str
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    vocab_size: int
    model_max_length: int
    chat_template: str


class Version(BaseModel):
    version: str
    """lmlab's version."""
    torch: str
    python: str
