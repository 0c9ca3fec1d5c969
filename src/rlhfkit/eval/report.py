"""report.html for a pipeline run: plots and side-by-side held-out answers. All model text is escaped."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def figures(out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    ppo = _rows(out / "ppo" / "metrics.jsonl")
    if ppo:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
        steps = [r["step"] for r in ppo]
        axes[0].plot(steps, [r["reward_mean"] for r in ppo], color="#1f77b4")
        axes[0].set(title="Reward-model score of sampled answers", xlabel="PPO iteration", ylabel="mean score")
        axes[1].plot(steps, [r["kl"] for r in ppo], color="#d62728", label="KL to SFT")
        axes[1].set(title="KL(policy || SFT) per answer", xlabel="PPO iteration", ylabel="nats")
        evals = [r for r in ppo if "heldout_win_rate_vs_sft" in r]
        if evals:
            axes[2].plot(
                [r["step"] for r in evals],
                [r["heldout_win_rate_vs_sft"] for r in evals],
                "o-",
                color="#2ca02c",
                label="win rate vs SFT",
            )
            axes[2].plot(
                [r["step"] for r in evals],
                [r["heldout_fact_accuracy"] for r in evals],
                "s--",
                color="#9467bd",
                label="fact accuracy",
            )
            axes[2].axhline(0.5, color="grey", lw=0.8, ls=":")
            axes[2].set(ylim=(0, 1.05), title="Held-out questions, gold judge", xlabel="PPO iteration")
            axes[2].legend(loc="lower right", fontsize=8)
        else:
            axes[2].plot(
                [r["step"] for r in ppo if "heldout_token_f1" in r],
                [r["heldout_token_f1"] for r in ppo if "heldout_token_f1" in r],
                "o-",
            )
            axes[2].set(ylim=(0, 1.05), title="Held-out token F1 vs gold answers", xlabel="PPO iteration")
        fig.tight_layout()
        figs.append(("PPO training", _png(fig)))
        plt.close(fig)
    rm = json.loads((out / "rm" / "metrics.json").read_text()) if (out / "rm" / "metrics.json").exists() else None
    scores = json.loads((out / "heldout_scores.json").read_text()) if (out / "heldout_scores.json").exists() else None
    if rm or scores:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
        if rm:
            by = rm.get("eval_accuracy_by_agreement", {})
            labels = ["all pairs", *[f"{float(k):.0%} of annotators agree" for k in by]]
            values = [rm.get("eval_accuracy", 0.0), *by.values()]
            axes[0].bar(labels, values, color="#1f77b4")
            axes[0].set(
                ylim=(0, 1.05),
                title=f"Reward model on held-out rankings (ECE {rm.get('eval_ece', 0):.3f})",
                ylabel="pairwise accuracy",
            )
            axes[0].tick_params(axis="x", labelsize=8)
        if scores:
            for name, values in scores.items():
                axes[1].hist(values, bins=15, alpha=0.5, label=f"{name} answers")
            axes[1].set(title="Reward-model scores, held-out questions", xlabel="score", ylabel="answers")
            axes[1].legend(fontsize=8)
        fig.tight_layout()
        figs.append(("Reward model", _png(fig)))
        plt.close(fig)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    methods = summary.get("methods", [])
    if methods and any(f"win_rate_{m}_vs_sft" in summary for m in methods):
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
        rates = [summary.get(f"win_rate_{m}_vs_sft", 0.0) for m in methods]
        low = [r - summary.get(f"win_rate_{m}_vs_sft_ci95", [r, r])[0] for m, r in zip(methods, rates)]
        high = [summary.get(f"win_rate_{m}_vs_sft_ci95", [r, r])[1] - r for m, r in zip(methods, rates)]
        axes[0].bar(methods, rates, yerr=[low, high], capsize=4, color="#2ca02c")
        axes[0].axhline(0.5, color="grey", lw=0.8, ls=":")
        axes[0].set(ylim=(0, 1.05), title="Win rate vs SFT, held-out (95% interval)", ylabel="win rate")
        kls = [summary.get(f"kl_to_sft_{m}") or 0.0 for m in methods]
        axes[1].scatter(kls, rates, color="#1f77b4")
        for m, x, y in zip(methods, kls, rates):
            axes[1].annotate(m, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axes[1].set(title="What each method paid in KL for its wins", xlabel="KL to SFT (nats)", ylabel="win rate")
        fig.tight_layout()
        figs.append(("Methods side by side", _png(fig)))
        plt.close(fig)
    return figs


def method_table(summary: dict) -> str:
    """One row per method: win rate vs SFT (95% interval), the judge's properties, reward-model score, token F1,
    KL to SFT, wall time. All names and numbers are escaped."""
    e = html.escape
    methods = summary.get("methods", [])
    if not methods:
        return ""
    props = sorted(
        {
            k.removesuffix("_sft")
            for k in summary
            if k.endswith("_sft") and f"{k.removesuffix('_sft')}_{methods[0]}" in summary
        }
        - {"rm_score", "token_f1", "exact_match", "rouge_l"}
    )
    head = ["method", "win rate vs SFT", *props, "reward-model score", "token F1", "KL to SFT", "seconds"]

    def num(v, fmt="{:.3f}") -> str:
        return "" if v is None else fmt.format(v) if isinstance(v, (int, float)) else str(v)

    rows = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for name in ["sft", *methods]:
        ci = summary.get(f"win_rate_{name}_vs_sft_ci95")
        win = "" if name == "sft" else num(summary.get(f"win_rate_{name}_vs_sft"))
        if ci:
            win += f" ({ci[0]:.2f}-{ci[1]:.2f})"
        cells = [name, win, *(num(summary.get(f"{p}_{name}")) for p in props)]
        cells += [num(summary.get(f"rm_score_{name}")), num(summary.get(f"token_f1_{name}"))]
        cells += [num(summary.get(f"kl_to_sft_{name}")), num(summary.get(f"seconds_{name}"), "{:.0f}")]
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;
color:#222;line-height:1.45}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.card{border:1px solid #ddd;border-radius:8px;padding:.6rem .9rem;min-width:150px}
.card b{display:block;font-size:1.5rem} .card span{color:#666;font-size:.85rem}
img{max-width:100%;border:1px solid #eee;border-radius:6px;margin:.4rem 0}
table{border-collapse:collapse;width:100%;font-size:.9rem} th,td{border:1px solid #ddd;padding:.4rem;vertical-align:top}
th{background:#f6f6f6;text-align:left} td.v{text-align:center;font-weight:600;white-space:nowrap}
.win{color:#2a7d2a} .loss{color:#b22222} .tie{color:#777}
"""


def write_report(out: Path) -> Path:
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    samples = _rows(out / "eval_samples.jsonl")
    e = html.escape
    cards = [
        ("win_rate_ppo_vs_sft", "gold win rate, PPO vs SFT"),
        ("fact_accuracy_sft", "fact accuracy, SFT"),
        ("fact_accuracy_ppo", "fact accuracy, PPO"),
        ("rm_eval_accuracy", "reward-model accuracy"),
        ("ppo_kl_last_tenth", "final KL to SFT"),
        ("token_f1_sft", "token F1, SFT"),
        ("token_f1_ppo", "token F1, PPO"),
        ("wall_seconds", "seconds, whole run"),
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rlhfkit report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>rlhfkit: SFT vs PPO</h1>",
        f"<p class='sub'>{e(str(out))}: held-out questions never trained on. The gold judge is the demo's hidden "
        "rubric (right fact, courteous and complete, concise, nothing invented); ties count half.</p>",
        "<div class='cards'>",
    ]
    for key, label in cards:
        if summary.get(key) is not None:
            v = summary[key]
            shown = f"{v:.0f}" if key == "wall_seconds" else f"{v:.3f}" if isinstance(v, float) else str(v)
            parts.append(f"<div class='card'><b>{e(shown)}</b><span>{e(label)}</span></div>")
    parts.append("</div>")
    if summary.get("methods"):
        parts += ["<h2>Methods on held-out questions</h2>", method_table(summary)]
    for title, png in figures(out):
        parts += [f"<h2>{e(title)}</h2>", f"<img alt='{e(title)}' src='data:image/png;base64,{png}'>"]
    methods = summary.get("methods") or ["ppo"]
    shown = "ppo" if "ppo" in methods else methods[0]  # the method whose answers and verdicts the table shows
    if samples:
        parts += [
            "<h2>Held-out answers</h2>",
            "<table><tr><th>question</th><th>gold answer</th><th>SFT</th>"
            f"<th>{e(shown.upper())}</th><th>judge</th></tr>",
        ]
        label = {
            "a": (f"{shown.upper()} better", "win"),
            "b": ("SFT better", "loss"),
            "tie": ("tie", "tie"),
            None: ("", "tie"),
        }
        for s in samples:
            text, cls = label[s.get("judge")]
            parts.append(
                f"<tr><td>{e(str(s['question']))}</td><td>{e(s['gold_answer'])}</td>"
                f"<td>{e(s['sft_answer'])}</td><td>{e(s[f'{shown}_answer'])}</td>"
                f"<td class='v {cls}'>{e(text)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
