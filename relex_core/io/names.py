"""Map parameter names to (layer index, module type) for Llama/Qwen/Mistral/GPT-2 naming."""

import re

# Llama, Qwen2, Mistral, Gemma: model.layers.{i}.self_attn.q_proj.weight, ...
_LLAMA_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")
# GPT-2: transformer.h.{i}.attn.c_attn.weight, ...
_GPT2_LAYER = re.compile(r"(?:^|\.)h\.(\d+)\.(.+)$")

_LAYER_MODULES = {
    "self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj",
    "self_attn.o_proj": "o_proj", "mlp.gate_proj": "gate_proj", "mlp.up_proj": "up_proj",
    "mlp.down_proj": "down_proj", "input_layernorm": "input_layernorm",
    "post_attention_layernorm": "post_attention_layernorm",
    "pre_feedforward_layernorm": "pre_feedforward_layernorm",
    "post_feedforward_layernorm": "post_feedforward_layernorm",
    "self_attn.q_norm": "q_norm", "self_attn.k_norm": "k_norm",
    # GPT-2
    "attn.c_attn": "c_attn", "attn.c_proj": "attn_c_proj", "mlp.c_fc": "c_fc",
    "mlp.c_proj": "mlp_c_proj", "ln_1": "ln_1", "ln_2": "ln_2",
}

_GLOBAL_MODULES = {
    "embed_tokens": "embed_tokens", "wte": "embed_tokens", "lm_head": "lm_head",
    "wpe": "position_embed", "norm": "final_norm", "ln_f": "final_norm",
}

# Name components that training wrappers add and HF checkpoints do not have: FSDP1, torch.compile,
# activation checkpointing. DDP's leading "module." is one too.
_WRAPPER_PARTS = ("_fsdp_wrapped_module", "_orig_mod", "_checkpoint_wrapped_module")


def strip_wrappers(tensor_name: str) -> str:
    """'_fsdp_wrapped_module.model._orig_mod.layers.0.x' -> 'model.layers.0.x': the name HF gives the tensor."""
    parts = [part for part in tensor_name.split(".") if part not in _WRAPPER_PARTS]
    if parts[:1] == ["module"] and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts)


EMBEDDING_NAMES = ("model.embed_tokens.weight", "transformer.wte.weight", "embed_tokens.weight")
LM_HEAD_NAMES = ("lm_head.weight",)


def layer_and_module(tensor_name: str) -> tuple[int | None, str]:
    """Return (layer index or None, module type) for a parameter name; module 'other' if unknown."""
    stem = tensor_name.rsplit(".", 1)[0] if tensor_name.endswith((".weight", ".bias")) else tensor_name
    for pattern in (_LLAMA_LAYER, _GPT2_LAYER):
        match = pattern.search(stem)
        if match:
            return int(match.group(1)), _LAYER_MODULES.get(match.group(2), "other")
    last = stem.rsplit(".", 1)[-1]
    return None, _GLOBAL_MODULES.get(last, "other")


def tied_lm_head(tensor_names, config: dict) -> tuple[str, str] | None:
    """(lm_head name, embedding name) when the checkpoint stores a tied lm_head, else None.

    HF drops `lm_head.weight` from tied checkpoints, but some writers keep both copies; we
    then analyse the embedding once and write the lm_head as a copy of it on export.
    """
    if not config.get("tie_word_embeddings", config.get("model_type") == "gpt2"):
        return None
    names = set(tensor_names)
    head = next((name for name in LM_HEAD_NAMES if name in names), None)
    embedding = next((name for name in EMBEDDING_NAMES if name in names), None)
    return (head, embedding) if head and embedding else None
