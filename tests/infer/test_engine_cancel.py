"""`Engine.cancel`: a cancelled request leaves the engine at once (running or waiting), its slot
goes to the next request, a second cancel is a no-op, and the other requests run on unchanged."""

from __future__ import annotations

from pathlib import Path

from lmlab.infer import Engine, SamplingParams


def test_engine_cancel(tiny_run: Path) -> None:
    eng = Engine.from_checkpoint(tiny_run, max_batch=2)
    params = SamplingParams(max_new_tokens=20, temperature=0.0, ignore_eos=True)
    reqs = [eng.add_request(p, params) for p in ["a", "b", "c"]]
    eng.step()  # a and b take the two slots, c waits
    assert [r.seqs[0].slot >= 0 for r in reqs] == [True, True, False]
    eng.cancel(reqs[0])
    eng.cancel(reqs[2])
    assert reqs[0].finished and reqs[0].seqs[0].finish_reason == "cancelled"
    assert reqs[2].finished and not eng.waiting
    assert sum(s is not None for s in eng.slots) == 1
    eng.cancel(reqs[0])  # a second cancel is a no-op
    while eng.has_work():
        eng.step()
    assert reqs[1].seqs[0].finish_reason == "length"
    assert len(reqs[1].seqs[0].token_ids) == 20
