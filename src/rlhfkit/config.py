"""One dataclass per command. YAML file first, then dotted `key=value` overrides; unknown keys are rejected.

Each field is documented once, by the string literal under it; `field_docs` reads those strings for `--help`.
Allowed values are declared in the type (`Literal[...]`) and checked where a config is built; settings several
commands share live in one base class (`RunSettings`), so they are declared and documented once.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from rlhfkit.runtime.files import atomic_open

C = TypeVar("C")


class ConfigError(ValueError):
    """A setting is unknown, has a value of the wrong type or out of range, or settings contradict each other:
    the user's input is wrong (the CLI exits with 2 and the message)."""


MixedPrecision = Literal["auto", "fp32", "bf16", "fp16"]
PromptTemplate = Literal["chat", "raw"]


@dataclass
class LoraSettings:
    r: int = 0
    """LoRA rank; 0 means full fine-tuning (every weight trains)."""
    alpha: int = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: str = "all-linear"
    """Comma-separated module names to adapt, or "all-linear"."""
    merge: bool = True
    """Save the merged model (a plain HF directory); false saves the adapter only."""


@dataclass
class RunSettings:
    """Settings every training command shares; each command's class adds its own (and may change a default)."""

    at_least_one: ClassVar[tuple[str, ...]] = ("batch_size", "grad_accum", "logging_steps")

    output_dir: str = "runs/out"
    """Where the model, config.yaml, metrics.jsonl, metrics.json and checkpoints/ go."""
    learning_rate: float = 2e-5
    """Peak learning rate (AdamW)."""
    batch_size: int = 8
    """Examples per optimizer step, over all processes and accumulation micro-steps together."""
    grad_accum: int = 1
    """Micro-steps each optimizer step is split into (same result, less memory)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this; 0 turns clipping off."""
    prompt_template: PromptTemplate = "chat"
    """"chat": prompts go through the tokenizer's chat template (or the fallback); "raw": used verbatim."""
    seed: int = 42
    """Seed for initialisation, data order, dropout and sampling."""
    logging_steps: int = 10
    """Write a metrics.jsonl row every N optimizer steps (PPO: iterations)."""
    save_steps: int = 0
    """Write a resumable checkpoint every N steps (PPO: iterations); 0 only the final model."""
    save_total_limit: int = 2
    """Checkpoints kept in output_dir/checkpoints (the newest)."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir/checkpoints."""
    mixed_precision: MixedPrecision = "auto"
    """Compute precision. Weights that train are always fp32 (master weights); "bf16" or "fp16" runs the forward and
    backward passes under autocast in that type, "fp32" in fp32; "auto" is bf16 on a GPU that supports it, else fp32."""
    device: str = "auto"
    """cuda, mps, cpu or auto (first available in that order)."""
    gradient_checkpointing: bool = False
    """Keep only each layer's input during the forward pass and recompute the rest in the backward pass: much less
    activation memory for about a third more compute (same numbers)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings (lora.r=0: full fine-tuning)."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """With several processes (torchrun): "ddp" keeps every weight, gradient and optimizer state on every process
    (fastest while the model fits); "fsdp" shards them over the processes (FSDP2, each decoder layer gathered only
    while it computes), for models that do not fit one device. One process: the same either way."""

    def validate(self) -> None:
        """Cross-field checks; types and allowed values were checked when the config was built."""
        for name in self.at_least_one:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.distributed == "fsdp" and self.mixed_precision == "fp16":
            raise ConfigError(
                "distributed=fsdp takes mixed_precision bf16 or fp32 (fp16 needs loss scaling over shards, not built)"
            )


@dataclass
class TrainSettings(RunSettings):
    """Settings of the commands that train on a data file (SFT, reward model, DPO)."""

    at_least_one: ClassVar[tuple[str, ...]] = (*RunSettings.at_least_one, "max_length", "eval_batch_size")

    model: str = ""
    """Starting model: a Hugging Face model directory or hub id."""
    train_file: str = ""
    """Training data (JSONL, CSV, .gz or a datasets directory)."""
    eval_file: str = ""
    """Held-out data for evaluation (optional)."""
    max_steps: int = -1
    """Optimizer steps to run; -1 derives them from epochs."""
    epochs: float = 3.0
    """Passes over the training data (used when max_steps is -1)."""
    learning_rate: float = 2e-5
    """Peak learning rate (AdamW), reached after warmup, then cosine decay to 0."""
    warmup_ratio: float = 0.03
    """Share of the steps spent warming the learning rate up linearly from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and norms)."""
    max_length: int = 1024
    """Longest prompt + answer in tokens; longer prompts are cut from the left."""
    eval_steps: int = 0
    """Evaluate every N steps; 0 only at the end."""
    eval_batch_size: int = 16
    """Examples per batch when evaluating."""

    def validate(self) -> None:
        super().validate()
        command = type(self).__name__.removesuffix("Config").lower()
        for name in ("model", "train_file"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is required, e.g. rlhf {command} {name}=...")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size ({self.batch_size}) must be a multiple of grad_accum ({self.grad_accum})")
        if self.max_steps == 0 or (self.max_steps < 0 and self.epochs <= 0):
            raise ConfigError("set max_steps > 0 or epochs > 0")


@dataclass
class SFTConfig(TrainSettings):
    """`rlhf sft`: supervised fine-tuning on demonstrations (prompt/completion or messages records)."""

    output_dir: str = "runs/sft"
    """Where the model, config.yaml, metrics.jsonl, metrics.json and checkpoints/ go."""
    packing: bool = False
    """Padding-free batches: a micro-batch's sequences are laid end to end in one row with their own positions
    and attention (no sequence sees another). Pays off with a variable-length attention kernel (flash-attention
    on a GPU); with PyTorch's SDPA on a CPU the explicit block mask costs more than padding (see bench/)."""
    gold_metrics: bool = True
    """After training, greedily answer the eval prompts and score them against the gold answers."""
    max_new_tokens: int = 64
    """Longest answer generated for the gold-answer metrics."""
    system_prompt: str | None = None
    """The system message the model is trained with where a record brings none, saved into its tokenizer's chat
    template as its default (so the reward model, PPO, `rlhf generate` and `rlhf serve` use it too); "" is an empty
    one. None keeps the template's own default (SmolLM2's is 16 tokens of every sequence)."""


@dataclass
class RewardConfig(TrainSettings):
    """`rlhf reward train`: a scalar reward model from preferences (pairs, comparisons with ties, rankings)."""

    output_dir: str = "runs/reward"
    """Where the model, config.yaml, metrics.jsonl, metrics.json and checkpoints/ go."""
    learning_rate: float = 1e-5
    """Peak learning rate (AdamW), reached after warmup, then cosine decay to 0."""
    epochs: float = 1.0
    """Passes over the training data (used when max_steps is -1)."""
    batch_size: int = 16
    """Prompts (preference items) per optimizer step; a K-way ranking is one item with all its pairs."""
    loss: Literal["bt", "plackett_luce"] = "bt"
    """"bt": Bradley-Terry over every compared pair, averaged per prompt (InstructGPT); "plackett_luce": the
    Plackett-Luce likelihood for items that are one ranking (pairs and comparisons still use the pairwise loss)."""
    tie_model: Literal["davidson", "rao_kupper", "none"] = "davidson"
    """How ties count: "davidson" or "rao_kupper" (a three-outcome likelihood), or "none" (tie-only judgements
    are dropped and counted; pair margins are used only here)."""
    tie_param: float = 0.0
    """log nu for davidson (0: nu = 1); log theta for rao_kupper (must be > 0, e.g. 0.7)."""
    both_bad: Literal["tie", "drop"] = "tie"
    """A "both bad" A/B judgement: "tie" (neither is better) or "drop"."""
    center_coef: float = 0.0
    """Weight of the reward-centering term (r_a + r_b)^2 that keeps scores near zero mean; 0 turns it off."""
    shared_prefix: bool = True
    """Decoder models: run each prompt once and let all its responses continue from its KV cache (same scores,
    fewer tokens computed). Encoders always score whole sequences."""
    stats_items: int = 2048
    """After training, training items scored for the score statistics PPO normalises rewards with (stats.json) and
    for train_accuracy: a seeded sample of this many (0: all). A sample of 2048 items puts the mean within about
    2% of a standard deviation, at a fraction of a pass over a large training set."""

    def validate(self) -> None:
        super().validate()
        if self.stats_items < 0:
            raise ConfigError(f"stats_items must be >= 0 (0: all training items), got {self.stats_items}")
        if self.tie_model == "rao_kupper" and self.tie_param <= 0:
            raise ConfigError("tie_model=rao_kupper needs tie_param (log theta) > 0, e.g. tie_param=0.7")


@dataclass
class DPOConfig(TrainSettings):
    """`rlhf dpo`: direct preference optimization of a policy on preferences (pairs, comparisons with ties,
    rankings, several annotators) against a frozen reference, or KTO on thumbs up/down ratings (loss=kto)."""

    output_dir: str = "runs/dpo"
    """Where the model, config.yaml, metrics.jsonl, metrics.json and checkpoints/ go."""
    learning_rate: float = 5e-7
    """Peak learning rate (AdamW), reached after warmup, then cosine decay to 0 (LoRA: try 5e-6 to 5e-5)."""
    epochs: float = 1.0
    """Passes over the training data (used when max_steps is -1)."""
    batch_size: int = 16
    """Prompts (preference items; ratings for KTO) per optimizer step; a K-way ranking is one item with all its
    ordered pairs."""
    beta: float = 0.1
    """Strength of the pull to the reference: the implicit reward of an answer is beta x (log pi - log pi_ref)
    (IPO: the paper's tau, the target margin is 1 / (2 beta))."""
    loss: Literal["sigmoid", "ipo", "robust", "tie", "kto"] = "sigmoid"
    """"sigmoid": DPO (Rafailov et al. 2023), soft targets from several annotators, a tie counts half each way;
    "ipo": IPO (Azar et al. 2023); "robust": robust DPO for labels flipped with probability label_smoothing
    (Chowdhury et al. 2024; tie-only judgements are dropped); "tie": DPO with the reward model's three-outcome tie
    likelihood (tie_model), so ties pull the two implicit rewards together; "kto": KTO (Ethayarajh et al. 2024) on
    unpaired ratings (a ratings file, or preferences read as winner good, loser bad)."""
    label_smoothing: float = 0.0
    """sigmoid: conservative DPO, the share eps of labels assumed wrong (targets move towards 1/2); robust: the flip
    probability (< 0.5)."""
    rpo_alpha: float = 0.0
    """Weight of an NLL term (per-token mean) on each judgement's winning answer (RPO, Pang et al. 2024), against the
    known failure where DPO lowers the chosen answer's likelihood too; 0 turns it off."""
    tie_model: Literal["davidson", "rao_kupper"] = "davidson"
    """loss=tie: the three-outcome likelihood, as for the reward model."""
    tie_param: float = 0.0
    """loss=tie: log nu for davidson (0: nu = 1); log theta for rao_kupper (> 0)."""
    both_bad: Literal["tie", "drop"] = "tie"
    """A "both bad" A/B judgement: "tie" (neither is better) or "drop"; for KTO both answers are bad."""
    desirable_weight: float = 1.0
    """KTO: weight of the good answers' loss (raise it when bad ratings outnumber good ones)."""
    undesirable_weight: float = 1.0
    """KTO: weight of the bad answers' loss."""
    shared_prefix: bool = True
    """Run each prompt once and let all its answers continue from its KV cache (same logprobs, fewer tokens)."""
    kl_prompts: int = 32
    """After training, sample answers to up to this many held-out prompts and report the policy's KL to the
    reference on them (eval_kl); 0 skips it."""
    max_new_tokens: int = 64
    """Longest answer sampled for eval_kl."""

    def validate(self) -> None:
        super().validate()
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")
        if self.loss == "robust" and not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"loss=robust needs 0 <= label_smoothing < 0.5, got {self.label_smoothing}")
        if not 0 <= self.label_smoothing <= 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5], got {self.label_smoothing}")
        if self.loss == "tie" and self.tie_model == "rao_kupper" and self.tie_param <= 0:
            raise ConfigError("tie_model=rao_kupper needs tie_param (log theta) > 0, e.g. tie_param=0.7")


@dataclass
class PPOConfig(RunSettings):
    """`rlhf ppo`: policy optimization with PPO, a critic and a per-token KL penalty to the reference policy, or
    critic-free (advantage=grpo, rloo, reinforce_pp) with the same sampler, rewards and KL."""

    at_least_one: ClassVar[tuple[str, ...]] = (
        *RunSettings.at_least_one,
        "minibatch_size",
        "ppo_epochs",
        "max_new_tokens",
    )

    policy: str = ""
    """The starting policy (usually the SFT model): a model directory or hub id. Also the frozen reference unless
    `reference` names another."""
    reference: str = ""
    """The frozen KL reference, when it is not the starting policy: e.g. the SFT model, when a later round of RLHF
    starts from the previous round's policy. Empty: the policy (with LoRA, the policy's base with adapters off)."""
    reward_model: str = ""
    """Reward-model directory (rlhf reward train); give this or reward_fn."""
    reward_fn: str = ""
    """A Python reward "module:function" or "path/file.py:function" taking (prompts: list[str], responses:
    list[str]) and returning list[float]; for rule-based or verifiable rewards."""
    prompts_file: str = ""
    """Prompts to roll out: any file with a prompt field (string or messages)."""
    output_dir: str = "runs/ppo"
    """Where the policy, config.yaml, metrics.jsonl, metrics.json and checkpoints/ go."""
    total_episodes: int = 1024
    """Responses to sample in all; iterations = total_episodes // batch_size."""
    batch_size: int = 16
    """Responses per rollout, over all processes: batch_size / num_generations prompts, num_generations
    responses to each."""
    advantage: Literal["gae", "grpo", "rloo", "reinforce_pp"] = "gae"
    """How a response's tokens are credited. "gae": PPO with a critic and KL-shaped token rewards (the default).
    Critic-free (no critic is loaded or trained): "grpo" (Shao et al. 2024: rewards normalized within each prompt's
    group of num_generations responses, the KL to the reference a k3 term in the loss, weighted by kl_coef); "rloo"
    (Ahmadian et al. 2024: the sequence reward minus kl_coef x its KL, minus the mean of the prompt's other
    responses); "reinforce_pp" (Hu 2025, REINFORCE++: KL-shaped token rewards, discounted returns, whitened over each
    process's batch). Every loss is a mean over the minibatch's response tokens (as PPO's), so an answer weighs by its
    length, not 1/|o| per answer as in GRPO's paper (DAPO's choice)."""
    num_generations: int = 1
    """Responses sampled per prompt. grpo and rloo compare a prompt's responses with each other: at least 2."""
    max_new_tokens: int = 64
    """Longest response sampled."""
    max_prompt_length: int = 512
    """Longer prompts are cut from the left."""
    ppo_epochs: int = 4
    """Passes over each rollout batch."""
    minibatch_size: int = 16
    """Responses per PPO update (over all processes); the rollout batch is shuffled into minibatches."""
    learning_rate: float = 1e-5
    """AdamW learning rate of the policy, decayed linearly to 0 over the run."""
    critic_learning_rate: float | None = None
    """AdamW learning rate of the critic, which has its own optimizer and gradient clipping; null: learning_rate."""
    kl_coef: float = 0.05
    """Initial (or fixed) weight beta of the per-token KL penalty -beta * KL_t."""
    target_kl: float = 0.0
    """Adaptive KL control (Ziegler et al.): beta moves so the per-sequence KL approaches this; 0 keeps beta fixed."""
    kl_horizon: int = 10000
    """Episodes over which the adaptive controller closes the gap to target_kl."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL estimate in the penalty: k1 (log ratio, unbiased) or k3 (non-negative, lower variance)."""
    gamma: float = 1.0
    """Discount factor of GAE and of REINFORCE++'s returns."""
    lam: float = 0.95
    """GAE lambda."""
    cliprange: float = 0.2
    """PPO ratio clip epsilon."""
    cliprange_value: float = 0.2
    """Value clip: the new value stays within this of the rollout value."""
    temperature: float = 0.7
    """Sampling temperature; logits are divided by it for every log-probability, in rollout and update alike."""
    top_p: float = 1.0
    """Nucleus sampling cut for rollouts."""
    missing_eos_penalty: float | None = None
    """Subtracted from the score of a response cut at max_new_tokens without EOS, after normalization. null: 1.0
    with a reward model (one standard deviation of its training scores, the unit normalize_reward puts scores in),
    0 with reward_fn (its scale is unknown: a penalty of 1 would dwarf a reward that spans 0.1). 0 turns it off."""
    normalize_reward: bool = True
    """Divide reward-model scores into units of its training spread (reward_stats.json: (s - mean) / std)."""
    whiten_rewards: bool = False
    """Whiten the token rewards per batch (scale only) before GAE."""
    critic_init: Literal["reward", "policy"] = "reward"
    """Initialise the critic from the reward model ("reward"; when it cannot read the policy's tokens, or with
    reward_fn, the policy is used and the run says why) or the policy ("policy"), with a zero head."""
    logging_steps: int = 1
    """Write a metrics.jsonl row every N iterations."""
    overlap_critic: bool = True
    """On a CPU with one process, update the critic in a second thread while the policy updates, each on half the
    cores (given a rollout the two updates are independent; same numbers). Off: one after the other."""
    sampler: Literal["rlhfkit", "hf"] = "rlhfkit"
    """Rollout generator: "rlhfkit" (our KV-cached sampler) or "hf" (transformers generate; slower)."""
    mixed_precision: MixedPrecision = "auto"
    """Compute precision. Policy and critic keep fp32 master weights; "bf16" or "fp16" runs their passes under
    autocast, and the reference runs under the same autocast so that its logprobs are computed like the policy's;
    the frozen reward model is then held in that type. "fp32": fp32 throughout; "auto": bf16 on a GPU that supports
    it, else fp32."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA on the policy and the critic (lora.r=0: full fine-tuning); the reference is then the policy's base with
    its adapters disabled, and the critic's backbone stays frozen under its own adapters (its head trains)."""

    @property
    def iterations(self) -> int:
        return self.total_episodes // self.batch_size

    @property
    def eos_penalty(self) -> float:
        """missing_eos_penalty with its default resolved (see its doc)."""
        if self.missing_eos_penalty is not None:
            return self.missing_eos_penalty
        return 0.0 if self.reward_fn else 1.0

    @property
    def critic_lr(self) -> float:
        return self.learning_rate if self.critic_learning_rate is None else self.critic_learning_rate

    def validate(self) -> None:
        super().validate()
        if not self.policy:
            raise ConfigError("policy is required, e.g. rlhf ppo policy=runs/sft ...")
        if self.distributed == "fsdp" and self.sampler == "hf":
            raise ConfigError(
                "distributed=fsdp samples with sampler=rlhfkit: its decoder reads the gathered weights directly, while "
                "transformers' generate calls the sharded layers, whose gathers every process would have to join at "
                "every step"
            )
        if not self.prompts_file:
            raise ConfigError("prompts_file is required")
        if bool(self.reward_model) == bool(self.reward_fn):
            raise ConfigError("give exactly one of reward_model=DIR or reward_fn=module:function")
        if self.total_episodes < self.batch_size:
            raise ConfigError(f"total_episodes ({self.total_episodes}) must be at least batch_size ({self.batch_size})")
        if self.advantage in ("grpo", "rloo") and self.num_generations < 2:
            raise ConfigError(
                f"advantage={self.advantage} compares responses to the same prompt: set num_generations >= 2"
            )
        if self.batch_size % self.num_generations:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be a multiple of num_generations ({self.num_generations})"
            )
        if self.batch_size % self.minibatch_size:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be a multiple of minibatch_size ({self.minibatch_size})"
            )
        if self.minibatch_size % self.grad_accum:
            raise ConfigError(
                f"minibatch_size ({self.minibatch_size}) must be a multiple of grad_accum ({self.grad_accum})"
            )
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0 for PPO rollouts (the policy must be stochastic)")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: the string literal written under it in the class body}; a subclass's own text wins."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # type: ignore[attr-defined]
        for stmt, nxt in zip(body, body[1:]):
            if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[stmt.target.id] = " ".join(str(nxt.value.value).split())  # type: ignore[union-attr]
    return docs


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, doc) for every setting, nested sections flattened; allowed values end the doc."""
    rows = []
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], prefix + f.name + ".")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            doc = docs.get(f.name, "")
            if typing.get_origin(hints[f.name]) is Literal:
                doc += f" (one of: {', '.join(typing.get_args(hints[f.name]))})"
            rows.append((prefix + f.name, repr(default), doc))
    return rows


class Raw(str):
    """An override's text as typed (`key=TEXT`): read as the setting's type needs, so that a text setting keeps
    "no", "null" or "1e-5" as written, while numbers, booleans and lists are read as YAML."""


yaml.SafeDumper.add_representer(Raw, lambda dumper, value: dumper.represent_str(str(value)))


def _coerce(value: Any, typ: Any, key: str) -> Any:
    args = typing.get_args(typ)
    if isinstance(value, Raw):
        texts = typ is str or (typing.get_origin(typ) is Literal and all(isinstance(a, str) for a in args))
        if not texts:
            try:
                value = yaml.safe_load(value) if value != "" else ""
            except yaml.YAMLError:
                value = str(value)
        else:
            value = str(value)
    if type(None) in args:  # `X | None`: null (or "null"/"none") is None, anything else must be an X
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            return None
        (typ,) = [a for a in args if a is not type(None)]
        return _coerce(value, typ, key)
    if typing.get_origin(typ) is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-5" as a string
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif typing.get_origin(typ) is dict or typ is dict:
        if isinstance(value, dict):
            return value
    elif typing.get_origin(typ) is list:
        if isinstance(value, str):  # key=a,b,c on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            (item,) = args
            return [_coerce(v, item, key) for v in value]
    raise ConfigError(f"{key}: expected {getattr(typ, '__name__', typ)}, got {value!r}")


def build_config(cls: type[C], values: dict[str, Any], prefix: str = "") -> C:
    """A config from a mapping of settings (nested sections as nested mappings): types and allowed values
    checked, unknown keys rejected with the list of valid ones. The pipeline and the demo build stage configs
    with it."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'settings'}: expected a mapping, got {values!r}")
    unknown = [k for k in values if k not in names]
    if unknown:
        valid = ", ".join(name for name, _, _ in describe(cls, prefix))
        raise ConfigError(f"unknown setting {prefix + unknown[0]!r}; valid settings: {valid}")
    kwargs = {}
    for name, value in values.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            if isinstance(value, typ):
                value = dataclasses.asdict(value)
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix + name}: expected a section of settings, got {value!r}")
            kwargs[name] = build_config(typ, value, prefix + name + ".")
        else:
            kwargs[name] = _coerce(value, typ, prefix + name)
    return cls(**kwargs)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """["lr=1e-5", "lora.r=16"] -> {"lr": Raw("1e-5"), "lora": {"r": Raw("16")}}; each value is read later by the
    type of its setting."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is a setting, not a section")
        node[leaf] = Raw(raw)
    return tree


def merge_settings(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`base` with `top`'s settings over it, section by section (nested mappings merge; anything else is replaced)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge_settings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None, *, preset: list[str] = ()
) -> C:
    """Settings from `preset` (a command alias's key=value), then the YAML file, then `overrides`: later wins."""
    values: dict[str, Any] = parse_overrides(list(preset))
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        values = merge_settings(values, loaded or {})
    values = merge_settings(values, parse_overrides(overrides or []))
    try:
        return build_config(cls, values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def save_config(cfg: Any, path: str | Path) -> None:
    with atomic_open(path) as f:
        yaml.safe_dump(dataclasses.asdict(cfg), f, sort_keys=False)
