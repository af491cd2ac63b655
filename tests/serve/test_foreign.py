"""The server over an imported foreign checkpoint (Qwen2 layout, ChatML template): it answers a
chat through the checkpoint's own template, as transformers would render and generate it."""

from __future__ import annotations

from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

from lmlab.model.hf import import_hf  # noqa: E402
from tests.model.foreign import VOCAB, write_checkpoint  # noqa: E402
from tests.serve.conftest import live_server, make_server  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_server_answers_a_chat_with_the_checkpoints_template(tmp_path: Path) -> None:
    hf = write_checkpoint(tmp_path / "qwen2", "qwen2")
    run = import_hf(tmp_path / "qwen2", tmp_path / "run")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "qwen2")
    msgs = [{"role": "user", "content": "hello there"}]
    prompt = hf_tok.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"]
    assert hf_tok.decode(prompt).startswith("<|im_start|>system\nYou are a helpful assistant.")
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=10,
            do_sample=False,
            eos_token_id=hf_tok.convert_tokens_to_ids("<|im_end|>"),
            suppress_tokens=list(range(len(hf_tok), VOCAB)),
        )[0, len(prompt) :]
    app, _ = make_server(run, max_batch=2, max_tokens=10)
    with live_server(app) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, temperature=0)
    assert r.usage.prompt_tokens == len(prompt) and r.choices[0].message.content
    assert r.usage.completion_tokens == len(out)
    assert r.choices[0].message.content == hf_tok.decode(out, skip_special_tokens=True)
