"""Regenerates sample_data/run: a tiny Qwen2 taught addition by SFT, then trained by GRPO.

checkpoint-0 is the SFT base (deliberately stopped while only partly right); checkpoint-N
is the policy after N GRPO steps. Run from the repository root:
    PYTHONPATH=. python sample_data/make_run.py
Same machine, same torch => bit-identical files (seeded, deterministic algorithms, 1 thread).
"""
import json
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from relex_core.sample import task
from relex_core.sample.model import Qwen2Config, Qwen2ForCausalLM, generate
from relex_core.sample.tokenizer import write_tokenizer
from relex_core.sample.verifier import evaluate_checkpoint

RUN_DIR = Path(__file__).resolve().parent / "run"
# The held-out problems as text, for the local lm-eval task beside them (relex_sample_addition.yaml).
LM_EVAL_PROBLEMS = Path(__file__).resolve().parent / "lm_eval_tasks" / "heldout.jsonl"
SEED = 0

# A real transformers Qwen2 config, small enough that 31+ bf16 checkpoints fit in 30 MB.
HF_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": len(task.VOCAB),
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 32,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "initializer_range": 0.02,
    "attention_dropout": 0.0,
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 4,
    "tie_word_embeddings": True,
    "use_cache": True,
    "bos_token_id": None,
    "eos_token_id": task.EOS_ID,
    "pad_token_id": task.EOS_ID,
    "torch_dtype": "bfloat16",
}

# Phase 1, SFT: stopped early on purpose, so the base is only partly right. The learning
# rate decays to zero over the last SFT_DECAY_STEPS so the base settles in its basin;
# otherwise RL's first small steps would merely finish annealing the noisy SFT iterate.
SFT_STEPS = 560
SFT_DECAY_STEPS = 150
SFT_BATCH = 128
SFT_LR = 3e-3

# Phase 2, GRPO: constant learning rate, one gradient step per rollout batch.
RL_STEPS = 1440
SAVE_EVERY = 48
PROMPTS_PER_STEP = 32
GROUP_SIZE = 8
RL_LR = 1e-4


def init_weights(model: Qwen2ForCausalLM):
    """transformers' Qwen2 initialisation: N(0, 0.02) weights, zero biases, unit norms."""
    for name, p in model.named_parameters():
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            torch.nn.init.ones_(p)
        elif name.endswith(".bias"):
            torch.nn.init.zeros_(p)
        else:
            torch.nn.init.normal_(p, std=HF_CONFIG["initializer_range"])


def answer_logprobs(model, prompts, answers):
    """Log-probabilities (B, ANSWER_LEN) the model gives each answer token after its prompt."""
    logits = model(torch.cat([prompts, answers[:, :-1]], dim=1))[:, task.PROMPT_LEN - 1:]
    return torch.log_softmax(logits, dim=-1).gather(-1, answers.unsqueeze(-1)).squeeze(-1)


def sft(model, draw_pairs):
    opt = torch.optim.AdamW(model.parameters(), lr=SFT_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (SFT_STEPS - s) / SFT_DECAY_STEPS))
    for step in range(SFT_STEPS):
        prompts, answers = task.encode_problems(draw_pairs(SFT_BATCH))
        loss = -answer_logprobs(model, prompts, answers).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if step % 100 == 0 or step == SFT_STEPS - 1:
            print(f"sft step {step:4d}  loss {loss.item():.4f}", flush=True)


def grpo_rollout(model, draw_pairs, sampler):
    """GROUP_SIZE temperature-1 completions per prompt, their 0/1 rewards and group-normalised advantages."""
    prompts, targets = task.encode_problems(draw_pairs(PROMPTS_PER_STEP))
    prompts, targets = prompts.repeat_interleave(GROUP_SIZE, 0), targets.repeat_interleave(GROUP_SIZE, 0)
    completions = generate(model, prompts, task.ANSWER_LEN, temperature=1.0, generator=sampler)
    rewards = task.exact_match_reward(completions, targets).view(PROMPTS_PER_STEP, GROUP_SIZE)
    advantages = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
    return prompts, completions, rewards, advantages.view(-1)


def grpo_update(model, opt, prompts, completions, advantages):
    # On-policy with a single step per batch, the PPO ratio is exactly 1 and clipping never
    # acts, so GRPO's objective reduces to this policy gradient with group-normalised advantages.
    # Groups whose completions all got the same reward have zero advantage: they add nothing
    # to the gradient, so they skip the backward pass (the normaliser still counts them).
    informative = advantages != 0
    logprobs = answer_logprobs(model, prompts[informative], completions[informative])
    loss = -(advantages[informative, None] * logprobs).sum() / (len(advantages) * task.ANSWER_LEN)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def save_checkpoint(model, step: int) -> Path:
    """Writes checkpoint-{step} as transformers would: bf16 safetensors without the tied lm_head, and the tokenizer."""
    folder = RUN_DIR / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    # The fp32 master weights stay in memory; only the saved copy is rounded to bf16.
    tensors = {name: t.detach().to(torch.bfloat16).contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(HF_CONFIG, indent=2) + "\n")
    generation = {"eos_token_id": task.EOS_ID, "pad_token_id": task.EOS_ID, "do_sample": False,
                  "max_new_tokens": task.ANSWER_LEN}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    write_tokenizer(folder, model_max_length=HF_CONFIG["max_position_embeddings"])
    return folder


def write_trainer_state(folder: Path, step: int, log_history: list):
    state = {
        "global_step": step,
        "max_steps": RL_STEPS,
        "save_steps": SAVE_EVERY,
        "logging_steps": SAVE_EVERY,
        "train_batch_size": PROMPTS_PER_STEP * GROUP_SIZE,
        "log_history": log_history,
    }
    (folder / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")


def write_lm_eval_problems():
    lines = [json.dumps(record) + "\n" for record in task.heldout_records()]
    LM_EVAL_PROBLEMS.write_text("".join(lines))


def main():
    start = time.perf_counter()
    # One thread: on a busy 2-core machine two threads made training 6-10x slower, and a
    # fixed thread count keeps the floating-point results reproducible.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)
    write_lm_eval_problems()

    model = Qwen2ForCausalLM(Qwen2Config.from_hf(HF_CONFIG))
    init_weights(model)
    draw_pairs = task.training_pair_sampler(SEED)
    sft(model, draw_pairs)

    opt = torch.optim.Adam(model.parameters(), lr=RL_LR)
    sampler = torch.Generator().manual_seed(SEED)
    log_history = []
    for step in range(RL_STEPS + 1):
        prompts, completions, rewards, advantages = grpo_rollout(model, draw_pairs, sampler)
        if step % SAVE_EVERY == 0:
            folder = save_checkpoint(model, step)
            # train_reward of checkpoint-N: mean sampled reward of its own policy on this step's prompts;
            # heldout_reward: the verifier's score of the saved bf16 file, so anyone can reproduce it.
            train_reward, heldout_reward = rewards.mean().item(), evaluate_checkpoint(folder)["accuracy"]
            log_history.append({"step": step, "train_reward": train_reward, "heldout_reward": heldout_reward})
            write_trainer_state(folder, step, log_history)
            print(f"rl step {step:4d}  train_reward {train_reward:.3f}  heldout_reward {heldout_reward:.3f}"
                  f"  ({time.perf_counter() - start:.0f}s)", flush=True)
        if step < RL_STEPS:
            grpo_update(model, opt, prompts, completions, advantages)


if __name__ == "__main__":
    main()
