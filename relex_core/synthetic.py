"""Synthetic runs with known structure, for tests, demos and benchmarks.

Each tensor moves as θ_t = θ_0 + (speed·s_t)·u + noise_t, where u is a fixed random unit
direction (rank-1 linear drift) and noise_t is a random walk, at update sizes relative to the
weights that look like RLVR (‖Δ‖/‖θ_0‖ ≈ 1e-3 by default). Files are real safetensors,
sharded the way HF writes them, in HF `checkpoint-N` folders with trainer_state.json.
"""

import json
from pathlib import Path

import numpy as np
import torch

from .io.writer import save_state_dict

QWEN2_0_5B = {"layers": 24, "hidden": 896, "intermediate": 4864, "vocab": 151936, "heads": 14, "kv_heads": 2}
TINY = {"layers": 2, "hidden": 32, "intermediate": 64, "vocab": 96, "heads": 4, "kv_heads": 2}


def qwen2_shapes(layers, hidden, intermediate, vocab, heads, kv_heads) -> dict:
    """Parameter shapes of a Qwen2 model with tied embeddings (no lm_head tensor)."""
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for layer in range(layers):
        prefix = f"model.layers.{layer}."
        shapes.update({
            prefix + "self_attn.q_proj.weight": (hidden, hidden), prefix + "self_attn.q_proj.bias": (hidden,),
            prefix + "self_attn.k_proj.weight": (kv, hidden), prefix + "self_attn.k_proj.bias": (kv,),
            prefix + "self_attn.v_proj.weight": (kv, hidden), prefix + "self_attn.v_proj.bias": (kv,),
            prefix + "self_attn.o_proj.weight": (hidden, hidden),
            prefix + "mlp.gate_proj.weight": (intermediate, hidden),
            prefix + "mlp.up_proj.weight": (intermediate, hidden),
            prefix + "mlp.down_proj.weight": (hidden, intermediate),
            prefix + "input_layernorm.weight": (hidden,), prefix + "post_attention_layernorm.weight": (hidden,)})
    shapes["model.norm.weight"] = (hidden,)
    return shapes


def qwen2_config(layers, hidden, intermediate, vocab, heads, kv_heads) -> dict:
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
            "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": 512,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu",
            "torch_dtype": "bfloat16"}


def make_run(folder, *, steps=(10, 20, 30, 40, 50), shapes=None, config=None, dtype=torch.float32,
             relative_update=1e-3, noise=0.1, seed=0, shard_size=None, folder_pattern="checkpoint-{step}") -> Path:
    """Write a run: base `checkpoint-0` plus one checkpoint per step. Returns the run folder.

    relative_update: ‖Δ‖/‖θ_0‖ at the last step. noise: random-walk size relative to the drift.
    shard_size: bytes per shard (None: one model.safetensors).
    """
    folder = Path(folder)
    generator = torch.Generator().manual_seed(seed)
    shapes = qwen2_shapes(**TINY) if shapes is None else shapes
    config = qwen2_config(**TINY) if config is None and shapes is not None else config
    base = {name: torch.randn(shape, generator=generator, dtype=torch.float64) * 0.02 for name, shape in shapes.items()}
    directions = {name: _unit(torch.randn(shape, generator=generator, dtype=torch.float64)) for name, shape in shapes.items()}
    walks = {name: torch.zeros(shape, dtype=torch.float64) for name in shapes for shape in [shapes[name]]}
    last_step = max(steps)
    previous_step = 0
    for step in (0, *steps):
        state = {}
        for name, shape in shapes.items():
            scale = relative_update * float(base[name].norm())
            if step:
                walks[name] += torch.randn(shape, generator=generator, dtype=torch.float64) * (
                    noise * scale * np.sqrt((step - previous_step) / last_step) / np.sqrt(max(1, base[name].numel())))
            state[name] = (base[name] + scale * step / last_step * directions[name] + walks[name]).to(dtype)
        checkpoint = folder / folder_pattern.format(step=step)
        checkpoint.mkdir(parents=True, exist_ok=True)
        save_state_dict(state, checkpoint, shard_size=shard_size)
        if config:
            (checkpoint / "config.json").write_text(json.dumps(config, indent=2))
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
        previous_step = step
    return folder


def _unit(tensor: torch.Tensor) -> torch.Tensor:
    return tensor / tensor.norm()
