"""Task lists in configs: lists of specs; comma strings (old stage.json records) still load."""

from __future__ import annotations

import dataclasses

from lmlab.config import PPOConfig, SFTConfig, build_config, task_list


def test_task_list_splits_entries_and_strings() -> None:
    assert task_list(["chain", "arith:3:op=add"]) == ["chain", "arith:3:op=add"]
    assert task_list(["chain,strings", " icl:k=2 "]) == ["chain", "strings", "icl:k=2"]
    assert task_list("chain, strings,,") == ["chain", "strings"]
    assert task_list([]) == []


def test_old_stage_records_with_comma_strings_load_as_lists() -> None:
    sft = build_config(SFTConfig, {"n_world": 40, "tasks": "arith,strings"})
    ppo = build_config(PPOConfig, {"tasks": "chain,strings", "iterations": 3})
    assert sft.tasks == ["arith", "strings"] and ppo.tasks == ["chain", "strings"]
    assert dataclasses.asdict(ppo)["tasks"] == ["chain", "strings"]  # recorded as a list now
    assert SFTConfig().tasks == ["arith", "chain", "countdown", "strings", "icl"]
