"""KTO: `rlhf kto` beside current TRL's KTOTrainer on identical models, ratings and settings, both timed as whole
processes with their peak memory; and the KTO loss of one fixed batch, computed by each side's own code.

usage: python bench/kto.py [--steps 100] [--batch 16] [--lr 5e-5] [--beta 0.1] [--desirable-weight 2.0]
           [--undesirable-weight 1.0]
The tiny Llama policy of bench/tiny_models.py (hidden 128, 4 layers), full fine-tuning, raw prompts; 1600 thumbs
up/down ratings of help-desk answers (one in three good: a polite answer; the others rude), written as rlhf's
`ratings` format and as TRL's unpaired format, TRL's in the order of rlhf's batches, so both sides train on the same
batches in the same order. Both: beta 0.1, desirable weight 2 (twice as many bad ratings as good; in the range TRL
recommends), cosine learning rate without warmup, gradient clip 1.0, max length 128, reference logprobs computed
once before training, no gradient checkpointing, CPU fp32. TRL runs bench/trl_kto.py.

The loss is the same on both sides: the mean over the batch of w_D (1 - sigmoid(beta (r - z))) for a good answer and
w_U (1 - sigmoid(beta (z - r))) for a bad one, r = log pi(y|x) - log pi_ref(y|x), with the reference point
z = max(0, mean over the batch of the same log-ratio of mismatched (x, y') pairs), not differentiated. The sides
differ only in which y' goes with an x: TRL takes the previous example's answer in the batch (a rotation by one),
rlhf another prompt's answer chosen over the whole file (a seeded shuffle, skipping answers to the same prompt).
At step 0 policy = reference, so r = z = 0 and the step-1 loss is the batch's mean of w / 2 on both sides. So the
check batch (the first training batch) is also scored by the policy rlhf trained against the starting model as
reference, and the other way round (the mismatched answers' mean log-ratio changes sign, so z > 0 in one of the
two): with TRL's mismatched pairs on both sides (the same definition) and with each side's own.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import run_measured, write_jsonl  # noqa: E402
from reward import politeness_pairs  # noqa: E402

HERE = Path(__file__).parent
SEED, N = 42, 1600


def ratings(n: int) -> list[dict]:
    """rlhf's ratings: each pair's polite answer rated good one time in three, else its rude answer rated bad."""
    rows = []
    for i, r in enumerate(politeness_pairs(n, 0)):
        good = i % 3 == 0
        label = "good" if good else "bad"
        rows.append({"prompt": r["prompt"], "response": r["chosen" if good else "rejected"], "label": label})
    return rows


def ours_check(policy: Path, reference: Path, data: Path, idx: list[int], settings: dict) -> dict:
    """rlhf's KTO loss and reference point of the examples `idx` of the training file, `policy` against
    `reference`: with TRL's mismatched answers (the previous example's in the batch) and with rlhf's own (those of
    the training run). Returns both results and the batch's token ids for TRL."""
    import torch

    from rlhfkit.algorithms.dpo import Example, example_losses, load_examples, reference_logprobs
    from rlhfkit.config import DPOConfig
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.models.logprobs import AnswerLogprobs

    cfg = DPOConfig(loss="kto", prompt_template="raw", seed=SEED, **settings)
    tok = load_tokenizer(str(reference))
    examples = load_examples(str(data), tok, cfg)[0]  # as the training run built them, with rlhf's pairs
    own = [examples[i] for i in idx]
    # TRL's pairing: example k's KL answer is example k-1's answer (k = 0 takes the last one's)
    trl = [Example(e.prompt, (e.answers[0], own[k - 1].answers[0]), good=e.good) for k, e in enumerate(own)]

    def score(module_dir: Path):
        model = load_causal_lm(str(module_dir), dtype="float32", device="cpu").eval()
        return AnswerLogprobs(model, pad_id=tok.pad_token_id)

    ref_model, pol_model = score(reference), score(policy)
    out = {}
    for name, examples in (("trl_pairs", trl), ("own_pairs", own)):
        refs = reference_logprobs(ref_model, examples, batch_size=len(examples), what="check", enabled=False)
        with torch.no_grad():
            losses, stats = example_losses(pol_model, examples, refs, cfg)
        out[name] = (losses.sum().item() / len(examples), stats["kl_sum"].item() / len(examples))
    out["batch"] = {
        "prompt_ids": [e.prompt for e in trl],
        "completion_ids": [list(e.answers[0]) for e in trl],
        "KL_completion_ids": [list(e.answers[1]) for e in trl],
        "label": [bool(e.good) for e in trl],
    }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--desirable-weight", type=float, default=2.0)
    p.add_argument("--undesirable-weight", type=float, default=1.0)
    a = p.parse_args()

    from tiny_models import build

    from rlhfkit.runtime.training import step_indices

    work = Path(tempfile.mkdtemp(prefix="bench-kto-"))
    model = build(work / "models") / "policy"
    rows = ratings(N)
    train = write_jsonl(work / "ratings.jsonl", rows)
    # TRL reads its data in order: the examples of rlhf's steps, one step after another
    order = [i for s in range(a.steps) for i in step_indices(s, n=N, batch_size=a.batch, seed=SEED)]
    unpaired = [
        {"prompt": rows[i]["prompt"], "completion": rows[i]["response"], "label": rows[i]["label"] == "good"}
        for i in order
    ]
    trl_train = write_jsonl(work / "unpaired.jsonl", unpaired)
    settings = dict(
        beta=a.beta, desirable_weight=a.desirable_weight, undesirable_weight=a.undesirable_weight, max_length=128
    )

    ours_cmd = [sys.executable, "-m", "rlhfkit.cli", "kto", f"model={model}", f"train_file={train}"]
    ours_cmd += [f"output_dir={work / 'ours'}", f"max_steps={a.steps}", f"batch_size={a.batch}"]
    ours_cmd += [f"learning_rate={a.lr}", "warmup_ratio=0", "max_grad_norm=1.0", f"seed={SEED}"]
    ours_cmd += [f"{k}={v}" for k, v in settings.items()]
    ours_cmd += ["prompt_template=raw", "logging_steps=1", "mixed_precision=fp32", "device=cpu", "lora.r=0"]
    ours_s, _, ours_gib = run_measured(ours_cmd)
    ours = json.loads((work / "ours" / "metrics.json").read_text())
    ours_first = json.loads((work / "ours" / "metrics.jsonl").read_text().splitlines()[0])["loss"]

    trl_args = ["--batch", a.batch, "--lr", a.lr, "--beta", a.beta, "--max-length", 128]
    trl_args += ["--desirable-weight", a.desirable_weight, "--undesirable-weight", a.undesirable_weight]
    trl_s, out, trl_gib = run_measured(
        [sys.executable, HERE / "trl_kto.py", model, trl_train, "--steps", a.steps, *trl_args]
    )
    m = re.search(r"in ([\d.]+)s; first loss ([\d.]+); last loss ([\d.]+)", out)
    trl_loop, trl_first, trl_last = map(float, m.groups())

    # the fixed batch: rlhf's first training batch, scored by the trained policy against the starting model, and the
    # other way round (the mismatched answers' mean log-ratio changes sign, so one of the two has z > 0)
    checks = []
    for name, policy, reference in (
        ("trained vs start", work / "ours", model),
        ("start vs trained", model, work / "ours"),
    ):
        check = ours_check(policy, reference, train, order[: a.batch], settings)
        batch_file = work / "check.json"
        batch_file.write_text(json.dumps(check["batch"]))
        trl_cmd = [sys.executable, HERE / "trl_kto.py", reference, trl_train, "--check", batch_file, "--policy", policy]
        _, text, _ = run_measured([*trl_cmd, *trl_args])
        checks.append((name, check, *map(float, re.search(r"check loss ([-\d.e]+) kl ([-\d.e]+)", text).groups())))

    import torch
    import trl

    print(
        f"\nKTO, tiny Llama (hidden 128, 4 layers), full fine-tuning, raw prompts; {a.steps} steps x {a.batch} "
        f"ratings (1 in 3 good), lr {a.lr}, beta {a.beta}, weights {a.desirable_weight}/{a.undesirable_weight}, "
        f"max length 128, CPU fp32, {torch.get_num_threads()} threads; whole processes timed"
    )
    print(
        f"{'system':<24}{'process s':>10}{'loop s':>8}{'peak GiB':>9}{'step-1 loss':>13}{'last loss':>11}{'vs TRL':>8}"
    )
    for name, whole, loop, gib, l0, l1 in (
        ("rlhfkit (rlhf kto)", ours_s, ours["train_seconds"], ours_gib, ours_first, ours["train_loss"]),
        (f"trl {trl.__version__} KTOTrainer", trl_s, trl_loop, trl_gib, trl_first, trl_last),
    ):
        print(f"{name:<24}{whole:>10.1f}{loop:>8.1f}{gib:>9.2f}{l0:>13.6f}{l1:>11.4f}{trl_s / whole:>7.2f}x")
    print(f"step-1 loss difference: {abs(ours_first - trl_first):.1e}")
    print("KTO loss of the first batch (policy vs reference), each side's own code; z: the KL reference point")
    print(f"{'':<18}{'pairs':<7}{'rlhfkit loss':>14}{'z':>10}{'trl loss':>14}{'z':>10}{'difference':>12}")
    for name, check, trl_loss, trl_z in checks:
        for pairs, key in (("TRL's", "trl_pairs"), ("own", "own_pairs")):
            loss, z = check[key]
            diff = abs(loss - trl_loss)
            print(f"{name:<18}{pairs:<7}{loss:>14.8f}{z:>10.6f}{trl_loss:>14.8f}{trl_z:>10.6f}{diff:>12.1e}")
    print("(TRL's pairs: the same definition on both sides; own: rlhf's mismatched answers, a different estimate of z)")


if __name__ == "__main__":
    main()
