"""The report card of a lab run: `report.md` and a self-contained `report.html`.

Everything in it is read from the run's own files (`lab.json`, each step's metrics and
results), so `lmlab report RUN` rebuilds the same card at any time. One document model — a
list of blocks: headings, paragraphs, tables, images — is rendered twice, to Markdown (images as
relative links to the PNGs in `plots/`) and to HTML (the same PNGs embedded as data URIs, no
network, no script).
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lmlab.config import RunConfig
from lmlab.lab.config import LabConfig
from lmlab.model.transformer import flops_per_token
from lmlab.runs import read_metrics, write_atomic

PLOTS = "plots"
MODEL_COLUMNS = (
    ("pretrain", "BASE"),
    ("moe", "MoE"),
    ("sft", "SFT"),
    ("ppo", "PPO"),
    ("dpo", "DPO"),
    ("grpo", "GRPO"),
)
TRAINING_STEPS = ("pretrain", "moe", "sft", "rm", "ppo", "dpo", "grpo")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Doc:
    """The report as blocks: ("h1" | "h2" | "p", text), ("table", Table), ("img", path, alt)."""

    blocks: list[tuple[Any, ...]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append((f"h{level}", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        if rows:
            self.blocks.append(("table", Table(header, rows)))

    def img(self, path: Path, alt: str) -> None:
        if path.is_file():
            self.blocks.append(("img", path, alt))


# --- formatting -------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _flops(x: float) -> str:
    return "—" if not x else f"{x:.3g}"


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --- plots ------------------------------------------------------------------------------------


def _loss_plot(runs: dict[str, Path], path: Path, title: str) -> Path | None:
    """Training and validation loss curves of runs (step on x)."""
    curves = {name: read_metrics(run) for name, run in runs.items() if run.is_dir()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, rows) in enumerate(curves.items()):
        train = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
        val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        if train:
            ax.plot(*zip(*train, strict=True), color=f"C{i}", alpha=0.5, label=f"{name} train")
        if val:
            ax.plot(*zip(*val, strict=True), "o-", color=f"C{i}", label=f"{name} validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _moe_load_plot(run: Path, path: Path) -> Path | None:
    """Each MoE layer's share of tokens per expert at the last logged step."""
    rows = [r for r in read_metrics(run) if any(k.startswith("moe/L") for k in r)]
    if not rows:
        return None
    last = rows[-1]
    layers = sorted({k.split("/")[1] for k in last if k.startswith("moe/L") and "/load/" in k})
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    width = 0.8 / max(len(layers), 1)
    for i, layer in enumerate(layers):
        loads = sorted(
            (int(k.rsplit("/", 1)[1]), v)
            for k, v in last.items()
            if k.startswith(f"moe/{layer}/load/")
        )
        ax.bar([e + i * width for e, _ in loads], [v for _, v in loads], width, label=layer)
    ax.set_xlabel("expert")
    ax.set_ylabel("share of routed tokens")
    ax.set_title(f"MoE expert load at step {last['step']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _icl_plot(models: dict[str, Any], shots: list[int], path: Path) -> Path | None:
    series = {
        name: [row["icl"].get(f"icl:k={k}", {}).get("accuracy") for k in shots]
        for name, row in models.items()
        if "icl" in row
    }
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, acc in series.items():
        ax.plot(shots, acc, "o-", label=name)
    ax.set_xlabel("examples in the prompt (k)")
    ax.set_ylabel("accuracy")
    ax.set_title("in-context learning (icl), held-out problems")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- the card ---------------------------------------------------------------------------------


def build(root: Path, record: dict[str, Any]) -> Doc:
    """The report card of the lab run in `root` whose lab.json is `record`."""
    cfg = LabConfig.from_dict(record["config"])
    steps: dict[str, Any] = record["steps"]
    done = {n for n, s in steps.items() if s.get("status") == "done"}
    plots = root / PLOTS
    plots.mkdir(exist_ok=True)
    doc = Doc()
    env = record["environment"]
    doc.h(1, f"lmlab report card — preset {record['preset']}")
    total = sum(s["seconds"] for s in steps.values() if s.get("status") == "done")
    doc.table(
        ["", ""],
        [
            ["lmlab", f"{env['lmlab']} (commit {env['commit']})"],
            ["date", record["created"]],
            [
                "hardware",
                f"{env['cpu']}, {env['cores']} cores" + (f", {env['gpu']}" if env["gpu"] else ""),
            ],
            ["software", f"Python {env['python']}, torch {env['torch']}, {env['threads']} threads"],
            ["preset, seed", f"{record['preset']}, {cfg.seed}"],
            ["wall time", f"{_clock(total)} in all"],
        ],
    )
    doc.table(
        ["stage", "wall time", "status"],
        [
            [
                name,
                _clock(steps[name]["seconds"]) if name in done else "—",
                "done" if name in done else "not run",
            ]
            for name in record["stages"]
        ],
    )
    evaluation = steps.get("eval", {}).get("summary", {}) if "eval" in done else {}
    reasoning = steps.get("reason", {}).get("summary", {}) if "reason" in done else {}
    _summary_table(doc, cfg, evaluation, reasoning)
    if "tokenizer" in done:
        t = steps["tokenizer"]["summary"]
        doc.h(2, "Tokenizer")
        doc.p(
            f"`{t['kind']}` tokenizer with {t['vocab_size']:,} tokens, trained on `{t['corpus']}` "
            f"({t['train_documents']:,} training documents); {t['chars_per_token']:.2f} characters "
            "per token on validation documents."
        )
    if "pretrain" in done:
        _pretrain_section(doc, root, steps, done, plots)
    if "sft" in done:
        _sft_section(doc, root, steps, plots)
    if "rm" in done:
        _rm_section(doc, steps)
    for rl in ("ppo", "dpo", "grpo"):
        if rl in done:
            _rl_section(doc, root, rl, steps, evaluation)
    if "overopt" in done:
        _overopt_section(doc, root, steps["overopt"]["summary"])
    if evaluation:
        _eval_section(doc, cfg, evaluation, plots)
    if reasoning:
        _reason_section(doc, root, reasoning)
    _ledger(doc, root, done, evaluation, reasoning)
    if "scaling" in done:
        _scaling_section(doc, root, steps["scaling"]["summary"])
    return doc


def _models(evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    present = evaluation.get("models", {})
    return [(key, label) for key, label in MODEL_COLUMNS if key in present]


def _summary_table(
    doc: Doc, cfg: LabConfig, evaluation: dict[str, Any], reasoning: dict[str, Any]
) -> None:
    """Metric by stage, like nanochat's: one row per metric, one column per model."""
    if not evaluation:
        return
    models = _models(evaluation)
    rows_by_model = evaluation["models"]
    header = ["metric", *(label for _, label in models)]
    rows = [["pretraining val loss", *(_num(rows_by_model[m]["val_loss"]) for m, _ in models)]]
    for task in cfg.eval.tasks:
        for strategy, how in (("direct", "direct"), ("cot", "step by step")):
            rows.append(
                [
                    f"{task} {how}",
                    *(
                        _pct(rows_by_model[m].get(strategy, {}).get(task, {}).get("accuracy"))
                        for m, _ in models
                    ),
                ]
            )
    for k in cfg.eval.icl_shots:
        rows.append(
            [
                f"icl k={k}",
                *(
                    _pct(rows_by_model[m].get("icl", {}).get(f"icl:k={k}", {}).get("accuracy"))
                    for m, _ in models
                ),
            ]
        )
    wins = evaluation.get("win_rates", {})
    if wins:
        rows.append(
            [
                "gold win rate over SFT",
                *(_pct(wins[m]["win_rate"]) if m in wins else "—" for m, _ in models),
            ]
        )
    doc.h(2, "Summary")
    doc.table(header, rows)
    for c in reasoning.get("comparisons", []):
        best = max(c["rows"], key=lambda r: (r["accuracy"], -r["flops"]))
        doc.p(
            f"Best inference strategy on {c['task']} (SFT model, {c['n']} held-out problems): "
            f"**{best['strategy']}** at {_pct(best['accuracy'])}, "
            f"{best['flops'] / 1e9:.3g} GFLOPs per question."
        )


def _pretrain_section(
    doc: Doc, root: Path, steps: dict[str, Any], done: set[str], plots: Path
) -> None:
    s = steps["pretrain"]["summary"]
    doc.h(2, "Pretraining")
    doc.p(
        f"{s.get('params_total', 0):,} parameters, trained to step {s.get('step', '?')} on "
        f"{s.get('tokens', 0):,} tokens; final validation loss {_num(s.get('val_loss'))}, "
        f"{s.get('tokens_per_s', 0):,.0f} tokens/s."
    )
    runs = {"base": root / "pretrain"}
    if "moe" in done:
        m = steps["moe"]["summary"]
        runs["moe"] = root / "moe"
        doc.p(
            f"MoE twin: {m.get('params_total', 0):,} parameters in all, "
            f"{m.get('params_active', 0):,} active per token (base: {s.get('params_total', 0):,}), "
            f"same tokens; final validation loss {_num(m.get('val_loss'))}."
        )
    doc.img(
        _loss_plot(runs, plots / "pretrain_loss.png", "pretraining") or Path(), "pretraining loss"
    )
    if "moe" in done:
        doc.img(_moe_load_plot(root / "moe", plots / "moe_load.png") or Path(), "MoE expert load")


def _sft_section(doc: Doc, root: Path, steps: dict[str, Any], plots: Path) -> None:
    s = steps["sft"]["summary"]
    doc.h(2, "Supervised fine-tuning")
    text = f"Chat validation loss {_num(s.get('val_loss'))} after step {s.get('step', '?')}."
    if "pretrain_val_loss_before" in s:
        before, after = s["pretrain_val_loss_before"], s["pretrain_val_loss_after"]
        text += (
            f" Forgetting (pretraining validation loss, with replay): {before:.4f} before, "
            f"{after:.4f} after ({100 * (after - before) / before:+.1f}%)."
        )
    doc.p(text)
    doc.img(_loss_plot({"sft": root / "sft"}, plots / "sft_loss.png", "SFT") or Path(), "SFT loss")


def _rm_section(doc: Doc, steps: dict[str, Any]) -> None:
    s = steps["rm"]["summary"]
    prefs = steps.get("prefs", {}).get("summary", {})
    doc.h(2, "Preferences and reward model")
    if prefs:
        doc.p(
            f"{prefs.get('pairs', 0):,} pairs from {prefs.get('prompts', 0):,} prompts, labelled "
            "by the world's gold annotator."
        )
    doc.table(
        [
            "held-out pairs",
            "reward model",
            "longer answer wins",
            "shorter answer wins",
            "chosen not the shorter",
        ],
        [
            [
                str(s["val_pairs"]),
                _pct(s["heldout_accuracy"]),
                _pct(s["length_baseline_accuracy"]),
                _pct(s["shorter_baseline_accuracy"]),
                _pct(s["accuracy_chosen_not_shorter"]),
            ]
        ],
    )


def _rl_section(
    doc: Doc, root: Path, name: str, steps: dict[str, Any], evaluation: dict[str, Any]
) -> None:
    s = steps[name]["summary"]
    titles = {"ppo": "PPO", "dpo": "DPO", "grpo": "GRPO"}
    doc.h(2, titles[name])
    win = evaluation.get("win_rates", {}).get(name)
    if win:
        ci = win.get("ci95", [math.nan, math.nan])
        doc.p(
            f"Gold-judged win rate over SFT: {_pct(win['win_rate'])} (95% interval "
            f"{_pct(ci[0])}-{_pct(ci[1])}; wins {_pct(win['wins'])}, ties {_pct(win['ties'])}, "
            f"losses {_pct(win['losses'])})."
        )
    if name == "ppo":
        doc.p(
            f"Last iteration: reward-model score {_num(s.get('score'))}, KL to the reference "
            f"{_num(s.get('kl'))} per response, gold {_num(s.get('gold'))}, "
            f"end rate {_pct(s.get('end_rate'))}."
        )
        doc.img(root / "ppo" / "ppo_curves.png", "PPO curves")
    if name == "grpo":
        doc.p(
            f"{s['task']} ({s['strategy']}): {_pct(s['sft_accuracy'])} before, "
            f"{_pct(s['grpo_accuracy'])} after ({s['eval_n']} test problems)."
        )


def _overopt_section(doc: Doc, root: Path, s: dict[str, Any]) -> None:
    doc.h(2, "Reward over-optimisation")
    doc.p(
        f"A proxy reward model trained on labels with {_pct(s['label_noise'])} flipped "
        f"({_pct(s['proxy_heldout_accuracy'])} held out); best-of-n and PPO (no KL penalty) "
        f"against it at T = {s['temperature']:g}, both scored by the proxy (raw) and by the "
        f"hidden gold judge, against d = sqrt(KL). Gao et al.'s forms fitted to the gold gain: "
        f"best-of-n alpha {s['bon_fit']['alpha']:.3g}, beta {s['bon_fit']['beta']:.3g}; "
        f"PPO alpha {s['rl_fit']['alpha']:.3g}, beta {s['rl_fit']['beta']:.3g}. Gold peaked at "
        f"PPO iteration {s['gold_peak_step']}; gold fell while the proxy rose: "
        f"{'yes' if s['gold_fell_while_proxy_rose'] else 'no'}."
    )
    doc.table(
        ["best-of-n", "d = sqrt(KL)", "proxy", "gold"],
        [
            [str(r["n"]), f"{r['d']:.2f}", f"{r['proxy']:.3f}", f"{r['gold']:.3f}"]
            for r in s["best_of_n"]
        ],
    )
    doc.img(root / "overopt" / "overopt.png", "over-optimisation")


def _eval_section(doc: Doc, cfg: LabConfig, evaluation: dict[str, Any], plots: Path) -> None:
    doc.h(2, "Evaluation")
    doc.p(
        f"Held-out test problems in held-out phrasings, {cfg.eval.n} per task, greedy; "
        "per-character accuracy in brackets."
    )
    models = [(m, label) for m, label in _models(evaluation) if "direct" in evaluation["models"][m]]
    rows = []
    for task in cfg.eval.tasks:
        for strategy in ("direct", "cot"):
            cells = []
            for m, _ in models:
                r = evaluation["models"][m][strategy].get(task, {})
                cells.append(f"{_pct(r.get('accuracy'))} ({_pct(r.get('char_accuracy'))})")
            rows.append([task, strategy, *cells])
    doc.table(["task", "strategy", *(label for _, label in models)], rows)
    doc.img(
        _icl_plot(evaluation["models"], cfg.eval.icl_shots, plots / "icl.png") or Path(),
        "ICL by shots",
    )


def _reason_section(doc: Doc, root: Path, reasoning: dict[str, Any]) -> None:
    doc.h(2, "Reasoning at inference")
    for c in reasoning["comparisons"]:
        doc.p(f"{c['task']}, {c['n']} held-out problems, the SFT model:")
        doc.table(
            [
                "strategy",
                "accuracy",
                "GFLOPs/question",
                "tokens generated",
                "prompt tokens",
                "Pareto",
            ],
            [
                [
                    r["strategy"],
                    f"{_pct(r['accuracy'])} ± {_pct(r['stderr'])}",
                    f"{r['flops'] / 1e9:.3g}",
                    f"{r['tokens']:.0f}",
                    f"{r['prompt_tokens']:.0f}",
                    "yes" if r.get("pareto") else "",
                ]
                for r in c["rows"]
            ],
        )
        doc.img(root / "reason" / c["plot"], f"accuracy against compute, {c['task']}")


def _ledger(
    doc: Doc,
    root: Path,
    done: set[str],
    evaluation: dict[str, Any],
    reasoning: dict[str, Any],
) -> None:
    """Training FLOPs per stage against the inference FLOPs evaluation and reasoning spent."""
    rows = []
    for name in TRAINING_STEPS:
        if name not in done:
            continue
        run = root / name
        tokens = [r["tokens"] for r in read_metrics(run) if "tokens" in r]
        if not tokens or not (run / "config.json").is_file():
            continue
        per_token = flops_per_token(RunConfig.load(run / "config.json").model)["train"]
        rows.append([name, "training", f"{tokens[-1]:,}", _flops(tokens[-1] * per_token)])
    evaluation_models = evaluation.get("models", {}) if evaluation else {}
    for name, row in evaluation_models.items():
        rows.append([f"eval: {name}", "inference", "", _flops(row.get("eval_flops", 0.0))])
    for c in reasoning.get("comparisons", []):
        for r in c["rows"]:
            rows.append(
                [
                    f"reason: {r['strategy']} on {c['task']}",
                    "inference",
                    f"{(r['tokens'] + r['prompt_tokens']) * c['n']:,.0f}",
                    _flops(r["flops"] * c["n"]),
                ]
            )
    if rows:
        doc.h(2, "Compute ledger")
        doc.p(
            "Training FLOPs are tokens trained times 6 N_matmul plus attention (forward and "
            "backward; PPO and GRPO count the response tokens they train on, PPO once per epoch, "
            "its value model not counted); inference FLOPs are "
            "forward FLOPs with the prefill, over all questions."
        )
        doc.table(["stage", "kind", "tokens", "FLOPs"], rows)


def _scaling_section(doc: Doc, root: Path, s: dict[str, Any]) -> None:
    doc.h(2, "Scaling laws")
    pred = s["prediction"]
    a3 = pred.get("approach3")
    text = f"{s['points']} runs. At this preset's training compute ({pred['budget']:.3g} FLOPs)"
    if a3:
        text += (
            f", Approach 3 puts the optimum at N = {a3['n_opt']:.3g} parameters and "
            f"D = {a3['d_opt']:.3g} tokens ({a3['tokens_per_param']:.1f} tokens per parameter)"
        )
    inf = pred.get("inference_aware")
    if inf:
        text += (
            f"; serving {pred['inference_tokens']:.3g} tokens moves it to N = {inf['n']:.3g} "
            f"({inf['n_ratio']:.2f}x), D = {inf['d_train']:.3g} ({inf['d_train_ratio']:.2f}x), "
            f"saving {_pct(inf['saving'])} of the total cost"
        )
    doc.p(text + ".")
    for name in ("isoflop.png", "frontier.png"):
        doc.img(root / "scaling" / "plots" / name, name.removesuffix(".png"))


# --- rendering --------------------------------------------------------------------------------


def to_markdown(doc: Doc, root: Path) -> str:
    out: list[str] = []
    for block in doc.blocks:
        kind = block[0]
        if kind.startswith("h"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            t: Table = block[1]
            out.append("| " + " | ".join(t.header) + " |")
            out.append("|" + "|".join("---" for _ in t.header) + "|")
            out += ["| " + " | ".join(row) + " |" for row in t.rows]
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1].relative_to(root).as_posix()})")
        out.append("")
    return "\n".join(out)


_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em;
       color: #1d1d1f; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _inline(text: str) -> str:
    """Markdown's `code` and **bold** in a paragraph, as HTML (everything else escaped)."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def to_html(doc: Doc, title: str) -> str:
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for block in doc.blocks:
        kind = block[0]
        if kind.startswith("h"):
            out.append(f"<{kind}>{_inline(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "table":
            t: Table = block[1]
            head = "".join(f"<th>{_inline(h)}</th>" for h in t.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in t.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(block[1].read_bytes()).decode()
            out.append(f'<img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(root: Path, record: dict[str, Any]) -> tuple[Path, Path]:
    """Write report.md and report.html for the lab run in `root` (atomically)."""
    doc = build(root, record)
    md, page = root / "report.md", root / "report.html"
    write_atomic(md, to_markdown(doc, root))
    write_atomic(page, to_html(doc, f"lmlab report card: {record['preset']}"))
    return md, page


def rebuild(root: Path) -> tuple[Path, Path]:
    """`lmlab report RUN`: the report card again, from the run's files alone."""
    return write_report(root, json.loads((root / "lab.json").read_text()))
