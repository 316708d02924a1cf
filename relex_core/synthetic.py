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

from .io.dtypes import element_count
from .io.writer import ShardedWriter, TensorSpec, finished_together

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
             relative_update=1e-3, noise=0.1, seed=0, shard_size=None, folder_pattern="checkpoint-{step}",
             block_elements=2**24) -> Path:
    """Write a run: base `checkpoint-0` plus one checkpoint per step. Returns the run folder.

    relative_update: ‖Δ‖/‖θ_0‖ at the last step. noise: random-walk size relative to the drift.
    shard_size: bytes per shard (None: one model.safetensors).
    block_elements: tensors are generated and written by row blocks of about this many elements,
    every checkpoint at once, so memory stays at a few blocks however big the model is.
    """
    folder = Path(folder)
    shapes = qwen2_shapes(**TINY) if shapes is None else shapes
    config = qwen2_config(**TINY) if config is None and shapes is not None else config
    all_steps = (0, *steps)
    specs = [TensorSpec(name, tuple(shape), dtype) for name, shape in shapes.items()]
    checkpoints = [folder / folder_pattern.format(step=step) for step in all_steps]
    writers = []
    for checkpoint in checkpoints:
        checkpoint.mkdir(parents=True, exist_ok=True)
        writers.append(ShardedWriter(checkpoint, specs, shard_size=shard_size, metadata={"format": "pt"}))
    with finished_together(writers):
        for index, (name, shape) in enumerate(shapes.items()):
            _write_tensor(writers, name, tuple(shape), all_steps, dtype, relative_update, noise,
                          (seed, index), block_elements)
    for step, checkpoint in zip(all_steps, checkpoints):
        if config:
            (checkpoint / "config.json").write_text(json.dumps(config, indent=2))
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return folder


def _write_tensor(writers, name, shape, all_steps, dtype, relative_update, noise, key, block_elements) -> None:
    """θ_t = θ_0 + (scale·s_t/s_last)·u + walk_t for one tensor, row block by row block.

    Each row block draws from its own seeded generator, so a first sweep can measure ‖θ_0‖ and
    the direction's norm and a second sweep regenerates the same numbers to write them.
    """
    numel = element_count(shape)
    rows = shape[0] if shape else 1
    row_numel = numel // rows if rows else 1
    rows_per_block = max(1, block_elements // max(1, row_numel))
    blocks = [(start, min(rows, start + rows_per_block)) for start in range(0, rows, rows_per_block)]
    # 16-bit outputs are generated in float32 (their rounding dwarfs float32's); others in float64.
    work = torch.float64 if dtype == torch.float64 else torch.float32

    def draws(block_index, start, stop):
        seed = int(np.random.SeedSequence([*key, block_index]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        block_shape = (stop - start, *shape[1:]) if shape else ()
        base = torch.randn(block_shape, generator=generator).to(work) * 0.02
        direction = torch.randn(block_shape, generator=generator).to(work)
        return generator, block_shape, base, direction

    base_sq = direction_sq = 0.0
    for block_index, (start, stop) in enumerate(blocks):
        _, _, base, direction = draws(block_index, start, stop)
        base_sq += float(base.double().square().sum())
        direction_sq += float(direction.double().square().sum())
    scale = relative_update * np.sqrt(base_sq)
    unit = 1.0 / np.sqrt(direction_sq) if direction_sq > 0 else 0.0
    last_step = max(all_steps)
    for block_index, (start, stop) in enumerate(blocks):
        generator, block_shape, base, direction = draws(block_index, start, stop)
        walk, increment, state = (torch.zeros(block_shape, dtype=work) for _ in range(3))
        previous_step = 0
        for writer, step in zip(writers, all_steps):
            if step:
                if work == torch.float32:
                    torch.randn(block_shape, generator=generator, out=increment)
                else:
                    increment.copy_(torch.randn(block_shape, generator=generator))
                size = noise * scale * np.sqrt((step - previous_step) / last_step) / np.sqrt(max(1, numel))
                walk.add_(increment, alpha=size)
            torch.add(base, direction, alpha=scale * unit * step / last_step, out=state)
            writer.write(name, state.add_(walk))
            previous_step = step
