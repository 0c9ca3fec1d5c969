"""The command line: clear errors on bad input, generation options, chat, and a quick --help."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from rlhfkit.cli import app

runner = CliRunner()


def test_help_does_not_import_torch():
    code = "import sys, rlhfkit.cli; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    res = runner.invoke(app, ["sft", "--help"])
    assert res.exit_code == 0 and "learning_rate" in res.output and "lora.r" in res.output


def test_sft_bad_data_and_settings_exit_2(tiny_lm, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "completion": "a"}\n{"prompt": "q", "completion": 3}\n')
    res = runner.invoke(app, ["sft", f"model={tiny_lm}", f"train_file={bad}", f"output_dir={tmp_path / 'o'}"])
    assert res.exit_code == 2 and f"{bad}:2: completion: expected a non-empty string" in res.output
    assert not (tmp_path / "o" / "model.safetensors").exists()
    res = runner.invoke(app, ["sft", "model=m", "train_file=x", "learning_rat=1"])
    assert res.exit_code == 2 and "unknown setting 'learning_rat'" in res.output and "learning_rate" in res.output
    res = runner.invoke(app, ["sft", f"model={tiny_lm}", f"train_file={tmp_path / 'missing.jsonl'}"])
    assert res.exit_code == 2 and "missing.jsonl: no such file" in res.output


def test_generate_sampling_messages_and_seed(tiny_lm, tmp_path):
    prompts = tmp_path / "p.jsonl"
    convo = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is HR?"}]
    prompts.write_text(json.dumps({"prompt": "When is payday?"}) + "\n" + json.dumps({"prompt": convo}) + "\n")

    def sample(out, seed):
        args = [
            "generate",
            "--model",
            str(tiny_lm),
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "-k",
            "3",
            "--temperature",
            "1.0",
            "--top-p",
            "0.9",
            "--max-new-tokens",
            "8",
            "--seed",
            str(seed),
        ]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        return [json.loads(line) for line in out.read_text().splitlines()]

    a, b, c = sample(tmp_path / "a.jsonl", 1), sample(tmp_path / "b.jsonl", 1), sample(tmp_path / "c.jsonl", 2)
    assert a[1]["prompt"] == convo  # message-list prompts are kept as given
    assert all(len(r["responses"]) == 3 for r in a)
    assert a == b and a != c  # same seed, same samples; another seed, others
    assert len({r for row in a for r in row["responses"]}) > 1  # sampling, not greedy


def test_chat_answers_until_empty_line(tiny_lm):
    res = runner.invoke(app, ["chat", "--model", str(tiny_lm), "--max-new-tokens", "5"], input="hello\n/reset\nhi\n\n")
    assert res.exit_code == 0, res.output
    assert res.output.count("bot> ") == 2
