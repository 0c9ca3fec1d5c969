"""The reference side of bench/ppo.py: TRL 1.0.0's PPOTrainer (trl.experimental.ppo, removed from later TRL) on the
same models, prompts and settings as `rlhf ppo`. Runs in its own venv (bench/setup_trl_ppo.sh).

usage: python bench/trl_ppo.py POLICY_DIR REWARD_DIR PROMPTS.jsonl [--episodes 1024] [--batch 16]
           [--minibatch 16] [--response-length 32] [--ppo-epochs 4] [--lr 1e-5] [--kl-coef 0.05]
           [--temperature 0.7] [--template raw|chat] [--lora-r 0] [--lora-alpha 16]
The value model starts from REWARD_DIR (as `critic_init=reward`); the missing-EOS penalty is 1. Prints the time of
the training loop (imports and model loading excluded; the caller times the whole process).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policy")
    p.add_argument("reward")
    p.add_argument("prompts")
    p.add_argument("--episodes", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--minibatch", type=int, default=16)
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--template", choices=("raw", "chat"), default="raw")
    p.add_argument("--lora-r", type=int, default=0)
    p.add_argument("--lora-alpha", type=int, default=16)
    a = p.parse_args()

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok = AutoTokenizer.from_pretrained(a.policy, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    prompts = [json.loads(line)["prompt"] for line in open(a.prompts) if line.strip()]
    if a.template == "chat":  # the same ids `rlhf ppo` gives the policy with prompt_template=chat
        ids = [
            tok.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False
            )
            for q in prompts
        ]
    else:
        ids = [tok(q, add_special_tokens=False).input_ids for q in prompts]
    config = PPOConfig(
        output_dir="/tmp/bench-trl-ppo",
        per_device_train_batch_size=a.minibatch,
        gradient_accumulation_steps=1,
        num_mini_batches=a.batch // a.minibatch,
        local_rollout_forward_batch_size=a.batch,
        total_episodes=a.episodes,
        response_length=a.response_length,
        num_ppo_epochs=a.ppo_epochs,
        learning_rate=a.lr,
        kl_coef=a.kl_coef,
        temperature=a.temperature,
        missing_eos_penalty=1.0,
        stop_token="eos",
        num_sample_generations=0,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
    )
    peft_config = None
    if a.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=a.lora_r, lora_alpha=a.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
        )

    def reward_model():
        model = AutoModelForSequenceClassification.from_pretrained(a.reward, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        return model

    def value_model():
        model = reward_model()
        if a.lora_r:  # as `rlhf ppo` with lora.r > 0: the critic's backbone frozen under adapters, its head trains
            from peft import LoraConfig, inject_adapter_in_model

            linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            inject_adapter_in_model(LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, target_modules=linear), model.model)
            for name, p in model.named_parameters():
                p.requires_grad = "lora_" in name or name.startswith("score")
        return model

    trainer = PPOTrainer(
        args=config,
        processing_class=tok,
        model=AutoModelForCausalLM.from_pretrained(a.policy),
        ref_model=None if a.lora_r else AutoModelForCausalLM.from_pretrained(a.policy),
        reward_model=reward_model(),
        value_model=value_model(),
        train_dataset=Dataset.from_dict({"input_ids": ids}),
        peft_config=peft_config,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    print(f"trl 1.0.0 PPOTrainer: {a.episodes} episodes in {seconds:.1f}s = {a.episodes / seconds:.2f} episodes/s")


if __name__ == "__main__":
    main()
