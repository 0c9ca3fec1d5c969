"""`rlhf pipeline run pipeline.yaml`: the whole loop on your model and files, stage by stage.

base model -> SFT on gold answers -> K sampled answers per training prompt -> rankings (your annotators' export) ->
reward model -> PPO against it (and the other `methods`: GRPO, RLOO, REINFORCE++, DPO on the rankings, best-of-N)
-> held-out evaluation of every method against the SFT model -> report.html.

Stages talk through files in output_dir; a stage whose output is complete (a `.done` marker) is skipped, so a
rerun continues where an interrupted one stopped. Each stage's settings are the command's own names (`sft:`,
`reward:`, `ppo:` sections take what `rlhf sft`, `rlhf reward train` and `rlhf ppo` take).

What the pipeline cannot know is passed in as `Hooks` by the caller (the demo fills them): how to build a base
model when none is given, who ranks the samples when no rankings file is given, and a judge that knows the right
answers for the evaluation.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

from rlhfkit.config import ConfigError, DPOConfig, PPOConfig, RewardConfig, SFTConfig, build_config
from rlhfkit.runtime.files import write_json, write_jsonl


@dataclass
class PipelineConfig:
    output_dir: str = "pipeline-out"
    """Where every stage writes (sft/, samples.jsonl, rankings*.jsonl, rm/, ppo/, report.html, ...)."""
    base_model: str = ""
    """Model directory or hub id to start from."""
    train_file: str = ""
    """Questions with gold answers for SFT (prompt/completion or messages); their prompts are also sampled and ranked
    for the reward model, and used for PPO."""
    heldout_file: str = ""
    """Test questions with gold answers, never trained on and never used to choose a setting: the reported
    evaluation (report.html, summary.json)."""
    validation_file: str = ""
    """Validation questions with gold answers, never trained on: SFT's eval loss and the evaluation curve during PPO,
    the numbers to choose settings by. Empty: the heldout_file serves (then settings chosen by those curves are
    chosen on the test questions; the run says so)."""
    rankings_file: str = ""
    """Human rankings of the sampled answers (`rlhf annotate export --format rankings`, or pairs/comparisons). With
    several rounds, a name with `{round}` in it, e.g. exports/round{round}.jsonl: each round's file."""
    rounds: int = 1
    """Rounds of RLHF: round k+1 samples answers from round k's PPO policy, gets them ranked, retrains the reward
    model on the rankings of every round so far, and runs PPO again from round k's policy, its KL reference still
    the SFT model. The other methods run in round 1."""
    num_samples: int = 4
    """Answers sampled per training prompt for ranking."""
    sample_temperatures: str = "1.0"
    """Comma-separated sampling temperatures; the K samples are split evenly over them (a hotter share gives the
    annotators worse answers to compare with, so the reward model also learns what a wrong answer looks like)."""
    max_new_tokens: int = 48
    """Longest answer sampled, in PPO and in evaluation."""
    rm_eval_share: float = 0.15
    """Share of ranked prompts kept out of reward-model training to measure its accuracy."""
    hard_negatives: int = 0
    """Per ranked prompt, also put its gold answer and this many gold answers of other training questions (fluent,
    but about another fact) among the answers to rank: comparisons that teach the reward model which fact answers
    which question, which the policy's own samples rarely show it."""
    hard_negatives_from: Literal["random", "similar"] = "random"
    """Which other questions give the hard negatives: "random", or those that share the most words with the prompt
    ("Where is Payroll in Austin?" gets the answers about Payroll in Boston and HR in Austin): the near misses a
    policy confuses it with (another office's floor, "I don't know" where a neighbouring question has no answer)."""
    sft: dict[str, Any] = field(default_factory=dict)
    """Settings for the SFT stage (rlhf sft names)."""
    reward: dict[str, Any] = field(default_factory=dict)
    """Settings for the reward-model stage (rlhf reward train names)."""
    ppo: dict[str, Any] = field(default_factory=dict)
    """Settings for the PPO stage (rlhf ppo names)."""
    methods: list[Literal["ppo", "grpo", "rloo", "reinforce_pp", "dpo", "best_of_n"]] = field(
        default_factory=lambda: ["ppo"]
    )
    """Policy-optimization methods, each run from the same SFT model and the same reward model (DPO: the same
    rankings) and compared side by side on the held-out questions: ppo; grpo, rloo, reinforce_pp (rlhf ppo with that
    advantage, no critic); dpo (rlhf dpo on the rankings); best_of_n (no training: the reward model's pick of
    best_of_n samples of the SFT model)."""
    grpo: dict[str, Any] = field(default_factory=dict)
    """Settings for the grpo method over the ppo section's (rlhf ppo names; num_generations defaults to 4)."""
    rloo: dict[str, Any] = field(default_factory=dict)
    """Settings for the rloo method over the ppo section's (rlhf ppo names; num_generations defaults to 4)."""
    reinforce_pp: dict[str, Any] = field(default_factory=dict)
    """Settings for the reinforce_pp method over the ppo section's (rlhf ppo names)."""
    dpo: dict[str, Any] = field(default_factory=dict)
    """Settings for the dpo method (rlhf dpo names)."""
    best_of_n: int = 4
    """N of the best_of_n method: samples per question (temperature 1) from which the reward model picks one."""
    eval_every: int = 10
    """PPO iterations between held-out evaluations (the win-rate curve in the report); 0: only at the end."""
    test_report: bool = True
    """false: stop after training, before any test question is answered. For choosing settings: the validation
    numbers are in ppo/metrics.jsonl and roundK/ppo/metrics.jsonl (the heldout_* columns) and sft/metrics.json, and
    no test number is printed that could sway the choice. Rerun with true (the default) to evaluate on the test
    questions and write the report; the finished stages are skipped."""
    seed: int = 0
    """Seed for sampling, annotator panels and the rankings split."""

    def temperatures(self) -> list[float]:
        try:
            temperatures = [float(t) for t in self.sample_temperatures.split(",")]
        except ValueError:
            raise ConfigError(
                f"sample_temperatures: expected numbers like 1.0,1.5, got {self.sample_temperatures!r}"
            ) from None
        if not temperatures or min(temperatures) <= 0 or self.num_samples < max(2, len(temperatures)):
            raise ConfigError("sample_temperatures must be > 0 and num_samples at least 2 and at least their count")
        return temperatures


class Judge(Protocol):
    """Knows the right answers to the held-out questions (a person's rubric, or the demo's simulated one)."""

    def assess(self, question: str, answer: str) -> dict[str, bool | None]:
        """Named properties of one answer, e.g. {"fact_accuracy": True, "courteous": False}; the evaluation
        reports the share of answers with each, among those for which it is not None (a property that does not
        apply to this question, e.g. fact accuracy where the handbook has no answer)."""

    def compare(self, question: str, answer_a: str, answer_b: str) -> str:
        """ "a", "b" or "tie"."""

    # Optional, looked up with getattr: category(question) -> str groups the side-by-side answers, and
    # kind(question, answer) -> str (one of the judge's KINDS) the reward model's scores, so the report shows what
    # the reward model pays for each kind of answer.


@dataclass
class Hooks:
    """What the caller knows and the pipeline does not."""

    build_base: Callable[[Path], None] | None = None
    """Write a base model directory at the given path (used when base_model is empty)."""
    rank: Callable[[list[dict]], list[dict]] | None = None
    """Rank the samples ({"prompt", "responses"} records) into rankings records (used when rankings_file is empty)."""
    judge: Judge | None = None
    """Judges held-out answers: win rates and answer properties in the evaluation and report."""
    probes: Callable[[], dict[str, list[dict]]] | None = None
    """Preference pairs ({"prompt", "chosen", "rejected"}) by kind, e.g. {"swapped_fact": [...], "style": [...]},
    on which the reward model's accuracy is reported per kind (what it knows, beside its overall accuracy)."""


def _stage(out: Path, name: str, run: Callable[[], Any], log: Callable[[str], None]) -> None:
    marker = out / f".{name}.done"
    if marker.exists():
        log(f"stage {name}: done earlier, skipped")
        return
    start = time.perf_counter()
    log(f"stage {name} ...")
    run()
    marker.write_text(f"{time.perf_counter() - start:.1f}\n")
    log(f"stage {name}: {time.perf_counter() - start:.0f}s")


def _stage_config(cls, fixed: dict[str, Any], user: dict[str, Any], defaults: dict[str, Any]):
    """Stage settings: the pipeline's defaults, then the user's section; the wiring (paths) cannot be overridden."""
    clash = sorted(set(user) & set(fixed))
    if clash:
        raise ConfigError(f"{cls.__name__}: {', '.join(clash)} is set by the pipeline (it wires the stages)")
    return build_config(cls, {**defaults, **user, **fixed})


def stage_configs(cfg: PipelineConfig, base: str) -> tuple[SFTConfig, RewardConfig, dict[str, Any]]:
    """Every stage's settings, checked before anything runs: SFT, reward model, and each trained method's."""
    out = Path(cfg.output_dir)
    sft = _stage_config(
        SFTConfig,
        {
            "model": base,
            "train_file": cfg.train_file,
            "eval_file": cfg.validation_file or cfg.heldout_file,
            "output_dir": str(out / "sft"),
        },
        cfg.sft,
        {"seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens},
    )
    reward = _stage_config(
        RewardConfig,
        {
            "model": str(out / "sft"),
            "train_file": str(out / "rankings_train.jsonl"),
            "eval_file": str(out / "rankings_eval.jsonl"),
            "output_dir": str(out / "rm"),
        },
        cfg.reward,
        {"seed": cfg.seed},
    )
    if len(set(cfg.methods)) != len(cfg.methods) or not cfg.methods:
        raise ConfigError(f"methods: name each method once, at least one, got {cfg.methods}")
    methods: dict[str, Any] = {}
    for m in cfg.methods:
        if m == "dpo":
            methods[m] = _stage_config(
                DPOConfig,
                {
                    "model": str(out / "sft"),
                    "train_file": str(out / "rankings_train.jsonl"),
                    "eval_file": str(out / "rankings_eval.jsonl"),
                    "output_dir": str(out / "dpo"),
                },
                cfg.dpo,
                {"seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens},
            )
        elif m != "best_of_n":
            own = cfg.ppo if m == "ppo" else {**cfg.ppo, **getattr(cfg, m)}
            methods[m] = _stage_config(
                PPOConfig,
                {
                    "policy": str(out / "sft"),
                    "reward_model": str(out / "rm"),
                    "prompts_file": str(out / "ppo_prompts.jsonl"),
                    "output_dir": str(out / m),
                    "advantage": "gae" if m == "ppo" else m,
                },
                own,
                {
                    "seed": cfg.seed,
                    "max_new_tokens": cfg.max_new_tokens,
                    "num_generations": 4 if m in ("grpo", "rloo") else 1,
                },
            )
    if cfg.rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {cfg.rounds}")
    if cfg.rounds > 1 and "ppo" not in cfg.methods:
        raise ConfigError("rounds > 1 continues PPO round after round: put ppo in methods")
    if cfg.rounds > 1 and cfg.rankings_file and "{round}" not in cfg.rankings_file:
        raise ConfigError(
            f"rankings_file: with {cfg.rounds} rounds each round needs its own file; put {{round}} in the name, "
            "e.g. exports/round{round}.jsonl"
        )
    if cfg.best_of_n < 2 and "best_of_n" in cfg.methods:
        raise ConfigError(f"best_of_n must be >= 2 (samples to pick from), got {cfg.best_of_n}")
    return sft, reward, methods


def run_pipeline(
    cfg: PipelineConfig, *, hooks: Hooks | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    from rlhfkit.data.io import read_records
    from rlhfkit.data.schema import MIXABLE, PREFERENCE_FORMATS

    hooks = hooks or Hooks()
    if not cfg.train_file or not cfg.heldout_file:
        raise ConfigError("train_file and heldout_file are required")
    if not cfg.base_model and hooks.build_base is None:
        raise ConfigError("base_model is required (a model directory or hub id)")
    if not cfg.rankings_file and hooks.rank is None:
        raise ConfigError("rankings_file is required: your annotators' rankings of output_dir/samples.jsonl")
    temperatures = cfg.temperatures()
    started = time.perf_counter()
    out = Path(cfg.output_dir)
    train_records = read_records(cfg.train_file, expect=("sft", "messages")).records
    heldout_records = read_records(cfg.heldout_file, expect=("sft", "messages")).records
    if cfg.validation_file:
        validation_records = read_records(cfg.validation_file, expect=("sft", "messages")).records
    else:
        log("no validation_file: the curves during training use the test questions (heldout_file)")
        validation_records = heldout_records
    prompts = list(dict.fromkeys(r.prompt for r in train_records if isinstance(r.prompt, str)))
    gold_of: dict[str, str] = {}
    for r in train_records:  # the first gold answer of each training question
        if isinstance(r.prompt, str) and isinstance(r.completion, str):
            gold_of.setdefault(r.prompt, r.completion)
    base = cfg.base_model or str(out / "base")
    sft_cfg, rm_cfg, method_cfgs = stage_configs(cfg, base)
    out.mkdir(parents=True, exist_ok=True)

    # --- base model ---
    if not cfg.base_model:
        _stage(out, "base", lambda: hooks.build_base(out / "base"), log)

    # --- SFT ---
    _stage(out, "sft", lambda: _run_sft(sft_cfg), log)

    # --- samples to rank ---
    def sample_answers(model_dir: Path = out / "sft", into: Path = out, seed: int = cfg.seed) -> None:
        from rlhfkit.models.generate import generate_answers
        from rlhfkit.models.load import load_causal_lm, load_tokenizer

        tok = load_tokenizer(str(model_dir), padding_side="left")
        lm = load_causal_lm(str(model_dir))
        answers: list[list[str]] = [[] for _ in prompts]
        for n, temperature in enumerate(temperatures):
            k = cfg.num_samples // len(temperatures) + (n < cfg.num_samples % len(temperatures))
            batch = generate_answers(
                lm,
                tok,
                prompts,
                num_samples=k,
                temperature=temperature,
                batch_size=32,
                max_new_tokens=cfg.max_new_tokens,
                seed=seed + n,
            )
            for mine, new in zip(answers, batch):
                mine += new

        # a prompt whose samples are all one text gives nothing to rank: sample it again, hotter (with hard
        # negatives every prompt has its gold answer and another to rank against, so its own answer is kept)
        def hotter(chosen: list[str], attempt: int) -> list[list[str]]:
            return generate_answers(
                lm,
                tok,
                chosen,
                num_samples=cfg.num_samples,
                temperature=max(temperatures) * (1.25 + 0.25 * attempt),
                batch_size=32,
                max_new_tokens=cfg.max_new_tokens,
                seed=seed + len(temperatures) + attempt,
            )

        if cfg.hard_negatives:
            answers = with_hard_negatives(
                prompts, answers, gold_of, cfg.hard_negatives, seed=seed, similar=cfg.hard_negatives_from == "similar"
            )
        else:
            answers = resample_alike(prompts, answers, hotter, log=log)
        into.mkdir(parents=True, exist_ok=True)
        write_jsonl(into / "samples.jsonl", ({"prompt": p, "responses": a} for p, a in zip(prompts, answers)))

    _stage(out, "samples", sample_answers, log)

    # --- rankings (the annotators' file, or the caller's ranker) ---
    def rank(into: Path = out, round_: int = 1, earlier: list[Path] | None = None) -> None:
        """Rankings of into/samples.jsonl, split by prompt into train and eval; with `earlier` rounds' directories,
        their splits are added, so the reward model trains on every round's rankings."""
        if cfg.rankings_file:
            path = Path(cfg.rankings_file.replace("{round}", str(round_)))
            if not path.exists():
                raise ConfigError(
                    f"{path} is not there yet: rank the answers in {into / 'samples.jsonl'} "
                    f"(for instance in the annotation app), export the rankings to {path} "
                    "and run again; finished stages are skipped"
                )
            found = read_records(path, expect=PREFERENCE_FORMATS)
            first = read_records(earlier[0] / "rankings.jsonl").format if earlier else found.format
            mixable = {*MIXABLE, "preferences"}
            if found.format != first and not {found.format, first} <= mixable:
                raise ConfigError(
                    f"{path}: {found.format}, but round 1's file holds {first}; the reward model trains on every "
                    "round's file together: export each round with --format preferences"
                )
            rows = [r.to_dict() for r in found.records]
        else:
            rows = hooks.rank([json.loads(x) for x in (into / "samples.jsonl").read_text().splitlines()])
        by_prompt: dict[str, list[dict]] = {}
        for row in rows:
            by_prompt.setdefault(json.dumps(row["prompt"]), []).append(row)
        keys = sorted(by_prompt)
        random.Random(cfg.seed + round_ - 1).shuffle(keys)
        n_eval = max(1, round(cfg.rm_eval_share * len(keys)))
        write_jsonl(into / "rankings.jsonl", rows)
        for split, chosen in (("train", keys[n_eval:]), ("eval", keys[:n_eval])):
            before = [x for d in earlier or [] for x in (d / f"rankings_{split}.jsonl").read_text().splitlines()]
            mine = (r for k in chosen for r in by_prompt[k])
            write_jsonl(into / f"rankings_{split}.jsonl", [*(json.loads(x) for x in before), *mine])

    _stage(out, "rankings", rank, log)

    # --- reward model ---
    _stage(out, "reward", lambda: _run_reward(rm_cfg), log)

    # --- PPO and the other methods, each from the SFT model ---
    write_jsonl(out / "ppo_prompts.jsonl", ({"prompt": p} for p in prompts))
    evaluator = HeldOutEvaluator(heldout_records, out, judge=hooks.judge, max_new_tokens=cfg.max_new_tokens)
    evaluator.during = HeldOutEvaluator(validation_records, out, judge=hooks.judge, max_new_tokens=cfg.max_new_tokens)
    for m in cfg.methods:
        if m == "ppo":
            _stage(out, m, lambda: _run_ppo(method_cfgs["ppo"], evaluator, cfg.eval_every), log)
        elif m == "dpo":
            _stage(out, m, lambda: _run_dpo(method_cfgs["dpo"]), log)
        elif m == "best_of_n":
            _stage(out, m, lambda: evaluator.best_of_n(cfg.best_of_n, seed=cfg.seed), log)
        else:
            _stage(out, m, lambda m=m: _run_ppo(method_cfgs[m], None, 0), log)

    # --- later rounds: rank the last policy's answers, retrain the reward model on all rankings, PPO again ---
    round_dirs = [out]
    for k in range(2, cfg.rounds + 1):
        here, last = out / f"round{k}", round_dirs[-1]
        policy = last / "ppo"
        _stage(out, f"round{k}_samples", lambda h=here, p=policy, k=k: sample_answers(p, h, cfg.seed + 1000 * k), log)
        _stage(out, f"round{k}_rankings", lambda h=here, k=k, e=list(round_dirs): rank(h, k, e), log)
        rm_k = build_config(
            RewardConfig,
            {
                **rm_cfg.__dict__,
                "train_file": str(here / "rankings_train.jsonl"),
                "eval_file": str(here / "rankings_eval.jsonl"),
                "output_dir": str(here / "rm"),
                "lora": rm_cfg.lora.__dict__,
            },
        )
        _stage(out, f"round{k}_reward", lambda c=rm_k: _run_reward(c), log)
        ppo_k = build_config(
            PPOConfig,
            {
                **method_cfgs["ppo"].__dict__,
                "policy": str(policy),
                "reference": str(out / "sft"),
                "reward_model": str(here / "rm"),
                "output_dir": str(here / "ppo"),
                "lora": method_cfgs["ppo"].lora.__dict__,
            },
        )
        _stage(out, f"round{k}_ppo", lambda c=ppo_k: _run_ppo(c, evaluator, cfg.eval_every), log)
        round_dirs.append(here)
    if "ppo" in cfg.methods:  # the top-level numbers describe the last round's policy and reward model
        evaluator.dirs.update(ppo=round_dirs[-1] / "ppo", rm=round_dirs[-1] / "rm")
        evaluator.rounds = [d / "ppo" for d in round_dirs]

    # --- evaluation and report ---
    summary: dict[str, Any] = {}

    def evaluate_and_report() -> None:
        from rlhfkit.eval.report import write_report

        summary.update(evaluator.final(out / "eval_samples.jsonl", cfg.methods, seed=cfg.seed))
        last_rm = round_dirs[-1] / "rm"
        rm_metrics = json.loads((last_rm / "metrics.json").read_text())
        summary.update({"rm_eval_accuracy": rm_metrics.get("eval_accuracy"), "rm_eval_ece": rm_metrics.get("eval_ece")})
        if hooks.probes is not None:
            summary.update(probe_accuracy(last_rm, hooks.probes()))
        if "ppo" in cfg.methods:
            ppo_summary = json.loads((evaluator.dirs["ppo"] / "metrics.json").read_text())
            summary.update(
                {
                    "ppo_kl_last_tenth": ppo_summary.get("kl_last_tenth"),
                    "ppo_reward_first_tenth": ppo_summary.get("reward_first_tenth"),
                    "ppo_reward_last_tenth": ppo_summary.get("reward_last_tenth"),
                }
            )
        summary["wall_seconds"] = round(time.perf_counter() - started, 1)
        write_json(out / "summary.json", summary)
        write_report(out)

    if not cfg.test_report:
        said = "test_report is false: stopped before the test questions."
        if "ppo" in cfg.methods:  # every round's PPO evaluates the validation questions as it trains
            curves = ", ".join(str(d / "ppo" / "metrics.jsonl") for d in round_dirs)
            said += f" Validation numbers (the heldout_* columns): {curves}"
        log(said)
        return {}
    _stage(out, "report", evaluate_and_report, log)
    if not summary:
        summary.update(json.loads((out / "summary.json").read_text()))
    return summary


def _run_sft(cfg: SFTConfig) -> None:
    from rlhfkit.algorithms.sft import train

    train(cfg)


def _run_reward(cfg: RewardConfig) -> None:
    from rlhfkit.algorithms.reward import train

    train(cfg)


def _run_ppo(cfg: PPOConfig, evaluator: HeldOutEvaluator | None, every: int) -> None:
    from rlhfkit.algorithms.ppo import train

    train(cfg, evaluate=evaluator.during.during_ppo if evaluator else None, eval_every=every)


def _run_dpo(cfg: DPOConfig) -> None:
    from rlhfkit.algorithms.dpo import train

    train(cfg)


def properties(judge: Judge | None, questions: list[str], answers: list[str]) -> dict[str, float | None]:
    """The share of answers with each property the judge names, among the answers it applies to (None where it
    applies to none); empty without a judge."""
    if judge is None or not answers:
        return {}
    assessed = [judge.assess(q, a) for q, a in zip(questions, answers)]
    out: dict[str, float | None] = {}
    for name in assessed[0]:
        values = [a[name] for a in assessed if a[name] is not None]
        out[name] = sum(values) / len(values) if values else None
    return out


def resample_alike(
    prompts: list[str],
    answers: list[list[str]],
    sample: Callable[[list[str], int], list[list[str]]],
    *,
    tries: int = 2,
    log: Callable[[str], None] = print,
) -> list[list[str]]:
    """Prompts whose several samples are all one text (nothing to rank) sampled again by `sample(prompts, attempt)`,
    up to `tries` times; the rest are kept as they are."""
    answers = [list(a) for a in answers]
    for attempt in range(tries):
        alike = [i for i, a in enumerate(answers) if len(a) > 1 and len(set(a)) == 1]
        if not alike:
            break
        log(f"  sampling {len(alike)} prompts again: their {len(answers[alike[0]])} samples were one answer")
        for i, new in zip(alike, sample([prompts[i] for i in alike], attempt), strict=True):
            answers[i] = new
    return answers


def with_hard_negatives(
    prompts: list[str],
    answers: list[list[str]],
    gold_of: dict[str, str],
    k: int,
    *,
    seed: int,
    similar: bool = False,
) -> list[list[str]]:
    """Each prompt's samples plus its gold answer and the gold answers of k other questions (distinct texts): at
    random, or (`similar`) of the questions sharing the most words with it (Jaccard over lower-case words; ties
    broken at random) whose gold answer is not its own said another way (one's words all in the other's)."""
    rng = random.Random(seed)
    golds = sorted(set(gold_of.values()))
    bag = cache(lambda text: frozenset(re.findall(r"[a-z0-9']+", text.lower())))

    def restates(a: str, b: str) -> bool:  # one's words all in the other's: the same, tersely or politely
        return bag(a) <= bag(b) or bag(b) <= bag(a)

    out = []
    for p, mine in zip(prompts, answers):
        own = gold_of.get(p)
        if similar:
            near = sorted(
                (q for q in gold_of if not (own and restates(own, gold_of[q]))),
                key=lambda q: (-len(bag(p) & bag(q)) / max(1, len(bag(p) | bag(q))), rng.random()),
            )
            picked = list(dict.fromkeys(gold_of[q] for q in near))[:k]
        else:
            others = [g for g in golds if g != own]
            picked = rng.sample(others, min(k, len(others)))
        out.append(list(dict.fromkeys([*mine, *([own] if own else []), *picked])))
    return out


def probe_accuracy(rm_dir: Path, probes: dict[str, list[dict]]) -> dict[str, float]:
    """The reward model's accuracy (chosen scored above rejected) on each kind of probe pair."""
    from rlhfkit.algorithms.reward import score_texts
    from rlhfkit.models.reward import load_scorer

    scorer, tok = load_scorer(str(rm_dir))
    cfg = RewardConfig(eval_batch_size=32)
    out = {}
    for kind, pairs in probes.items():
        if not pairs:
            continue
        prompts = [p["prompt"] for p in pairs]
        chosen = score_texts(scorer, tok, prompts, [p["chosen"] for p in pairs], cfg=cfg)
        rejected = score_texts(scorer, tok, prompts, [p["rejected"] for p in pairs], cfg=cfg)
        out[f"rm_{kind}_accuracy"] = (chosen > rejected).float().mean().item()
        out[f"rm_{kind}_pairs"] = len(pairs)
    return out


def win_rate(verdicts: list[str]) -> float:
    """Share of comparisons won ("a"), ties counting half."""
    return (verdicts.count("a") + 0.5 * verdicts.count("tie")) / max(len(verdicts), 1)


class HeldOutEvaluator:
    """Greedy answers to the held-out questions, compared with the SFT model's: the judge's win rate and answer
    properties (when there is a judge), gold-answer metrics and reward-model scores."""

    def __init__(self, records, out: Path, *, judge: Judge | None, max_new_tokens: int):
        self.out, self.judge, self.max_new_tokens = out, judge, max_new_tokens
        self.prompts = [r.prompt for r in records]
        self.golds = [r.completion for r in records]
        self._sft_answers: list[str] | None = None
        self.during = self  # the evaluator of the curves during training (the validation questions)
        self.dirs: dict[str, Path] = {}  # a method's model directory where it is not out/<method>
        self.rounds: list[Path] = []  # every round's PPO policy, first to last

    def model_dir(self, method: str) -> Path:
        return self.dirs.get(method, self.out / method)

    def answers(self, model, tokenizer) -> list[str]:
        from rlhfkit.models.generate import greedy_answers

        return greedy_answers(model, tokenizer, self.prompts, max_new_tokens=self.max_new_tokens, batch_size=32)

    def sft_answers(self) -> list[str]:
        if self._sft_answers is None:
            from rlhfkit.models.load import load_causal_lm, load_tokenizer

            self._sft_answers = self.answers(
                load_causal_lm(str(self.out / "sft")), load_tokenizer(str(self.out / "sft"), padding_side="left")
            )
        return self._sft_answers

    def during_ppo(self, iteration: int, policy) -> dict[str, float]:
        from rlhfkit.eval.gold import gold_metrics
        from rlhfkit.models.load import load_tokenizer

        answers = self.answers(policy, load_tokenizer(str(self.out / "sft"), padding_side="left"))
        row = {"heldout_token_f1": gold_metrics(answers, self.golds)["token_f1"]}
        if self.judge is not None:
            verdicts = [self.judge.compare(*qab) for qab in zip(self.prompts, answers, self.sft_answers())]
            row["heldout_win_rate_vs_sft"] = win_rate(verdicts)
            row.update({f"heldout_{k}": v for k, v in properties(self.judge, self.prompts, answers).items()})
        return row

    def best_of_n(self, n: int, *, seed: int) -> None:
        """The best_of_n method: n samples of the SFT model per held-out question (temperature 1), the reward
        model's pick; no training."""
        from rlhfkit.algorithms.best_of_n import best_of_n
        from rlhfkit.models.load import load_causal_lm, load_tokenizer
        from rlhfkit.models.reward import load_scorer

        scorer, rm_tok = load_scorer(str(self.out / "rm"))
        answers, _, _ = best_of_n(
            load_causal_lm(str(self.out / "sft")),
            load_tokenizer(str(self.out / "sft"), padding_side="left"),
            self.prompts,
            n=n,
            scorer=scorer,
            scorer_tokenizer=rm_tok,
            batch_size=32,
            max_new_tokens=self.max_new_tokens,
            temperature=1.0,
            seed=seed,
        )
        (self.out / "best_of_n").mkdir(exist_ok=True)
        write_json(self.out / "best_of_n" / "answers.json", {"n": n, "answers": answers})

    def method_answers(self, method: str) -> list[str]:
        if method == "best_of_n":
            return json.loads((self.out / "best_of_n" / "answers.json").read_text())["answers"]

        return self.answers_of(self.model_dir(method))

    def answers_of(self, model_dir: Path) -> list[str]:
        from rlhfkit.models.load import load_causal_lm, load_tokenizer

        return self.answers(load_causal_lm(str(model_dir)), load_tokenizer(str(model_dir), padding_side="left"))

    def kl_to_sft(self, method: str, *, seed: int) -> float:
        """KL(method || SFT) per answer on the held-out questions, from answers the method samples at temperature 1;
        for best_of_n, the known value log n - (n - 1) / n (Beirami et al. 2024: exact for distinct samples, an
        upper bound otherwise)."""
        import math

        if method == "best_of_n":
            n = json.loads((self.out / "best_of_n" / "answers.json").read_text())["n"]
            return math.log(n) - (n - 1) / n
        from rlhfkit.data.prompts import encode_prompt
        from rlhfkit.eval.kl import sampled_kl
        from rlhfkit.models.load import load_causal_lm, load_tokenizer
        from rlhfkit.models.logprobs import AnswerLogprobs

        tok = load_tokenizer(str(self.out / "sft"), padding_side="left")
        policy = load_causal_lm(str(self.model_dir(method))).eval()
        sft = load_causal_lm(str(self.out / "sft")).eval()

        def logprobs(model):
            scorer = AnswerLogprobs(model, pad_id=tok.pad_token_id)
            return lambda p, a: scorer(p, a, list(range(len(a))))[0]

        prompt_ids = [encode_prompt(tok, q, template="chat") for q in self.prompts]
        return sampled_kl(
            policy,
            logprobs(policy),
            logprobs(sft),
            prompt_ids,
            pad_id=tok.pad_token_id,
            eos_id=tok.eos_token_id,
            max_new_tokens=self.max_new_tokens,
            batch_size=32,
            seed=seed,
        )

    def final(self, samples_path: Path, methods: list[str], *, seed: int = 0) -> dict[str, Any]:
        """Every method's held-out answers beside the SFT model's: gold-answer metrics, reward-model scores, the
        judge's properties and win rate vs SFT (with a 95% interval), KL to SFT, and the stage's wall time."""
        from rlhfkit.algorithms.reward import score_texts
        from rlhfkit.eval.gold import gold_metrics
        from rlhfkit.models.reward import load_scorer

        scorer, rm_tok = load_scorer(str(self.model_dir("rm")))
        rm_cfg = RewardConfig(eval_batch_size=32)
        answers = {"sft": self.sft_answers(), **{m: self.method_answers(m) for m in methods}}
        scores = {name: score_texts(scorer, rm_tok, self.prompts, a, cfg=rm_cfg) for name, a in answers.items()}
        summary: dict[str, Any] = {
            "heldout_questions": len(self.prompts),
            "test_questions": len(self.prompts),
            "validation_questions": len(self.during.prompts),
            "methods": list(methods),
        }
        verdicts: dict[str, list] = {}
        for name, texts in answers.items():
            summary.update({f"{k}_{name}": v for k, v in gold_metrics(texts, self.golds).items()})
            summary[f"rm_score_{name}"] = scores[name].mean().item()
            summary.update({f"{k}_{name}": v for k, v in properties(self.judge, self.prompts, texts).items()})
            if name == "sft":
                continue
            summary[f"rm_score_{name}_minus_sft"] = (scores[name] - scores["sft"]).mean().item()
            summary[f"kl_to_sft_{name}"] = self.kl_to_sft(name, seed=seed)
            marker = self.out / f".{name}.done"
            summary[f"seconds_{name}"] = float(marker.read_text()) if marker.exists() else None
            verdicts[name] = [None] * len(self.prompts)
            if self.judge is not None:
                verdicts[name] = [self.judge.compare(q, a, s) for q, a, s in zip(self.prompts, texts, answers["sft"])]
                summary[f"win_rate_{name}_vs_sft"] = win_rate(verdicts[name])
                summary[f"win_rate_{name}_vs_sft_ci95"] = win_rate_interval(verdicts[name], seed=seed)
        first = "ppo" if "ppo" in methods else methods[0]
        if self.judge is not None:
            summary["win_rate_ci"] = summary[f"win_rate_{first}_vs_sft_ci95"]
        by_round = [answers["ppo"] if d == self.model_dir("ppo") else self.answers_of(d) for d in self.rounds]
        if self.judge is not None and by_round:
            summary["rounds"] = [
                self.round_summary(k, texts, answers["sft"], seed=seed) for k, texts in enumerate(by_round, 1)
            ]
        kind = getattr(self.judge, "kind", None)
        if kind is not None:
            summary["rm_score_by_kind"] = score_by_kind(
                {name: [kind(q, a) for q, a in zip(self.prompts, texts)] for name, texts in answers.items()},
                {name: s.tolist() for name, s in scores.items()},
                order=getattr(self.judge, "KINDS", ()),
            )
        category = getattr(self.judge, "category", None)
        rows = []
        for n, (q, g) in enumerate(zip(self.prompts, self.golds)):
            row: dict[str, Any] = {"question": q, "gold_answer": g}
            for name, texts in answers.items():
                row[f"{name}_answer"] = texts[n]
                row[f"{name}_rm_score"] = scores[name][n].item()
            row.update({f"judge_{m}": verdicts[m][n] for m in methods})
            row["judge"] = verdicts[first][n]  # the first method's (ppo's when it ran) verdict against SFT
            row.update({f"round{k}_ppo_answer": texts[n] for k, texts in enumerate(by_round, 1)})
            if category is not None:
                row["category"] = category(q)
            rows.append(row)
        write_jsonl(samples_path, rows)
        write_json(self.out / "heldout_scores.json", {name: s.tolist() for name, s in scores.items()})
        return summary

    def round_summary(self, k: int, texts: list[str], sft: list[str], *, seed: int) -> dict[str, Any]:
        """One round's PPO policy on the test questions: win rate vs SFT (95% interval) and the judge's properties."""
        verdicts = [self.judge.compare(q, a, b) for q, a, b in zip(self.prompts, texts, sft)]
        props = properties(self.judge, self.prompts, texts)
        return {
            "round": k,
            "win_rate_ppo_vs_sft": win_rate(verdicts),
            "win_rate_ci": win_rate_interval(verdicts, seed=seed),
            **{f"{name}_ppo": v for name, v in props.items()},
        }


def score_by_kind(
    kinds: dict[str, list[str]], scores: dict[str, list[float]], *, order: tuple[str, ...] = ()
) -> dict[str, dict[str, dict[str, float]]]:
    """{kind: {model: {"mean": its mean reward-model score on answers of that kind, "count": how many}}}: for each
    model (e.g. "sft", "ppo") the kind of each of its answers and their scores. Kinds in `order` first, in that
    order, then any others as they appear; a model with no answer of a kind is left out of that kind's entry."""
    out: dict[str, dict[str, list[float]]] = {k: {} for k in order}
    for name, ks in kinds.items():
        for k, x in zip(ks, scores[name], strict=True):
            out.setdefault(k, {}).setdefault(name, []).append(x)
    return {
        k: {name: {"mean": sum(xs) / len(xs), "count": len(xs)} for name, xs in by.items()}
        for k, by in out.items()
        if by
    }


def win_rate_interval(verdicts: list[str], *, seed: int = 0, resamples: int = 2000) -> list[float]:
    """A 95% bootstrap interval of the win rate over questions: the 2.5th and 97.5th percentiles of the win rates of
    `resamples` resamplings of the questions with replacement (outcomes 1 win, 1/2 tie, 0 loss; seeded)."""
    outcomes = [{"a": 1.0, "tie": 0.5}.get(v, 0.0) for v in verdicts]
    n = len(outcomes)
    if n < 2:
        return [0.0, 1.0]
    rng = random.Random(seed)
    rates = sorted(sum(rng.choices(outcomes, k=n)) / n for _ in range(resamples))
    return [rates[int(0.025 * resamples)], rates[int(0.975 * resamples) - 1]]
