"""`POST /tokenize`, `POST /detokenize` and `GET /tokenizer_info` in vLLM's shapes: the server's
own tokenization, so a client (lm-eval's `local-completions` with its remote tokenizer) can
send token ids that mean exactly what the server's text prompts mean.

`/tokenize` encodes a `prompt` as the completions endpoint does — with `add_special_tokens`
(the default) as `AutoTokenizer(text)` on an export: BOS first, special tokens typed in the text
read as control tokens; without it, the text as text — or `messages` in the chat template as the
chat endpoint does (a message's text is always text). `/tokenizer_info` gives the tokenizer's
own chat template: lmlab's, or an imported checkpoint's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lmlab.data.tokenizer import CHAT_TEMPLATE
from lmlab.serve import schemas as S
from lmlab.serve.errors import APIError
from lmlab.serve.generation import Service
from lmlab.serve.logprobs import token_text
from lmlab.serve.params import chat_messages, encode, strategy_of


def router(service: Service) -> APIRouter:
    """The tokenizer endpoints (mounted at the root, as vLLM serves them)."""
    routes = APIRouter()
    engine, tok = service.engine, service.engine.tokenizer

    def check_model(model: str | None) -> None:
        if model is not None:
            strategy_of(model, None, service.name)

    @routes.post("/tokenize", response_model=S.TokenizeResponse)
    async def tokenize(body: S.TokenizeRequest) -> S.TokenizeResponse:
        check_model(body.model)
        if (body.prompt is None) == (body.messages is None):
            raise APIError(
                400, "give exactly one of prompt and messages", param="prompt", code="invalid_value"
            )
        if body.prompt is not None:
            text = body.prompt
            if body.add_special_tokens:
                ids = encode(lambda: engine.encode_prompt(text), "prompt")
            else:
                ids = encode(lambda: tok.encode(text), "prompt")
        else:
            messages = chat_messages(body.messages or [])
            gen = body.add_generation_prompt
            ids = encode(lambda: tok.encode_chat(messages, gen)[0], "messages")
        strs = [token_text(tok, t) for t in ids] if body.return_token_strs else None
        return S.TokenizeResponse(
            count=len(ids), max_model_len=engine.max_len, tokens=ids, token_strs=strs
        )

    @routes.post("/detokenize", response_model=S.DetokenizeResponse)
    async def detokenize(body: S.DetokenizeRequest) -> S.DetokenizeResponse:
        check_model(body.model)
        bad = [t for t in body.tokens if not 0 <= t < tok.vocab_size]
        if bad:
            raise APIError(
                400,
                f"token id {bad[0]} is outside the tokenizer's vocabulary [0, {tok.vocab_size})",
                param="tokens",
                code="invalid_value",
            )
        return S.DetokenizeResponse(prompt=tok.decode(body.tokens))

    @routes.get("/tokenizer_info", response_model=S.TokenizerInfo)
    async def tokenizer_info() -> S.TokenizerInfo:
        return S.TokenizerInfo(
            bos_token=token_text(tok, tok.bos_id),
            eos_token=token_text(tok, tok.end_id),
            pad_token=token_text(tok, tok.pad_id),
            bos_token_id=tok.bos_id,
            eos_token_id=tok.end_id,
            pad_token_id=tok.pad_id,
            vocab_size=tok.vocab_size,
            model_max_length=engine.max_len,
            chat_template=_template(tok.config) or CHAT_TEMPLATE,
        )

    return routes


def _template(config: dict[str, Any] | None) -> str | None:
    """An imported checkpoint's chat template (None for lmlab's own tokenizers)."""
    source = (config or {}).get("chat_template")
    return source if isinstance(source, str) else None
