"""The stage scaffold: one place decides device, rank and autocast; stage.json records a stage;
bad input writes nothing; scoring passes send their tensors to the model's device.

Device placement is checked on PyTorch's `meta` device, which every CPU has: a meta model
computes shapes only, and any tensor left on the CPU that meets it raises, so a scoring path
that forgets to move its inputs fails here even without a GPU.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from lmlab.config import SFTConfig, TrainConfig
from lmlab.model.heads import ScalarHeadModel
from lmlab.model.scoring import score_rows
from lmlab.model.transformer import Transformer
from lmlab.runs import CheckpointError, RunDirError, read_stage
from lmlab.train import dpo, reward, sft, stage
from lmlab.train.loop import autocast_for
from lmlab.train.ppo import rollout_logprobs
from tests.conftest import tiny_model_config

TRAIN = Path(__file__).parents[2] / "src" / "lmlab" / "train"
STAGE_MODULES = ("pretrain", "sft", "reward", "dpo", "grpo", "ppo")


def _meta_model(head: bool = False) -> torch.nn.Module:
    with torch.device("meta"):
        trunk = Transformer(tiny_model_config(context_length=32))
        return ScalarHeadModel(trunk) if head else trunk


@pytest.mark.parametrize("name", STAGE_MODULES)
def test_every_stage_starts_through_the_scaffold(name: str) -> None:
    """Each stage module calls start_stage and builds no Trainer or process group of its own,
    so the device, rank and autocast of every Trainer come from one place."""
    tree = ast.parse((TRAIN / f"{name}.py").read_text())
    calls = {
        node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    assert "start_stage" in calls
    assert not calls & {"Trainer", "init_distributed", "check_new_run_dir", "load_run"}


def test_reward_scores_go_to_the_models_device() -> None:
    model = _meta_model(head=True)
    scores = score_rows(model, [[1, 2, 3], [4, 5]], pad_id=0)
    assert scores.device.type == "meta" and scores.shape == (2,)


def test_dpo_reference_logprobs_go_to_the_models_device() -> None:
    rows = [([1, 2, 3, 4], [1, 2, 5], 2), ([1, 6, 7], [1, 6, 8, 9], 2)]
    chosen, rejected = dpo.reference_logprobs(_meta_model(), rows, pad_id=0)
    assert chosen.device.type == rejected.device.type == "meta" and chosen.shape == (2,)


def test_ppo_scoring_runs_on_the_models_device() -> None:
    ids = torch.randint(1, 60, (3, 10), device="meta")
    scored = rollout_logprobs(_meta_model(), _meta_model(), ids, temperature=0.7)
    assert scored.logp.device.type == scored.kl.device.type == "meta"


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_is_bf16_on_cuda_only() -> None:
    assert isinstance(autocast_for(torch.device("cpu")), type(autocast_for(torch.device("meta"))))
    on_cuda = autocast_for(torch.device("cuda"))
    assert isinstance(on_cuda, torch.autocast) and on_cuda.fast_dtype == torch.bfloat16


def test_stage_records_settings_status_and_summary(chat_run: Path, tmp_path: Path) -> None:
    train = TrainConfig(max_steps=2, batch_size=2, eval_every=2, eval_iters=1, warmup_steps=1)
    cfg = SFTConfig(n_world=20, tasks="arith")
    result = sft.sft(chat_run, tmp_path / "sft", train, cfg, show_progress=False)
    record = read_stage(tmp_path / "sft")
    assert record is not None
    assert record["stage"] == "sft" and record["base"] == str(chat_run)
    assert record["status"] == "done" and record["summary"] == result.summary
    assert record["settings"]["sft"]["n_world"] == 20 and record["seconds"] > 0
    assert stage.finished_summary(tmp_path / "sft") == result.summary


def test_bad_input_writes_nothing(chat_run: Path, tmp_path: Path) -> None:
    """Inputs are loaded and checked before anything is written to `out`."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a"}\n')
    train = TrainConfig(max_steps=1)
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        reward.train_reward_model(chat_run, bad, tmp_path / "rm", train, show_progress=False)
    assert not (tmp_path / "rm").exists()
    with pytest.raises(CheckpointError, match="not an lmlab run"):
        dpo.train_dpo(tmp_path / "nope", bad, tmp_path / "dpo", train, show_progress=False)
    assert not (tmp_path / "dpo").exists()


def test_an_occupied_output_is_refused_and_a_wrong_stage_not_resumed(
    chat_run: Path, tmp_path: Path
) -> None:
    train = TrainConfig(max_steps=2, batch_size=2, eval_every=2, eval_iters=1, warmup_steps=1)
    sft.sft(chat_run, tmp_path / "sft", train, SFTConfig(n_world=20, tasks="arith"), False)
    before = (tmp_path / "sft" / "stage.json").read_text()
    with pytest.raises(RunDirError, match="already holds a run"):
        sft.sft(chat_run, tmp_path / "sft", train, SFTConfig(n_world=20), False)
    with pytest.raises(CheckpointError, match="is a sft run, not a dpo run"):
        dpo.resume(tmp_path / "sft", show_progress=False)
    assert (tmp_path / "sft" / "stage.json").read_text() == before
