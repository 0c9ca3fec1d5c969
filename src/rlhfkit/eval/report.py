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


EXPLAINED = {
    "PPO training": "PPO trains the chatbot by trial and error: each iteration it answers a batch of training "
    "questions, the reward model (trained on people's rankings) scores the answers, and the model is nudged towards "
    "higher-scoring answers. Left: the average score rises as it learns. Middle: the KL divergence measures how far "
    "the model has moved from the SFT model it started from; a penalty keeps it small, so the model cannot drift "
    "into text that fools the reward model. Right: on validation questions (never trained on, used to choose "
    "settings) the gold judge compares its answers with the SFT model's; above 0.5 means it now answers better.",
    "Reward model": "The reward model learned to predict which of two answers people prefer. Left: how often it "
    "agrees with the annotators on rankings it never trained on, overall and where the annotators agreed with each "
    "other more or less (where people disagree, no model can be right every time). Right: its scores of the test "
    "answers of the SFT model and of each trained model; trained models should sit further right.",
    "Methods side by side": "Every method started from the same SFT model and used the same rankings. Left: how "
    "often each method's answer beats the SFT model's on the test questions, with a 95% interval from resampling "
    "the questions (an interval that stays above 0.5 is a real improvement). Right: what each method paid for it "
    "in KL divergence from the SFT model: further right means the model changed more.",
}


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
    rounds = summary.get("rounds") or []
    if len(rounds) > 1:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        xs = [r["round"] for r in rounds]
        for key, label, style in (
            ("win_rate_ppo_vs_sft", "win rate vs SFT", "o-"),
            ("fact_accuracy_ppo", "fact accuracy", "s--"),
            ("abstention_rate_ppo", "abstention (unanswerable)", "^-"),
            ("hallucination_rate_ppo", "hallucination (unanswerable)", "v:"),
        ):
            if all(r.get(key) is not None for r in rounds):
                ax.plot(xs, [r[key] for r in rounds], style, label=label)
        ax.set(ylim=(0, 1.05), xticks=xs, title="Round after round (test questions)", xlabel="round")
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs.append(("Rounds", _png(fig)))
        plt.close(fig)
    return figs


EXPLAINED["Rounds"] = (
    "RLHF is a cycle: after each round the new model's answers are ranked again, the reward model is retrained on "
    "all rankings so far, and PPO continues from the new model (still kept close to the SFT model). Each point is "
    "one round's model on the test questions."
)


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


def side_by_side(samples: list[dict], summary: dict, *, per_category: int = 5) -> list[str]:
    """Five test questions of each category (questions the handbook answers, and those it does not), with the gold
    answer and the answers of SFT and of the model after each round."""
    e = html.escape
    rounds = [r["round"] for r in summary.get("rounds") or []]
    columns = [("sft_answer", "SFT")]
    first = samples[0] if samples else {}
    columns += [(f"round{k}_ppo_answer", f"PPO round {k}") for k in rounds if f"round{k}_ppo_answer" in first]
    if len(columns) == 1 and "ppo_answer" in first:
        columns.append(("ppo_answer", "PPO"))
    parts = []
    for category, title in (("answerable", "the handbook answers them"), ("unanswerable", "the handbook does not")):
        chosen = [s for s in samples if s.get("category") == category][:per_category]
        if not chosen:
            continue
        parts += [
            f"<h3>Five test questions where {e(title)}</h3>",
            "<table><tr><th>question</th><th>gold answer</th>" + "".join(f"<th>{e(t)}</th>" for _, t in columns),
        ]
        for s in chosen:
            cells = [s["question"], s["gold_answer"], *(s.get(k, "") for k, _ in columns)]
            parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    if parts:
        parts.insert(0, "<h2>Answers side by side</h2>")
    return parts


PROBES = {
    "swapped_fact": "the right answer over the same sentence with another place's or policy's fact",
    "answer_vs_abstain": 'the right answer over "I don\'t know" (answerable questions), and "I don\'t know" over '
    "an invented answer (the others)",
    "abstain_vs_invented": '"I don\'t know" over an invented answer, on questions the handbook does not answer',
    "style": "the courteous right answer over the terse right answer",
}


def probe_table(summary: dict) -> list[str]:
    """What the reward model knows: its accuracy on each kind of probe pair (test questions), with a paragraph."""
    rows = [
        (k, summary[f"rm_{k}_accuracy"], summary.get(f"rm_{k}_pairs")) for k in PROBES if f"rm_{k}_accuracy" in summary
    ]
    if not rows:
        return []
    e = html.escape
    parts = [
        "<h2>What the reward model knows</h2>",
        "<p>The reward model is what reinforcement learning optimises, so whatever it gets wrong the chatbot learns. "
        "Each row is a set of answer pairs on the test questions where one answer is plainly better; the number is "
        "how often the reward model scores that one higher (0.5 is a coin toss). Where a row is low, expect the "
        'trained chatbot to get worse at that very thing: a reward model that prefers an invented answer to "I '
        "don't know\" teaches the chatbot to invent.</p>",
        "<table><tr><th>kind</th><th>the better answer</th><th>accuracy</th><th>pairs</th></tr>",
    ]
    for k, acc, n in rows:
        cells = [k.replace("_", " "), PROBES[k], f"{acc:.3f}", str(n or "")]
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    return parts


def score_by_kind_table(summary: dict) -> list[str]:
    """What the reward model pays for each kind of answer (summary["rm_score_by_kind"]): its mean score of the test
    answers of each kind, per model, with how many there were."""
    by_kind = summary.get("rm_score_by_kind") or {}
    if not by_kind:
        return []
    models = ["sft", *(summary.get("methods") or [])]
    models = [m for m in models if any(m in by for by in by_kind.values())]
    e = html.escape
    parts = [
        "<h2>What the reward model pays for each kind of answer</h2>",
        "<p>Each cell is the reward model's mean score of one model's test answers of one kind (how many answers in "
        "brackets); the same reward model scores every column, so the rows compare across columns. Reinforcement "
        "learning moves the chatbot toward the kinds scored highest. Read down the SFT column: where \"I don't "
        'know" to a question the handbook answers scores above a right answer, expect the trained chatbot to say '
        '"I don\'t know" more (wrongful abstentions); where a right fragment scores far below a right full '
        "sentence, expect more full sentences.</p>",
        "<table><tr><th>kind of answer</th>" + "".join(f"<th>{e(m.upper())}</th>" for m in models) + "</tr>",
    ]
    for kind, by in by_kind.items():
        cells = [f"{by[m]['mean']:.2f} ({by[m]['count']})" if m in by else "" for m in models]
        parts.append(f"<tr><td>{e(kind)}</td>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    return parts


def write_report(out: Path) -> Path:
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    samples = _rows(out / "eval_samples.jsonl")
    e = html.escape
    cards = [
        ("win_rate_ppo_vs_sft", "gold win rate, PPO vs SFT"),
        ("fact_accuracy_sft", "fact accuracy, SFT"),
        ("fact_accuracy_ppo", "fact accuracy, PPO"),
        ("abstention_rate_sft", "says 'I don't know' when it should, SFT"),
        ("abstention_rate_ppo", "says 'I don't know' when it should, PPO"),
        ("hallucination_rate_sft", "invents an answer, SFT"),
        ("hallucination_rate_ppo", "invents an answer, PPO"),
        ("rm_swapped_fact_accuracy", "reward model knows the right fact"),
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
        f"<p class='sub'>{e(str(out))}: {e(str(summary.get('test_questions', '')))} test questions, never "
        "trained on and never used to choose a setting. The gold judge grades an answer first by what it says (the "
        "right fact, or 'I don't know' where the handbook has no answer; an invented fact or broken text loses), "
        "then by style (courteous, complete, concise); ties count half.</p>",
        "<p>How to read this: a chatbot was first taught the experts' answers (SFT). Its answers were then ranked "
        "by annotators, a reward model learned their preferences, and reinforcement learning (PPO and the other "
        "methods) trained the chatbot to give answers the reward model scores higher, while staying close to the "
        "SFT model. The numbers below compare each trained chatbot with the SFT one on questions none of them saw.</p>",
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
    parts += probe_table(summary)
    parts += score_by_kind_table(summary)
    for title, png in figures(out):
        parts += [f"<h2>{e(title)}</h2>", f"<img alt='{e(title)}' src='data:image/png;base64,{png}'>"]
        if title in EXPLAINED:
            parts.append(f"<p>{e(EXPLAINED[title])}</p>")
    methods = summary.get("methods") or ["ppo"]
    shown = "ppo" if "ppo" in methods else methods[0]  # the method whose answers and verdicts the table shows
    parts += side_by_side(samples, summary)
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
