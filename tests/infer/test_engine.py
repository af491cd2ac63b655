"""Tests for lmlab.infer.engine: cache exactness, continuous batching, sampling, stops, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lmlab.cli import main
from lmlab.data.tokenizer import Tokenizer, byte_tokenizer, char_tokenizer
from lmlab.infer import Completion, Engine, GenerationError, SamplingParams
from lmlab.infer.engine import Request, sample_tokens, stream_key
from lmlab.model.transformer import Transformer
from tests.conftest import CORPUS_TEXT, tiny_model_config

# Cached decode vs a full forward in float32: same math, different summation order.
ATOL = 2e-5


pytestmark = pytest.mark.usefixtures("one_thread")


PROMPTS = ["def f1(x):\n", "#", "    return x * 3 + ", "the quick brown fox jumps"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    # Byte-level: every output decodes prefix-stably (a random model also emits odd bytes).
    return byte_tokenizer()


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "smear"])
def model(tok: Tokenizer, request: pytest.FixtureRequest) -> Transformer:
    # A larger init than training uses makes the random model's next-token distribution peaked,
    # so greedy outputs vary and ties (which float noise could flip) do not occur.
    torch.manual_seed(0)
    cfg = tiny_model_config(
        vocab_size=-(-tok.vocab_size // 64) * 64,
        n_kv_head=2,
        init_std=0.3,
        context_length=96,
        smear=request.param,
    )
    model = Transformer(cfg).eval()
    if model.smear is not None:  # zero at init; a live gate makes every step need its `prev`
        with torch.no_grad():
            model.smear.normal_(0.0, 1.0)
    return model


@pytest.fixture(params=[1, 3], ids=["1-step", "3-step"])
def engine(model: Transformer, tok: Tokenizer, request: pytest.FixtureRequest) -> Engine:
    # 3 greedy decode steps per call (eager here; compiled engines default to 4) must give
    # exactly what single steps give: every test below runs on both.
    return Engine(model, tok, max_batch=8, decode_steps=request.param)


def greedy(new: int, **kw: Any) -> SamplingParams:
    return SamplingParams(max_new_tokens=new, temperature=0.0, ignore_eos=True, **kw)


def full_logits(model: Transformer, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0].float()


def test_cached_decode_matches_full_forward(engine: Engine, model: Transformer) -> None:
    """Every logit row the engine samples from equals a full uncached forward (atol 2e-5),
    for ragged prompts, n>1 siblings and a request that joins mid-way."""
    seen: list[tuple[Any, int, torch.Tensor]] = []
    advance = engine._advance

    def spy(rows: Any, logits: torch.Tensor, seqs: list[Any], done: list[Any], *rest: Any) -> None:
        for j, s in enumerate(seqs):
            if s is not None:
                seen.append((s, len(s.token_ids), logits[j].clone()))
        advance(rows, logits, seqs, done, *rest)

    engine._advance = spy  # type: ignore[method-assign]
    reqs = [engine.add_request(p, greedy(12 + 3 * i)) for i, p in enumerate(PROMPTS[:3])]
    reqs.append(engine.add_request(PROMPTS[3], SamplingParams(max_new_tokens=9, n=3, seed=1)))
    for _ in range(4):
        engine.step()
    reqs.append(engine.add_request("late", greedy(10)))
    while engine.has_work():
        engine.step()
    assert len(seen) == sum(len(s.token_ids) for r in reqs for s in r.seqs)
    seqs = {id(s): s for s, _, _ in seen}
    refs = {k: full_logits(model, s.request.prompt + s.token_ids) for k, s in seqs.items()}
    for s, k, row in seen:
        ref = refs[id(s)][len(s.request.prompt) - 1 + k]
        torch.testing.assert_close(row, ref, rtol=0, atol=ATOL)


def test_midway_join_gets_its_solo_tokens(
    engine: Engine, model: Transformer, tok: Tokenizer
) -> None:
    solo = Engine(model, tok, max_batch=8)
    alone_a = solo.generate([PROMPTS[0]], greedy(40))[0][0].token_ids
    alone_b = solo.generate([PROMPTS[2]], greedy(20))[0][0].token_ids
    a = engine.add_request(PROMPTS[0], greedy(40))
    for _ in range(11):
        engine.step()
    # the prefill's token, then `decode_steps` tokens a step
    assert len(a.seqs[0].token_ids) == 1 + 10 * engine.decode_steps
    b = engine.add_request(PROMPTS[2], greedy(20))
    while not (a.finished and b.finished):
        engine.step()
    assert b.completions(tok)[0].token_ids == alone_b
    assert a.completions(tok)[0].token_ids == alone_a
    assert len(set(alone_a)) > 3  # the model does not just repeat one token


def test_multi_step_decoding_equals_single_steps(model: Transformer, tok: Tokenizer) -> None:
    """Tokens, logprobs and finish reasons agree exactly with single steps: for a stop token that
    falls inside a multi-step call (its later tokens are dropped), lengths that are no multiple
    of the steps (the tail runs single steps) and a sampled request beside greedy ones (single
    steps while it runs)."""
    single = Engine(model, tok, max_batch=8)
    multi = Engine(model, tok, max_batch=8, decode_steps=4)
    full = single.generate([PROMPTS[0]], greedy(30))[0][0].token_ids
    # Alone, the request gets token 0 from its prefill and tokens 4c+1..4c+4 from call c: pick
    # a stop token whose first appearance is not the first token of a call.
    at = next(i for i in range(5, 30) if i % 4 != 1 and full.index(full[i]) == i)
    batches = [
        [(PROMPTS[0], greedy(30, logprobs=True, stop_token_ids=[full[at]]))],
        [
            (PROMPTS[1], greedy(13, logprobs=True)),
            (PROMPTS[2], greedy(7, logprobs=True)),
            (PROMPTS[3], SamplingParams(max_new_tokens=6, temperature=0.9, seed=2, logprobs=True)),
        ],
    ]
    for batch in batches:
        outs = []
        for eng in (single, multi):
            reqs = [eng.add_request(p, sp) for p, sp in batch]
            while eng.has_work():
                eng.step()
            outs.append([r.completions(tok)[0] for r in reqs])
        want, got = outs
        for c, w in zip(got, want, strict=True):
            assert (c.token_ids, c.finish_reason) == (w.token_ids, w.finish_reason)
            assert c.logprobs is not None and w.logprobs is not None
            torch.testing.assert_close(c.logprobs, w.logprobs, rtol=0, atol=1e-6)
        if batch is batches[0]:
            assert want[0].finish_reason == "stop" and len(want[0].token_ids) == at + 1
    with pytest.raises(GenerationError, match=r"decode_steps must be in \[1, 64\]"):
        Engine(model, tok, decode_steps=0)


def test_batched_greedy_equals_one_by_one(engine: Engine) -> None:
    batched = engine.generate(PROMPTS, greedy(16))
    for p, outs in zip(PROMPTS, batched, strict=True):
        assert outs[0].token_ids == engine.generate([p], greedy(16))[0][0].token_ids
        assert outs[0].finish_reason == "length" and len(outs[0].token_ids) == 16


def test_finished_rows_free_their_slots(model: Transformer, tok: Tokenizer) -> None:
    eng = Engine(model, tok, max_batch=2)
    outs = eng.generate(PROMPTS, greedy(5))  # 4 requests through 2 slots
    assert [len(o[0].token_ids) for o in outs] == [5] * 4
    assert eng.slots == [None, None] and not eng.has_work()
    short = eng.add_request("a", greedy(2))
    long = eng.add_request("b", greedy(8))
    third = eng.add_request("c", greedy(3))
    eng.step()  # prefill of the two that fit
    assert third.seqs[0].slot == -1
    eng.step()  # `short` finishes; its slot is free at once and `third` joins in the same step
    assert short.finished and third.seqs[0].slot == short.seqs[0].slot
    while eng.has_work():
        eng.step()
    assert long.finished and third.finished


def run_to_end(engine: Engine, *reqs: Request) -> list[list[Completion]]:
    while not all(r.finished for r in reqs):
        engine.step()
    return [r.completions(engine.tokenizer) for r in reqs]


def test_same_seed_same_samples(engine: Engine, model: Transformer, tok: Tokenizer) -> None:
    p = SamplingParams(max_new_tokens=20, temperature=0.9, top_k=20, top_p=0.9, seed=7, n=2)
    first = engine.generate(PROMPTS[:2], p)
    assert engine.generate(PROMPTS[:2], p) == first
    # A sample depends on its seed and stream only, not on what else is in the batch: the
    # second prompt's samples are streams 2 and 3 of the seed.
    solo = Engine(model, tok)
    assert run_to_end(solo, solo.add_request(PROMPTS[1], p, first_stream=2))[0] == first[1]
    assert run_to_end(solo, solo.add_request(PROMPTS[1], p))[0] != first[1]  # streams 0, 1
    other = engine.generate(PROMPTS[:2], SamplingParams(**{**p.__dict__, "seed": 8}))
    assert other != first


def test_prompts_of_one_call_draw_independent_samples(engine: Engine) -> None:
    """Prompt i's sample j is stream i * n + j of the seed: the same prompt twice gives two
    different samples, exactly those of one prompt with n=2, and the call is reproducible."""
    p = SamplingParams(max_new_tokens=24, temperature=1.0, ignore_eos=True, seed=11)
    twice = engine.generate([PROMPTS[3], PROMPTS[3]], p)
    assert twice[0][0].token_ids != twice[1][0].token_ids
    pair = engine.generate([PROMPTS[3]], SamplingParams(**{**p.__dict__, "n": 2}))[0]
    assert [twice[0][0], twice[1][0]] == pair
    assert engine.generate([PROMPTS[3], PROMPTS[3]], p) == twice
    # A single request keeps streams 0..n-1 (the server sends one per HTTP call).
    assert run_to_end(engine, engine.add_request(PROMPTS[3], p))[0][0] == twice[0][0]
    with pytest.raises(GenerationError, match="first_stream must be >= 0"):
        engine.add_request(PROMPTS[3], p, first_stream=-1)


def test_seeded_samples_do_not_depend_on_the_batch(
    engine: Engine, model: Transformer, tok: Tokenizer
) -> None:
    """The same seeded call alone, through 2 slots (requests queue and join as others leave),
    and as one request joining mid-way amid greedy and differently seeded requests."""
    p = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, ignore_eos=True, seed=4, n=2)
    want = Engine(model, tok, max_batch=8).generate(PROMPTS, p)
    assert Engine(model, tok, max_batch=2).generate(PROMPTS, p) == want
    busy = engine.add_request(PROMPTS[0], greedy(30))
    for _ in range(3):
        engine.step()
    joined = engine.add_request(PROMPTS[2], p, first_stream=2 * p.n)
    engine.step()
    other = engine.add_request(PROMPTS[1], SamplingParams(**{**p.__dict__, "seed": 5}))
    assert run_to_end(engine, busy, joined, other)[1] == want[2]


@pytest.mark.parametrize("init_std", [0.3, 0.02], ids=["peaked", "flat"])
def test_different_prompts_agree_at_chance(tok: Tokenizer, init_std: float) -> None:
    """Two different prompts of one seeded call pick the same sampled token about as often as
    independent draws would: at step t, with probability sum_v p1(v) p2(v) (the chance rate,
    from the model's own distributions). When every prompt shared the noise they agreed at 24%
    of the steps against a chance of 0.6% (peaked), and at 99% against 0.4% (flat: an init of
    the usual size, whose distributions are near uniform)."""
    torch.manual_seed(0)
    vocab = -(-tok.vocab_size // 64) * 64
    cfg = tiny_model_config(vocab_size=vocab, n_kv_head=2, init_std=init_std, context_length=96)
    model = Transformer(cfg).eval()
    engine = Engine(model, tok, max_batch=16)
    prompts = [f"{i}{PROMPTS[i % 4]}" for i in range(16)]
    p = SamplingParams(max_new_tokens=48, temperature=1.0, ignore_eos=True, seed=3)
    outs = [o[0].token_ids for o in engine.generate(prompts, p)]
    agree, chance = [], []
    for a, b in zip(range(0, 16, 2), range(1, 16, 2), strict=True):  # disjoint pairs
        probs = []
        for i in (a, b):
            ids = engine.encode_prompt(prompts[i])
            logits = full_logits(model, ids + outs[i])[len(ids) - 1 : -1, : tok.vocab_size]
            probs.append(logits.softmax(-1))
        chance += (probs[0] * probs[1]).sum(-1).tolist()
        agree += [float(x == y) for x, y in zip(outs[a], outs[b], strict=True)]
    n = len(agree)
    measured, expected = sum(agree) / n, sum(chance) / n
    # Given the past, each agreement is a Bernoulli(chance_t) draw, so the sum's variance is
    # sum_t chance_t (1 - chance_t): allow 4 standard errors.
    se = sum(c * (1 - c) for c in chance) ** 0.5 / n
    assert abs(measured - expected) < 4 * se
    # The test resolves an excess agreement of 2 points.
    assert 4 * se < 0.02


def test_n_samples_share_a_prompt(engine: Engine) -> None:
    outs = engine.generate(["def "], SamplingParams(max_new_tokens=12, n=5, seed=0))[0]
    assert len(outs) == 5
    assert all(isinstance(o, Completion) and o.prompt_tokens == 5 for o in outs)
    assert len({tuple(o.token_ids) for o in outs}) > 1
    greedy_outs = engine.generate(["def "], greedy(12, n=3))[0]
    solo = engine.generate(["def "], greedy(12))[0][0]
    assert all(o.token_ids == solo.token_ids for o in greedy_outs)


def test_stop_strings_straddling_tokens(engine: Engine, tok: Tokenizer) -> None:
    if engine.model.cfg.smear:
        pytest.skip("needs printable greedy text, which only the plain random model writes")
    full = engine.generate([PROMPTS[0]], greedy(30))[0][0]
    # three one-byte characters = three tokens of the byte tokenizer, after the first few
    start = next(i for i in range(4, 27) if len(tok.encode(full.text[i : i + 3])) == 3)
    stop = full.text[start : start + 3]
    cut = full.text.index(stop)
    out = engine.generate([PROMPTS[0]], greedy(30, stop=["never-there", stop]))[0][0]
    assert out.text == full.text[:cut] and out.finish_reason == "stop"
    # token_ids keep everything up to the token that completed the stop string
    k = next(k for k in range(31) if stop in tok.decode(full.token_ids[:k]))
    assert out.token_ids == full.token_ids[:k]
    assert stop not in tok.decode(full.token_ids[: k - 1])  # it straddled tokens k-3..k-1
    pieces = list(engine.stream(PROMPTS[0], greedy(30, stop=[stop])))
    assert "".join(pieces) == out.text


def test_stop_token_ids_and_eos(engine: Engine, tok: Tokenizer) -> None:
    full = engine.generate([PROMPTS[2]], greedy(20))[0][0]
    t = full.token_ids[4]
    k = full.token_ids.index(t)
    out = engine.generate([PROMPTS[2]], greedy(20, stop_token_ids=[t], logprobs=True))[0][0]
    assert out.finish_reason == "stop" and out.token_ids == full.token_ids[: k + 1]
    assert out.text == tok.decode(full.token_ids[:k])  # the stop token is not in the text
    assert out.logprobs is not None and len(out.logprobs) == k + 1
    assert engine.add_request("x", SamplingParams()).stop_ids == {tok.end_id}
    assert engine.add_request("x", SamplingParams(ignore_eos=True)).stop_ids == set()


def test_logprobs_sum_to_sequence_loglik(engine: Engine, model: Transformer) -> None:
    p = SamplingParams(max_new_tokens=15, temperature=0.8, top_p=0.9, seed=3, logprobs=True)
    out = engine.generate([PROMPTS[1]], p)[0][0]
    prompt = engine.encode_prompt(PROMPTS[1])
    logp = full_logits(model, prompt + out.token_ids).log_softmax(-1)
    ref = logp[len(prompt) - 1 : -1].gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
    assert out.logprobs is not None
    torch.testing.assert_close(torch.tensor(out.logprobs), ref, rtol=0, atol=1e-4)
    assert abs(sum(out.logprobs) - float(ref.sum())) < 1e-3


def test_sampler_distribution_and_filters() -> None:
    """The hashed Gumbel-max draws follow softmax(logits / T), restricted by the filters."""
    n, V = 40000, 6
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]]).expand(n, V)
    keys = torch.arange(n) * 7919 % 2**31
    zeros = torch.zeros(n, dtype=torch.long)

    def draw(
        t: float = 1.0, k: int = V, p: float = 1.0, m: float = 0.0, step: int = 0
    ) -> torch.Tensor:
        full = torch.full((n,), 1.0)
        return sample_tokens(
            logits, full * t, torch.full((n,), k), full * p, full * m, keys, zeros + step
        )

    def freq(x: torch.Tensor) -> torch.Tensor:
        return torch.bincount(x, minlength=V).float() / n

    probs = (logits[0] / 0.7).softmax(-1)
    torch.testing.assert_close(freq(draw(t=0.7)), probs, rtol=0, atol=0.01)
    top3 = logits[0, :3].softmax(-1)
    torch.testing.assert_close(freq(draw(k=3))[:3], top3, rtol=0, atol=0.01)
    assert freq(draw(k=3))[3:].sum() == 0
    base = logits[0].softmax(-1)  # 0.561, 0.206, 0.125, 0.076, ...
    assert set(draw(p=0.75).tolist()) == {0, 1}  # 0.561 < 0.75 <= 0.767
    nucleus = freq(draw(p=0.8))
    torch.testing.assert_close(nucleus[:3], base[:3] / base[:3].sum(), rtol=0, atol=0.01)
    assert nucleus[3:].sum() == 0
    assert set(draw(m=0.2).tolist()) == {0, 1, 2}  # 0.125 / 0.561 > 0.2 > 0.076 / 0.561
    assert base[2] / base[0] > 0.2 > base[3] / base[0]
    assert set(draw(t=0.0).tolist()) == {0}
    assert torch.equal(draw(step=1), draw(step=1))
    assert (draw(step=1) != draw(step=2)).float().mean() > 0.3  # fresh noise at every step


def test_streams_of_a_seed_draw_independently() -> None:
    """Two streams draw the same token at the chance rate sum_v p(v)^2 from one distribution
    p: neighbouring streams of a seed (prompt i and i+1 of a call), streams n apart (sample j
    of neighbouring prompts) and the same stream of neighbouring seeds."""
    S, T = 4000, 16
    probs = torch.tensor([2.0, 1.0, 0.5, 0.0]).softmax(-1)
    chance = float((probs**2).sum())  # 0.40
    logits = probs.log().expand(S, 4)
    ones = torch.ones(S)

    def draws(keys: list[int]) -> torch.Tensor:
        k = torch.tensor(keys)
        return torch.stack(
            [
                sample_tokens(logits, ones, ones.long() * 4, ones, 0 * ones, k, ones.long() * t)
                for t in range(T)
            ]
        )

    base = draws([stream_key(9, i) for i in range(S)])
    pairs = {
        "next stream": draws([stream_key(9, i + 1) for i in range(S)]),
        "4 streams on": draws([stream_key(9, i + 4) for i in range(S)]),
        "next seed": draws([stream_key(10, i) for i in range(S)]),
    }
    se = (chance * (1 - chance) / (S * T)) ** 0.5  # 0.0019
    for name, other in pairs.items():
        agree = float((base == other).float().mean())
        assert abs(agree - chance) < 4 * se, (name, agree, chance)
    marginal = torch.bincount(base.flatten(), minlength=4).float() / (S * T)
    torch.testing.assert_close(marginal, probs, rtol=0, atol=0.01)


def test_stream_pieces_join_to_the_completion(engine: Engine) -> None:
    p = SamplingParams(max_new_tokens=25, temperature=1.0, seed=5)
    pieces = list(engine.stream(PROMPTS[3], p))
    assert len(pieces) > 1
    assert "".join(pieces) == engine.generate([PROMPTS[3]], p)[0][0].text


def test_stream_holds_back_byte_fallback_runs() -> None:
    """A char tokenizer decodes a run of <0xHH> tokens as a whole (or as one U+FFFD per byte
    when the run is not valid UTF-8), so a later byte can change earlier text: the stream must
    wait for the run to end."""
    tok = char_tokenizer([CORPUS_TEXT])
    torch.manual_seed(0)
    cfg = tiny_model_config(vocab_size=-(-tok.vocab_size // 64) * 64, init_std=0.3)
    eng = Engine(Transformer(cfg).eval(), tok)
    for seed in range(3):
        p = SamplingParams(max_new_tokens=30, seed=seed, stop=["e"])
        final = eng.generate(["x"], p)[0][0]
        assert "".join(eng.stream("x", p)) == final.text
    ids = eng.generate(["x"], SamplingParams(max_new_tokens=30, seed=0))[0][0].token_ids
    assert sum(t in eng._byte_ids for t in ids) > 3  # the case is exercised


def test_chat_uses_the_template(engine: Engine, tok: Tokenizer) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    out = engine.chat(msgs, greedy(6))  # type: ignore[arg-type]
    ids, _ = tok.encode_chat(msgs, add_generation_prompt=True)  # type: ignore[arg-type]
    assert out.prompt_tokens == len(ids)
    assert out.token_ids == engine.generate([ids], greedy(6))[0][0].token_ids


def test_from_checkpoint(tiny_run: Path) -> None:
    eng = Engine.from_checkpoint(tiny_run)
    out = eng.generate(["def "], SamplingParams(max_new_tokens=4, seed=0))[0][0]
    assert len(out.token_ids) <= 4 and out.prompt_tokens == 5


@pytest.mark.parametrize(
    ("prompts", "params", "match"),
    [
        ([], SamplingParams(), "no prompts"),
        (["a"], SamplingParams(n=0), "n must be >= 1"),
        (["a"], SamplingParams(n=9), "max_batch"),
        (["a"], SamplingParams(top_p=0.0), "top_p"),
        (["a"], SamplingParams(top_p=1.5), "top_p"),
        (["a"], SamplingParams(temperature=-0.5), "temperature"),
        (["a"], SamplingParams(top_k=0), "top_k"),
        (["a"], SamplingParams(min_p=2.0), "min_p"),
        (["a"], SamplingParams(max_new_tokens=0), "max_new_tokens"),
        (["a"], SamplingParams(stop=5), "stop must be"),  # type: ignore[arg-type]
        (["a"], SamplingParams(stop=[1]), "stop must be"),  # type: ignore[list-item]
        (["a"], SamplingParams(stop=[""]), "stop must be"),
        (["a"], SamplingParams(stop_token_ids=[10**6]), "stop_token_ids"),
        ([[]], SamplingParams(), "empty"),
        ([[1, 10**6]], SamplingParams(), "outside the vocabulary"),
        ([3.5], SamplingParams(), "string or a list"),
        (["a" * 90], SamplingParams(max_new_tokens=10), "exceeds the context length 96"),
    ],
)
def test_bad_inputs(engine: Engine, prompts: Any, params: SamplingParams, match: str) -> None:
    with pytest.raises(GenerationError, match=match) as err:
        engine.generate(prompts, params)
    assert "\n" not in str(err.value)
    assert not engine.has_work()  # nothing was queued


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an lmlab run"):
        Engine.from_checkpoint(tmp_path)


def test_cli_generate_and_sample(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--prompt", "def ", "--max-new-tokens", "5", "--seed", "1"]
    assert main(["generate", str(tiny_run), *args, "--n", "2", "--top-p", "0.9"]) == 0
    assert capsys.readouterr().out.count("def ") >= 2
    assert main(["sample", str(tiny_run), *args]) == 0
    assert main(["generate", str(tiny_run), "--top-p", "0"]) == 2
    assert "error: top_p must be in (0, 1]" in capsys.readouterr().err
    assert main(["generate", str(tiny_run.parent)]) == 2


def test_cli_chat(tiny_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nagain\n"))
    assert main(["chat", str(tiny_run), "--max-new-tokens", "4", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("assistant>") == 2
    # Turns that no longer fit the 64-token context are dropped, oldest first.
    monkeypatch.setattr("sys.stdin", io.StringIO(("x" * 30 + "\n") * 3))
    args = ["chat", str(tiny_run), "--max-new-tokens", "20", "--system", "hi"]
    assert main(args) == 0
    assert capsys.readouterr().out.count("assistant>") == 3


@pytest.mark.slow
def test_warm_up_compiles_every_decode_graph_a_later_request_needs(tok: Tokenizer) -> None:
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = Transformer(tiny_model_config(vocab_size=tok.vocab_size)).eval()
    engine = Engine(model, tok, max_batch=4, compile=True)
    counters["stats"].clear()
    engine.warm_up()
    assert not engine.has_work()
    graphs = counters["stats"]["unique_graphs"]
    # one row and any number of rows, for a single step and for the multi-step call
    assert engine.decode_steps == 4
    assert graphs == 4
    engine.generate(PROMPTS[:3], SamplingParams(max_new_tokens=5, temperature=0.0))
    engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=5, temperature=0.0))
    # Nor do longer spans: only the batch and the span are dynamic (the cache is static).
    engine.generate(PROMPTS[:2], SamplingParams(max_new_tokens=40, temperature=0.0))
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.slow
def test_compiled_engines_over_different_models_keep_their_own_weights(tok: Tokenizer) -> None:
    """Each compiled engine has its own graphs (its weights are frozen into them and the
    guards on the model are dropped), so a second engine never runs the first one's."""
    cfg = tiny_model_config(vocab_size=tok.vocab_size, init_std=0.3)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(Transformer(cfg).eval())
    params = SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True)
    compiled = [Engine(m, tok, max_batch=4, compile=True) for m in models]
    plain = [Engine(m, tok, max_batch=4) for m in models]
    for prompts in (PROMPTS[:1], PROMPTS[:3]):
        want = [[c[0].token_ids for c in e.generate(prompts, params)] for e in plain]
        assert want[0] != want[1]
        assert [[c[0].token_ids for c in e.generate(prompts, params)] for e in compiled] == want


@pytest.mark.slow
def test_compiled_moe_engine_keeps_its_guards_and_generates_what_eager_does(
    tok: Tokenizer,
) -> None:
    """An MoE step breaks into several graphs (data-dependent dispatch) whose inner code the
    layers share: the engine must keep dynamo's guards on the modules to tell them apart."""
    from lmlab.config import MoEConfig

    torch.manual_seed(0)
    moe = MoEConfig(n_experts=4, top_k=2, n_shared=1)
    cfg = tiny_model_config(vocab_size=tok.vocab_size, init_std=0.3, n_kv_head=2, moe=moe)
    model = Transformer(cfg).eval()
    params = SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True)
    compiled = Engine(model, tok, max_batch=4, compile=True, max_seq_len=64)
    plain = Engine(model, tok, max_batch=4)
    for prompts in (PROMPTS[:1], PROMPTS[:3]):
        want = [c[0].token_ids for c in plain.generate(prompts, params)]
        assert [c[0].token_ids for c in compiled.generate(prompts, params)] == want
