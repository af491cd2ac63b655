"""lm-evaluation-harness on lmlab, two ways, on local JSONL tasks (one `multiple_choice`, one
`generate_until`): lm-eval's `hf` model on an export of a run (what `lmlab evaluate` runs) and
lm-eval's `local-completions` against `lmlab serve` (log-likelihoods from completions' `echo` +
`logprobs`, generations from completions); the two give the same per-document scores and
outputs, and `lmlab evaluate` writes lm-eval's results JSON.

Needs the eval extra (`pip install 'lmlab[eval]'`, installed by the dev extra, so CI runs it);
skips with that reason when lm-eval is absent. No network: the tasks' data are files written
here, and every model is built here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from lmlab.cli import main
from lmlab.config import RunConfig, TrainConfig
from lmlab.data.tokenizer import char_tokenizer
from lmlab.model.hf import export_hf
from lmlab.model.load import load_run
from lmlab.model.transformer import Transformer
from lmlab.train.checkpoint import save_checkpoint
from tests.conftest import CORPUS_TEXT, tiny_model_config

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-evaluation-harness is not installed: pip install 'lmlab[eval]'"
)
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from lm_eval.tasks import TaskManager  # noqa: E402

from tests.serve.conftest import live_server, make_server  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

LL_ATOL = 1e-4
"""Log-likelihoods of the same tokens by transformers and by lmlab's engine (float32 sums)."""

MC = [
    {"question": f"def f{i}(x):\n    return x *", "choices": [f" {i}", f" {i + 1}", " 7"]}
    for i in range(1, 7)
]
GEN = [{"question": f"# line {i}: the quick", "answer": " brown fox"} for i in range(4)]


def task_yaml(name: str, data: Path, cache: Path, body: str) -> str:
    return (
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n"
        f"  data_files:\n    test: {data}\n  cache_dir: {cache}\n"
        f"test_split: test\ndoc_to_text: question\n{body}"
    )


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two lm-eval YAML tasks on local JSONL files."""
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    cache = root / "datasets_cache"
    (root / "mc.jsonl").write_text("".join(json.dumps({**d, "answer": 0}) + "\n" for d in MC))
    (root / "gen.jsonl").write_text("".join(json.dumps(d) + "\n" for d in GEN))
    mc = "output_type: multiple_choice\ndoc_to_choice: choices\ndoc_to_target: answer\n"
    mc += "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    gen = "output_type: generate_until\ndoc_to_target: answer\n"
    gen += "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 8\n  do_sample: false\n"
    gen += "metric_list:\n  - metric: exact_match\n"
    (root / "lmlab_mc.yaml").write_text(task_yaml("lmlab_mc", root / "mc.jsonl", cache, mc))
    (root / "lmlab_gen.yaml").write_text(task_yaml("lmlab_gen", root / "gen.jsonl", cache, gen))
    return root


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random model whose char tokenizer covers the tasks' text exactly (no vocabulary
    padding: transformers' greedy choice then ranges over the same ids as the engine's)."""
    run = tmp_path_factory.mktemp("eval_run")
    tok = char_tokenizer([CORPUS_TEXT])
    # A larger init than training uses: peaked next-token distributions, so greedy choices
    # have no near-ties that float differences between the two stacks could flip.
    cfg = RunConfig(
        model=tiny_model_config(vocab_size=tok.vocab_size, context_length=128, init_std=0.3),
        train=TrainConfig(max_steps=1),
    )
    torch.manual_seed(0)
    cfg.save(run / "config.json")
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, Transformer(cfg.model), None, {"step": 0, "tokens": 0})
    return run


@pytest.fixture(scope="module")
def export(eval_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, tok, _ = load_run(eval_run)
    return export_hf(model, tok, tmp_path_factory.mktemp("eval_export") / "hf")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(eval_run: Path) -> Iterator[str]:
    app, _ = make_server(eval_run, max_batch=4)
    with live_server(app) as url:
        yield url


def run_lm_eval(model: str, args: dict[str, Any], tasks_dir: Path) -> dict[str, Any]:
    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    results = lm_eval.simple_evaluate(
        model=model,
        model_args=args,
        tasks=["lmlab_mc", "lmlab_gen"],
        batch_size=1,
        device="cpu",
        log_samples=True,
        task_manager=manager,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )
    assert results is not None
    return results


def plain(obj: Any) -> Any:
    """`obj` as its JSON file holds it (tuples become lists)."""
    return json.loads(json.dumps(obj, default=str))


def assert_same_scores(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Per document: log-likelihoods within LL_ATOL with the same greedy flags, identical
    generations; and the same task metrics."""
    for task in ("lmlab_mc", "lmlab_gen"):
        sa = sorted(a["samples"][task], key=lambda s: s["doc_id"])
        sb = sorted(b["samples"][task], key=lambda s: s["doc_id"])
        assert len(sa) == len(sb) == (len(MC) if task == "lmlab_mc" else len(GEN))
        for x, y in zip(sa, sb, strict=True):
            assert plain(x["arguments"]) == plain(y["arguments"])  # the same requests
            if task == "lmlab_mc":
                lx = [float(r[0]) for r in x["filtered_resps"]]
                ly = [float(r[0]) for r in y["filtered_resps"]]
                assert lx == pytest.approx(ly, abs=LL_ATOL)
                assert [r[1] for r in x["filtered_resps"]] == [r[1] for r in y["filtered_resps"]]
            else:
                assert x["filtered_resps"] == y["filtered_resps"]
        ra, rb = a["results"][task], b["results"][task]
        for metric in ("acc,none", "acc_norm,none", "exact_match,none"):
            if metric in ra:
                assert ra[metric] == pytest.approx(rb[metric], abs=1e-9), (task, metric)


@pytest.fixture(scope="module")
def hf_plain(export: Path, tasks_dir: Path) -> dict[str, Any]:
    """lm-eval's `hf` model on the export, inputs without BOS (what lm-eval's remote-tokenizer
    path sends)."""
    return run_lm_eval("hf", {"pretrained": str(export), "add_bos_token": False}, tasks_dir)


def test_local_completions_against_lmlab_serve_equals_hf(
    server: str, hf_plain: dict[str, Any], tasks_dir: Path
) -> None:
    # tokenizer_backend "auto" (the default) finds the server's /tokenizer_info and /tokenize:
    # lm-eval tokenizes through the server, so nothing else (no HF tokenizer) is needed.
    args = {"model": "tiny", "base_url": f"{server}/v1/completions", "max_length": 128}
    served = run_lm_eval("local-completions", args, tasks_dir)
    assert_same_scores(served, hf_plain)
    lls = [float(r[0]) for s in served["samples"]["lmlab_mc"] for r in s["filtered_resps"]]
    assert all(ll < 0 for ll in lls) and len(set(lls)) > 1  # real, distinct scores
    gens = [s["filtered_resps"][0] for s in served["samples"]["lmlab_gen"]]
    assert any(g for g in gens)  # the random model writes something before a newline


def served_scores(server: str, samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """lmlab's own answers to the requests of `samples`, through the server as lmlab reads
    text (<|bos|> first): each multiple-choice continuation's log-likelihood, scored by
    completions' echo and split as lm-eval splits context and continuation; each generation's
    greedy text."""

    def ids(text: str) -> list[int]:
        r = httpx.post(f"{server}/tokenize", json={"prompt": text})
        return r.json()["tokens"]

    out: dict[str, Any] = {"lmlab_mc": [], "lmlab_gen": []}
    for sample in sorted(samples["lmlab_mc"], key=lambda x: x["doc_id"]):
        row = []
        for context, continuation in sample["arguments"]:
            ctx = ids(context)
            whole = ids(context + continuation)
            body = {"model": "tiny", "prompt": whole, "echo": True, "max_tokens": 0, "logprobs": 0}
            lps = httpx.post(f"{server}/v1/completions", json=body).json()["choices"][0]
            row.append(sum(lps["logprobs"]["token_logprobs"][len(ctx) :]))
        out["lmlab_mc"].append(row)
    for sample in sorted(samples["lmlab_gen"], key=lambda x: x["doc_id"]):
        context, gen = sample["arguments"][0]
        body = {"model": "tiny", "prompt": context, "temperature": 0, "stop": gen["until"]}
        body["max_tokens"] = gen["max_gen_toks"]
        out["lmlab_gen"].append(httpx.post(f"{server}/v1/completions", json=body).json())
    return out


def test_lmlab_evaluate_writes_lm_eval_results(
    eval_run: Path, server: str, tasks_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    argv = ["evaluate", str(eval_run), "--tasks", "lmlab_mc", "lmlab_gen"]
    argv += ["--include-path", str(tasks_dir), "--out", str(out), "--batch-size", "1"]
    assert main([*argv, "--log-samples"]) == 0
    results = json.loads(out.read_text())
    assert {"results", "configs", "versions", "n-shot", "config"} <= set(results)
    assert "samples" not in results
    assert results["results"]["lmlab_mc"]["alias"] == "lmlab_mc"
    assert 0 <= results["results"]["lmlab_mc"]["acc,none"] <= 1
    assert results["n-samples"]["lmlab_gen"]["effective"] == len(GEN)
    samples = {
        t: [
            json.loads(x)
            for x in (tmp_path / f"results_samples_{t}.jsonl").read_text().splitlines()
        ]
        for t in ("lmlab_mc", "lmlab_gen")
    }
    # lm-eval's scores of the export are lmlab's own scores of the same text: <|bos|> first.
    want = served_scores(server, samples)
    for sample, row in zip(
        sorted(samples["lmlab_mc"], key=lambda x: x["doc_id"]), want["lmlab_mc"], strict=True
    ):
        assert [float(r[0]) for r in sample["filtered_resps"]] == pytest.approx(row, abs=LL_ATOL)
    for sample, answer in zip(
        sorted(samples["lmlab_gen"], key=lambda x: x["doc_id"]), want["lmlab_gen"], strict=True
    ):
        assert sample["resps"][0][0] == answer["choices"][0]["text"]


def test_local_completions_with_bos_equals_lmlab_evaluate(
    export: Path, server: str, tasks_dir: Path
) -> None:
    hf = run_lm_eval("hf", {"pretrained": str(export), "add_bos_token": True}, tasks_dir)
    args = {
        "model": "tiny",
        "base_url": f"{server}/v1/completions",
        "max_length": 128,
        "tokenizer_backend": "huggingface",
        "tokenizer": str(export),
        "add_bos_token": True,
    }
    assert_same_scores(run_lm_eval("local-completions", args, tasks_dir), hf)


def test_lmlab_evaluate_errors(
    eval_run: Path, tasks_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    def error(*argv: str) -> str:
        assert main(["evaluate", *argv]) == 2
        return capsys.readouterr().err

    assert "unknown lm-eval task 'lmlab_mcq'" in error(
        str(eval_run), "--tasks", "lmlab_mcq", "--include-path", str(tasks_dir)
    )
    assert "is not an lmlab run" in error(str(tmp_path), "--tasks", "lmlab_mc")
    assert "is not a folder" in error(
        str(eval_run), "--tasks", "lmlab_mc", "--include-path", str(tmp_path / "none")
    )
    assert "does not exist" in error(
        str(eval_run), "--tasks", "lmlab_mc", "--out", str(tmp_path / "no" / "r.json")
    )
