"""Config: YAML then dotted overrides, types checked, unknown keys rejected with the valid names."""

import pytest

from rlhfkit.config import ConfigError, LoraSettings, SFTConfig, describe, field_docs, load_config, save_config


def test_overrides_types_and_nesting():
    cfg = load_config(SFTConfig, None, ["model=m", "learning_rate=1e-5", "lora.r=16", "packing=false", "epochs=2"])
    assert cfg.learning_rate == 1e-5 and isinstance(cfg.learning_rate, float)
    assert cfg.lora == LoraSettings(r=16) and cfg.packing is False and cfg.epochs == 2.0


def test_yaml_then_overrides_and_roundtrip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: base\nbatch_size: 4\nlora:\n  r: 8\n  alpha: 32\n")
    cfg = load_config(SFTConfig, path, ["batch_size=16", "lora.r=4"])
    assert (cfg.model, cfg.batch_size, cfg.lora.r, cfg.lora.alpha) == ("base", 16, 4, 32)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(SFTConfig, tmp_path / "resolved.yaml") == cfg


def test_unknown_key_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, None, ["learning_rat=1"])
    assert "'learning_rat'" in str(e.value) and "learning_rate" in str(e.value) and "lora.r" in str(e.value)
    with pytest.raises(ConfigError, match="lora.rank"):
        load_config(SFTConfig, None, ["lora.rank=4"])


def test_wrong_types_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="batch_size: expected int"):
        load_config(SFTConfig, None, ["batch_size=big"])
    with pytest.raises(ConfigError, match="batch_size: expected int"):
        load_config(SFTConfig, None, ["batch_size=1.5"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(SFTConfig, None, ["oops"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(SFTConfig, bad)


def test_validate_names_the_problem():
    with pytest.raises(ConfigError, match="model is required"):
        SFTConfig(train_file="x").validate()
    with pytest.raises(ConfigError, match="multiple of grad_accum"):
        SFTConfig(model="m", train_file="x", batch_size=6, grad_accum=4).validate()


def test_every_field_is_documented():
    docs = field_docs(SFTConfig)
    assert all(docs.get(name.split(".")[0]) for name, _, _ in describe(SFTConfig))
    assert all(doc for _, _, doc in describe(SFTConfig))


def test_allowed_values_are_checked_where_the_config_is_built():
    from rlhfkit.config import PPOConfig, RewardConfig

    with pytest.raises(ConfigError, match="tie_model: 'bradley' is not one of davidson, rao_kupper, none"):
        load_config(RewardConfig, None, ["tie_model=bradley"])
    with pytest.raises(ConfigError, match="mixed_precision: 'no' is not one of auto, fp32, bf16, fp16"):
        load_config(PPOConfig, None, ["mixed_precision=no"])
    assert "(one of: k1, k3)" in dict((n, d) for n, _, d in describe(PPOConfig))["kl_estimator"]


def test_an_override_is_read_by_its_settings_type():
    from rlhfkit.config import PPOConfig, build_config

    # YAML would make these False, None and a string; the settings are text, null-able float and float
    cfg = load_config(
        PPOConfig, None, ["reward_fn=no", "critic_learning_rate=null", "learning_rate=1e-5", "resume=yes"]
    )
    assert cfg.reward_fn == "no" and cfg.critic_learning_rate is None and cfg.learning_rate == 1e-5 and cfg.resume
    assert load_config(PPOConfig, None, ["critic_learning_rate=3e-6"]).critic_lr == 3e-6
    # the pipeline passes dicts: the same checks
    assert build_config(PPOConfig, {"kl_coef": 0.2, "lora": {"r": 4}}).lora.r == 4
    with pytest.raises(ConfigError, match="unknown setting 'lora.rank'"):
        build_config(PPOConfig, {"lora": {"rank": 4}})


def test_shared_settings_are_declared_once():
    """PPO shares the trainers' run settings through one base class; it redeclares only what it means otherwise."""
    import dataclasses

    from rlhfkit.config import PPOConfig, RunSettings

    shared = {f.name for f in dataclasses.fields(RunSettings)}
    own = set(PPOConfig.__dict__.get("__annotations__", {}))
    assert shared <= {f.name for f in dataclasses.fields(PPOConfig)}
    assert own & shared <= {"output_dir", "batch_size", "learning_rate", "logging_steps", "mixed_precision", "lora"}


def test_demo_config_is_the_yaml_then_the_bundled_paths_then_the_users_overrides(tmp_path):
    from rlhfkit.demo.run import demo_config

    cfg = demo_config(tmp_path, model="m", overrides=["num_samples=3", "ppo.learning_rate=1e-3"])
    assert (cfg.output_dir, cfg.base_model, cfg.num_samples, cfg.pretrain_steps) == (str(tmp_path), "m", 3, 800)
    assert cfg.train_file.endswith("helpdesk_train.jsonl") and cfg.heldout_file.endswith("helpdesk_test.jsonl")
    assert cfg.validation_file.endswith("helpdesk_validation.jsonl")
    # with a model, demo/real_model.yaml goes over pipeline.yaml, section by section, and the user's settings win
    assert cfg.ppo["learning_rate"] == "1e-3" and cfg.ppo["kl_coef"] == 0.1  # a section merges
    assert cfg.sft["lora"] == {"r": 16, "alpha": 32} and cfg.sft["warmup_ratio"] == 0.05
    assert (cfg.rounds, cfg.methods) == (1, ["ppo"])
    from rlhfkit.pipeline import stage_configs

    sft, reward, _ = stage_configs(cfg, "m")  # every stage's settings are known to its command
    assert sft.system_prompt == "" and reward.max_steps == 80 and cfg.hard_negatives_from == "similar"
    tiny = demo_config(tmp_path, model=None, overrides=["train_file=t.jsonl"])
    assert tiny.train_file == "t.jsonl" and tiny.base_model == ""
    assert tiny.ppo["total_episodes"] == 1920 and "lora" not in tiny.sft and tiny.rounds == 2
    with pytest.raises(ConfigError, match=r"pipeline\.yaml: unknown setting 'bogus'"):
        demo_config(tmp_path, model=None, overrides=["bogus=1"])
