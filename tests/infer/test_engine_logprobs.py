"""Tests for the engine's scoring outputs: top-k alternatives of generated tokens, the prompt's
own log-probabilities from its prefill, and max_new_tokens=0 (score a prompt, generate nothing),
each against a full uncached forward of the same model through `model/scoring.py`."""

from __future__ import annotations

import pytest
import torch

from lmlab.data.tokenizer import Tokenizer, byte_tokenizer
from lmlab.infer import Engine, GenerationError, SamplingParams
from lmlab.model.scoring import token_logprobs
from lmlab.model.transformer import Transformer
from tests.conftest import tiny_model_config

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-4
PROMPTS = ["def f1(x):\n", "#", "    return x * 3 + ", "the quick brown fox jumps"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model(tok: Tokenizer) -> Transformer:
    torch.manual_seed(0)
    # Vocabulary padded past the tokenizer: alternatives must never name a padding id.
    cfg = tiny_model_config(vocab_size=-(-tok.vocab_size // 64) * 64 + 64, init_std=0.3)
    model = Transformer(cfg).eval()
    with torch.no_grad():  # make the padding rows the most likely: they must still be skipped
        model.lm_head.weight[tok.vocab_size :] = model.lm_head.weight[:1] * 50
    return model


@pytest.fixture(params=[1, 3], ids=["1-step", "3-step"])
def engine(model: Transformer, tok: Tokenizer, request: pytest.FixtureRequest) -> Engine:
    return Engine(model, tok, max_batch=8, decode_steps=request.param)


def reference(model: Transformer, tok: Tokenizer, ids: list[int]) -> torch.Tensor:
    """log-softmax [T-1, V] of a full forward, padding ids excluded as the engine excludes
    them from alternatives (their logprobs are still part of the normaliser)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, :-1].float()
    lsm = logits.log_softmax(-1)
    lsm[:, tok.vocab_size :] = -float("inf")
    return lsm


def test_prompt_logprobs_equal_the_scoring_helpers(
    engine: Engine, model: Transformer, tok: Tokenizer
) -> None:
    params = SamplingParams(
        max_new_tokens=0, prompt_logprobs=True, top_logprobs=3, temperature=0.0, n=2
    )
    outs = engine.generate(PROMPTS, params)  # ragged prompts prefilled as one batch
    for prompt, out in zip(PROMPTS, outs, strict=True):
        ids = engine.encode_prompt(prompt)
        with torch.no_grad():
            logits = model(torch.tensor([ids]))
            want = token_logprobs(logits, torch.tensor([ids]))[0]
        assert (logits.argmax(-1) >= tok.vocab_size).any()  # padding would win if not excluded
        assert len(out) == 2
        for c in out:  # nothing generated; every sample carries the prompt's scores
            assert (c.token_ids, c.text, c.finish_reason) == ([], "", "length")
            assert c.prompt_logprobs is not None and c.prompt_top_logprobs is not None
            torch.testing.assert_close(torch.tensor(c.prompt_logprobs), want, rtol=1e-5, atol=ATOL)
            ref = reference(model, tok, ids)
            values, top = ref.topk(3, dim=-1)
            assert [[t for t, _ in row] for row in c.prompt_top_logprobs] == top.tolist()
            got = torch.tensor([[v for _, v in row] for row in c.prompt_top_logprobs])
            torch.testing.assert_close(got, values, rtol=1e-5, atol=ATOL)
    assert not engine.has_work()  # score-only requests leave no slot behind


def test_top_logprobs_of_generated_tokens(
    engine: Engine, model: Transformer, tok: Tokenizer
) -> None:
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0, logprobs=True, top_logprobs=4)
    sampled = SamplingParams(
        max_new_tokens=12, temperature=1.0, seed=5, logprobs=True, top_logprobs=2
    )
    for params in (greedy, sampled):
        for prompt in PROMPTS[:2]:
            c = engine.generate([prompt], params)[0][0]
            ids = engine.encode_prompt(prompt)
            ref = reference(model, tok, ids + c.token_ids)[len(ids) - 1 :]
            assert c.top_logprobs is not None and c.logprobs is not None
            assert len(c.top_logprobs) == len(c.token_ids)
            values, top = ref.topk(params.top_logprobs, dim=-1)
            assert [[t for t, _ in row] for row in c.top_logprobs] == top.tolist()
            got = torch.tensor([[v for _, v in row] for row in c.top_logprobs])
            torch.testing.assert_close(got, values, rtol=1e-5, atol=ATOL)
            if params.temperature == 0:  # greedy: the chosen token is the first alternative
                assert c.token_ids == [row[0][0] for row in c.top_logprobs]
                assert c.logprobs == [row[0][1] for row in c.top_logprobs]  # exactly equal


def test_prompt_scores_with_generation_and_without_logprobs(engine: Engine) -> None:
    plain = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=5, temperature=0.0))
    scored = engine.generate(
        [PROMPTS[0]], SamplingParams(max_new_tokens=5, temperature=0.0, prompt_logprobs=True)
    )
    a, b = plain[0][0], scored[0][0]
    assert a.token_ids == b.token_ids and a.prompt_logprobs is None
    assert b.prompt_logprobs is not None and b.logprobs is None and b.top_logprobs is None
    assert len(b.prompt_logprobs) == len(engine.encode_prompt(PROMPTS[0])) - 1


@pytest.mark.parametrize(
    "params, field",
    [
        (SamplingParams(max_new_tokens=0), "max_new_tokens"),
        (SamplingParams(max_new_tokens=-1, prompt_logprobs=True), "max_new_tokens"),
        (SamplingParams(top_logprobs=2), "top_logprobs"),
        (SamplingParams(logprobs=True, top_logprobs=-1), "top_logprobs"),
    ],
)
def test_bad_scoring_params(engine: Engine, params: SamplingParams, field: str) -> None:
    with pytest.raises(GenerationError) as e:
        engine.generate(["x"], params)
    assert e.value.field == field
