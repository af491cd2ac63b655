"""SFT: chat JSONL errors, the assistant-only mask, packing, overfitting a handful of chats."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lmlab.cli import main
from lmlab.config import DataConfig, RunConfig, SFTConfig, TrainConfig
from lmlab.data.tokenizer import ROLES, Tokenizer, char_tokenizer
from lmlab.model.load import load_run
from lmlab.model.transformer import Transformer
from lmlab.runs import CheckpointError, read_metrics, read_stage
from lmlab.train.checkpoint import save_checkpoint
from lmlab.train.sft import (
    IGNORE,
    ChatBatches,
    Sample,
    SFTDataError,
    encode_sample,
    load_chats,
    masked_loss,
    pack,
    resume,
    sft,
    split_chats,
    world_chats,
)
from tests.conftest import run_killed, tiny_model_config

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


SKY_USER = {"role": "user", "content": "What color is the sky?"}
SKY_REPLY = {"role": "assistant", "content": "It is blue."}
TRL_ROWS: dict[str, dict[str, Any]] = {  # TRL's documented example of each SFT format
    "text": {"text": "The sky is blue."},
    "messages": {"messages": [SKY_USER, SKY_REPLY]},
    "prompt-completion": {"prompt": "The sky is", "completion": " blue."},
    "conv-prompt-completion": {"prompt": [SKY_USER], "completion": [SKY_REPLY]},
}
SKY_CHAT = "<|bos|><|user|>What color is the sky?<|end|><|assistant|>It is blue.<|end|>"
RENDERED = {  # format: (the example as the model reads it, the tokens the loss is taken on)
    "text": ("<|bos|>The sky is blue.", "The sky is blue."),
    "messages": (SKY_CHAT, "It is blue.<|end|>"),
    "prompt-completion": (
        "<|bos|><|user|>The sky is<|end|><|assistant|> blue.<|end|>",
        " blue.<|end|>",
    ),
    "conv-prompt-completion": (SKY_CHAT, "It is blue.<|end|>"),
}


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


def _trained(tok: Tokenizer, example: tuple[list[int], list[bool]]) -> str:
    ids, mask = example
    return tok.decode([t for t, m in zip(ids, mask, strict=True) if m], skip_special=False)


@pytest.mark.parametrize("fmt", list(TRL_ROWS))
def test_each_trl_format_is_trained_on_its_completion_only(
    fmt: str, chat_base: Path, tmp_path: Path
) -> None:
    _, tok, _ = load_run(chat_base)
    [sample] = load_chats(_write_jsonl(tmp_path / "data.jsonl", [TRL_ROWS[fmt]]))
    ids, mask = encode_sample(tok, sample)
    whole, trained = RENDERED[fmt]
    assert tok.decode(ids, skip_special=False) == whole
    assert _trained(tok, (ids, mask)) == trained
    rows = pack([(ids, mask)], 63, tok.pad_id)  # the targets the loss sees
    assert tok.decode(rows.y[0][rows.y[0] != IGNORE].tolist(), skip_special=False) == trained


def test_a_prompts_assistant_turns_are_not_trained_on(chat_base: Path, tmp_path: Path) -> None:
    """The same conversation as `messages` trains on every reply; as a conversational prompt and
    completion, on the completion alone (the tokens are the same)."""
    _, tok, _ = load_run(chat_base)
    chat = CHATS[3]
    rows = [{"messages": chat}, {"prompt": chat[:3], "completion": chat[3:]}]
    as_chat, as_completion = (
        encode_sample(tok, s) for s in load_chats(_write_jsonl(tmp_path / "d.jsonl", rows))
    )
    assert as_chat[0] == as_completion[0]
    assert _trained(tok, as_chat) == "lab<|end|>lmlab<|end|>"
    assert _trained(tok, as_completion) == "lmlab<|end|>"


def test_sft_trains_on_a_file_mixing_the_trl_formats(chat_base: Path, tmp_path: Path) -> None:
    data = _write_jsonl(tmp_path / "mixed.jsonl", list(TRL_ROWS.values()))
    train = TrainConfig(batch_size=2, max_steps=2, eval_every=2, eval_iters=1, device="cpu")
    sft(chat_base, tmp_path / "sft", train, SFTConfig(data=str(data)), show_progress=False)
    info = json.loads((tmp_path / "sft" / "sft.json").read_text())
    _, tok, _ = load_run(chat_base)
    train_samples, val_samples = split_chats(load_chats(data), 0.05, 0)
    assert (info["train_chats"], info["val_chats"]) == (len(train_samples), len(val_samples))
    assert info["trained_tokens"] == sum(sum(encode_sample(tok, s)[1]) for s in train_samples)
    assert read_metrics(tmp_path / "sft")[-1]["step"] == 2


def test_tool_messages_follow_the_chat_template(chat_base: Path, tmp_path: Path) -> None:
    """A tool message is read exactly when the template has a tool role, and never trained on."""
    _, tok, _ = load_run(chat_base)
    tool = {"role": "tool", "content": "sky_color() -> blue"}
    call = {"role": "assistant", "content": "sky_color()"}
    path = _write_jsonl(tmp_path / "d.jsonl", [{"messages": [SKY_USER, call, tool, SKY_REPLY]}])
    if "tool" not in ROLES:
        with pytest.raises(
            SFTDataError, match=r"d\.jsonl:1: messages\[2\] has unknown role 'tool'"
        ):
            load_chats(path)
        return
    [sample] = load_chats(path)
    assert _trained(tok, encode_sample(tok, sample)) == "sky_color()<|end|>It is blue.<|end|>"


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
        ('["a"]', 'expected an object with "messages", "text", or "prompt" and "completion"'),
        ('{"messages": []}', '"messages" must be a non-empty list of messages'),
        ('{"messages": [{"role": "user"}]}', 'messages\\[0\\] needs string "role" and "content"'),
        ('{"messages": [{"role": "bot", "content": "x"}]}', "unknown role 'bot'"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "chat has no assistant turn"),
        ('{"text": ""}', '"text" must be a non-empty string'),
        ('{"text": 3}', '"text" must be a non-empty string'),
        ('{"prompt": "The sky is"}', "a prompt-only row has no completion to train on"),
        (
            '{"prompt": "q", "completion": [{"role": "assistant", "content": "a"}]}',
            "must both be strings",
        ),
        ('{"prompt": [], "completion": []}', '"prompt" must be a non-empty list'),
        (
            '{"prompt": [{"role": "user", "content": "q"}], '
            '"completion": [{"role": "user", "content": "a"}]}',
            "completion has no assistant message",
        ),
        ('{"chosen": "a", "rejected": "b"}', r"a preference row \(chosen/rejected\)"),
        ('{"text": "a", "messages": []}', "not messages and text"),
        ('{"id": 1}', 'expected an object with "messages", "text"'),
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
    ok = _write_jsonl(tmp_path / "ok.jsonl", [{"messages": c} for c in CHATS])
    assert load_chats(ok) == [Sample(c) for c in CHATS]


def test_world_chats_have_both_styles() -> None:
    chats = world_chats(200, seed=0)
    assert chats == world_chats(200, seed=0)
    cot = [c for c in chats if c[0]["content"].endswith("Think step by step.")]
    direct = [c for c in chats if not c[0]["content"].endswith("Think step by step.")]
    assert 50 < len(cot) < 150
    assert all("\nAnswer: " in c[1]["content"] for c in cot)
    assert all("Answer:" not in c[1]["content"] for c in direct)
    assert all("Answer:" not in c[1]["content"] for c in world_chats(50, style="direct"))
    train, val = split_chats([Sample(c) for c in chats], 0.1, seed=0)
    assert len(train) + len(val) == 200 and val and train
    assert not {json.dumps(c.messages) for c in val} & {json.dumps(c.messages) for c in train}


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
    ).summary
    assert last["train_loss"] < 0.05
    model, tok, cfg = load_run(out)
    assert cfg.model == RunConfig.load(chat_base / "config.json").model
    info = json.loads((out / "sft.json").read_text())
    train_chats, _ = split_chats([Sample(c) for c in CHATS], 0.1, 0)
    assert info["train_chats"] == len(train_chats)
    engine = Engine(model, tok)
    for chat in (s.messages for s in train_chats):
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
    last = sft(chat_base, out, train, cfg, show_progress=False).summary
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


def _sft_rows(run: Path) -> list[tuple[Any, ...]]:
    keys = ("step", "train_loss", "val_loss", "chat_loss", "replay_loss", "lr")
    return [tuple(r.get(k) for k in keys) for r in read_metrics(run)]


def _untimed(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if not k.endswith("_per_s")}


def test_sft_killed_and_resumed_equals_uninterrupted(chat_base: Path, tmp_path: Path) -> None:
    """8 straight steps == SIGKILL inside step 7 (after the step-4 checkpoint), then `resume`:
    the same metrics row for row, and the same forgetting figures (the loss before SFT is read
    back from stage.json, not measured again on fine-tuned weights)."""
    train = TrainConfig(
        batch_size=2, max_steps=8, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_every=4,
        eval_iters=1, ckpt_every=4, log_every=1, seed=5, device="cpu",
    )  # fmt: skip
    cfg = SFTConfig(n_world=40, replay=0.5, replay_rows=2, tasks="arith,strings")
    sft(chat_base, tmp_path / "straight", train, cfg, show_progress=False)

    # masked_loss runs once per step and once per evaluation: calls 1-4 are steps 1-4, call 5
    # the step-4 evaluation, 6-7 steps 5-6, so call 8 is inside step 7
    code = (
        "from pathlib import Path; from lmlab.config import SFTConfig, TrainConfig;"
        "from lmlab.train.sft import sft;"
        f"sft(Path({str(chat_base)!r}), Path({str(tmp_path / 'killed')!r}), "
        f"TrainConfig(**{dataclasses.asdict(train)!r}), SFTConfig(**{dataclasses.asdict(cfg)!r}),"
        " show_progress=False)"
    )
    run_killed("lmlab.train.sft", "masked_loss", 8, code)
    killed = tmp_path / "killed"
    assert _sft_rows(killed)[-1][0] == 6
    assert read_stage(killed)["status"] == "running"
    result = resume(killed, show_progress=False)
    assert _sft_rows(killed) == _sft_rows(tmp_path / "straight")
    straight = read_stage(tmp_path / "straight")["summary"]
    assert _untimed(result.summary) == _untimed(straight)
    assert result.summary["pretrain_val_loss_before"] == straight["pretrain_val_loss_before"]
    assert read_stage(killed)["status"] == "done"


def test_sft_resume_refuses_another_stage_run(chat_base: Path) -> None:
    with pytest.raises(CheckpointError, match=r"has no stage\.json"):
        resume(chat_base, show_progress=False)
