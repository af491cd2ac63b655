"""SFT: chat JSONL errors, the assistant-only mask, packing, overfitting a handful of chats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmlab.cli import main
from lmlab.config import DataConfig, RunConfig, SFTConfig, TrainConfig
from lmlab.data.tokenizer import char_tokenizer
from lmlab.model.transformer import Transformer
from lmlab.train.checkpoint import load_run, save_checkpoint
from lmlab.train.sft import (
    IGNORE,
    ChatBatches,
    SFTDataError,
    load_chats,
    masked_loss,
    pack,
    sft,
    split_chats,
    world_chats,
)
from tests.conftest import tiny_model_config

CHATS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}],
    [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ],
    [{"role": "user", "content": "color?"}, {"role": "assistant", "content": "blue sky"}],
    [
        {"role": "user", "content": "name?"},
        {"role": "assistant", "content": "lab"},
        {"role": "user", "content": "again?"},
        {"role": "assistant", "content": "lmlab"},
    ],
    [{"role": "user", "content": "cat"}, {"role": "assistant", "content": "meow"}],
    [{"role": "user", "content": "dog"}, {"role": "assistant", "content": "woof woof"}],
]


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def chat_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny run whose char tokenizer covers the chats and world text."""
    run = tmp_path_factory.mktemp("chat_base")
    text = json.dumps(CHATS) + "".join(map(chr, range(32, 127))) + "\n"
    tok = char_tokenizer([text])
    cfg = RunConfig(
        model=tiny_model_config(
            vocab_size=-(-tok.vocab_size // 64) * 64, context_length=64, d_model=64
        ),
        train=TrainConfig(max_steps=1),
        data=DataConfig(corpus="world:n=400", tokenizer="char", val_fraction=0.05),
    )
    torch.manual_seed(0)
    cfg.save(run / "config.json")
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, Transformer(cfg.model), None, {"step": 0, "tokens": 0})
    return run


def test_template_masks_exactly_the_assistant_tokens(chat_base: Path) -> None:
    _, tok, _ = load_run(chat_base)
    chat = CHATS[3]
    ids, mask = tok.encode_chat(chat)
    # rebuild the expected mask piece by piece: role token unmasked, reply + <|end|> masked
    expected = [False]
    for m in chat:
        body = len(tok.encode(m["content"])) + 1
        expected += [False] + [m["role"] == "assistant"] * body
    assert mask == expected
    trained = tok.decode([t for t, m in zip(ids, mask, strict=True) if m], skip_special=False)
    assert trained == "lab<|end|>lmlab<|end|>"
    rows = pack([(ids, mask)], 63, tok.pad_id)
    targets = rows.y[0][rows.y[0] != IGNORE].tolist()
    assert tok.decode(targets, skip_special=False) == "lab<|end|>lmlab<|end|>"


def test_packing_keeps_every_chat_and_only_assistant_targets(chat_base: Path) -> None:
    _, tok, _ = load_run(chat_base)
    examples = [tok.encode_chat(c) for c in CHATS]
    packed = pack(examples, 63, tok.pad_id, packed=True, seed=1)
    single = pack(examples, 63, tok.pad_id, packed=False)
    assert len(single) == len(CHATS) and len(packed) < len(CHATS)
    n_assistant = sum(sum(m[1:]) for _, m in examples)  # position 0 is never a target
    assert int((packed.y != IGNORE).sum()) == n_assistant == int((single.y != IGNORE).sum())
    long = ([tok.bos_id] * 100, [True] * 100)
    assert pack([*examples, long], 63, tok.pad_id).dropped == 1


def test_training_batches_are_fresh_packs_seeded_by_step(chat_base: Path) -> None:
    _, tok, _ = load_run(chat_base)
    examples = [tok.encode_chat(c) for c in CHATS]
    batches = ChatBatches(examples, 63, tok.pad_id, packed=True, seed=3)
    a, b = batches.batch(5, 0, 4), batches.batch(5, 0, 4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, batches.batch(6, 0, 4).x)
    assert a.x.shape == (4, 63)
    assert int((a.x == tok.bos_id).sum()) > 4  # several chats per row
    # targets are exactly the assistant tokens of the chats laid into the rows
    for row_x, row_y in zip(a.x.tolist(), a.y.tolist(), strict=True):
        starts = [i for i, t in enumerate(row_x) if t == tok.bos_id]
        for s, e in zip(starts, [*starts[1:], None], strict=True):
            piece = [t for t in row_x[s:e] if t != tok.pad_id]
            ex = next(ex for ex in examples if ex[0][: len(piece)] == piece)
            want = [t if m else IGNORE for t, m in zip(ex[0][1:], ex[1][1:], strict=True)]
            got = row_y[s : s + len(piece) - 1]
            assert got == want[: len(got)]


def test_masked_loss_ignores_non_targets() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(x, 8).float() * 10

    x = torch.tensor([[1, 2, 3]])
    perfect = masked_loss(Fixed(), x, torch.tensor([[1, IGNORE, IGNORE]]))
    wrong = masked_loss(Fixed(), x, torch.tensor([[1, 5, IGNORE]]))
    assert perfect < 1e-3 < wrong


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "malformed JSON"),
        ('["a"]', 'expected an object with a "messages" list'),
        ('{"messages": []}', 'non-empty "messages" list'),
        ('{"messages": [{"role": "user"}]}', 'message 0 needs string "role" and "content"'),
        ('{"messages": [{"role": "bot", "content": "x"}]}', "unknown role 'bot'"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "chat has no assistant turn"),
    ],
)
def test_bad_chat_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write_jsonl(tmp_path / "chats.jsonl", [{"messages": CHATS[0]}, "", line])
    with pytest.raises(SFTDataError, match=rf"chats\.jsonl:3: .*{message}"):
        load_chats(path)


def test_chat_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SFTDataError, match="does not exist"):
        load_chats(tmp_path / "missing.jsonl")
    with pytest.raises(SFTDataError, match="holds no chats"):
        load_chats(_write_jsonl(tmp_path / "empty.jsonl", [""]))
    assert load_chats(_write_jsonl(tmp_path / "ok.jsonl", [{"messages": c} for c in CHATS])) == (
        CHATS
    )


def test_world_chats_have_both_styles() -> None:
    chats = world_chats(200, seed=0)
    assert chats == world_chats(200, seed=0)
    cot = [c for c in chats if c[0]["content"].endswith("Think step by step.")]
    direct = [c for c in chats if not c[0]["content"].endswith("Think step by step.")]
    assert 50 < len(cot) < 150
    assert all("\nAnswer: " in c[1]["content"] for c in cot)
    assert all("Answer:" not in c[1]["content"] for c in direct)
    assert all("Answer:" not in c[1]["content"] for c in world_chats(50, style="direct"))
    train, val = split_chats(chats, 0.1, seed=0)
    assert len(train) + len(val) == 200 and val and train
    assert not {json.dumps(c) for c in val} & {json.dumps(c) for c in train}


def test_world_chats_follow_a_mix() -> None:
    mix = "arith=1:icl=1:arith.op=add:arith.digits=3:arith.cot=1:icl.k=8:icl.cot=0"
    chats = world_chats(60, seed=0, mix=mix)
    sums = [c for c in chats if " + " in c[0]["content"]]
    episodes = [c for c in chats if " -> " in c[0]["content"]]
    assert len(sums) + len(episodes) == 60 and sums and episodes
    assert all(c[0]["content"].endswith("Think step by step.") for c in sums)
    assert all("Answer:" not in c[1]["content"] for c in episodes)
    with pytest.raises(SFTDataError, match="chat mix"):
        world_chats(4, mix="n=10:arith=1")


@pytest.mark.slow
def test_sft_overfits_a_handful_of_chats(chat_base: Path, tmp_path: Path) -> None:
    from lmlab.infer import Engine, SamplingParams

    data = _write_jsonl(tmp_path / "chats.jsonl", [{"messages": c} for c in CHATS])
    out = tmp_path / "sft"
    train = TrainConfig(
        batch_size=4,
        max_steps=120,
        lr=1e-2,
        min_lr=1e-3,
        warmup_steps=5,
        eval_every=60,
        eval_iters=1,
        log_every=20,
        device="cpu",
    )
    last = sft(
        chat_base, out, train, SFTConfig(data=str(data), val_fraction=0.1), show_progress=False
    )
    assert last["train_loss"] < 0.05
    model, tok, cfg = load_run(out)
    assert cfg.model == RunConfig.load(chat_base / "config.json").model
    info = json.loads((out / "sft.json").read_text())
    train_chats, _ = split_chats(CHATS, 0.1, 0)
    assert info["train_chats"] == len(train_chats)
    engine = Engine(model, tok)
    for chat in train_chats:
        first = next(i for i, m in enumerate(chat) if m["role"] == "assistant")
        ids, _ = tok.encode_chat(chat[:first], add_generation_prompt=True)
        reply = chat[first]["content"]
        got = engine.generate([ids], SamplingParams(max_new_tokens=12, temperature=0))[0][0]
        assert got.text == reply
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 120 and "val_loss" in rows[-1]


def test_sft_on_world_with_replay_measures_forgetting(chat_base: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    train = TrainConfig(batch_size=2, max_steps=3, eval_every=3, eval_iters=1, device="cpu")
    cfg = SFTConfig(n_world=40, replay=0.5, replay_rows=2, tasks="arith,strings")
    last = sft(chat_base, out, train, cfg, show_progress=False)
    info = json.loads((out / "sft.json").read_text())
    assert info["pretrain_val_loss_before"] > 0 and info["pretrain_val_loss_after"] > 0
    assert last["pretrain_val_loss_after"] == info["pretrain_val_loss_after"]
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert "replay_loss" in rows[-1] and "chat_loss" in rows[-1]
    load_run(out)


def test_cli_sft_bad_input_loses_nothing(
    chat_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"messages": CHATS[0]}, "{oops"])
    out = tmp_path / "out"
    assert main(["sft", str(chat_base), "--data", str(bad), "--out", str(out), "--quiet"]) == 2
    assert "bad.jsonl:2: malformed JSON" in capsys.readouterr().err
    assert not out.exists()
    assert main(["sft", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "is not an lmlab run" in capsys.readouterr().err
    assert not out.exists()
