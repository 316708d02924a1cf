"""Real FSDP2 and DCP checkpoints, written by torch itself: the fixtures of the native-format tests.

    python -m tests.io.native_checkpoints OUT

Three processes on the CPU (gloo) `fully_shard` a tiny transformers Qwen2 whose row counts do
not divide by 3 (vocab 97, hidden 32, intermediate 70, 16 key/value rows), train it with Adam
and save it every two steps the ways trainers do:

    OUT/base/                                    the HF folder the run started from (bf16, config, tokenizer)
    OUT/verl/global_step_N/actor/...              verl: model/optim/extra_state rank files, fsdp_config.json,
                                                 huggingface/ (config, tokenizer, bf16 weights: hf_model)
    OUT/verl/global_step_N/data.pt, OUT/verl/latest_checkpointed_iteration.txt
    OUT/titan/step-N/                            torchtitan: flat DCP of model.state_dict(), step-0 seed included
    OUT/accelerate/checkpoint-N/pytorch_model_fsdp_0/   accelerate: DCP of {"model", "optimizer"}, config beside
    OUT/nemo/step_N/policy/weights/              NeMo-RL: DCP of {"model": ...}
    OUT/merged/checkpoint-N/                     the same weights gathered with full_tensor(), fp32 HF
    OUT/merged_bf16/checkpoint-N/                ... and rounded to bf16 (what verl's merger writes)
    OUT/other/actor/                             rank files of a model with other shapes (for damage tests)

Four more processes write DTensors with every placement relex meets (OUT/placements/): HSDP
(`("ddp", "fsdp")` mesh), Replicate, Shard(1), and the two it refuses, Partial and tensor parallel.
Everything here is produced by torch and transformers; relex's own code is not used.
"""

import json
import os
import sys
from pathlib import Path

import torch

WORLD = 3
SAVE_STEPS = (2, 4, 6)
CONFIG = dict(vocab_size=97, hidden_size=32, intermediate_size=70, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
OTHER_CONFIG = dict(CONFIG, intermediate_size=60)


def _init_group(rank: int, world: int, rendezvous: Path) -> None:
    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)


def _save_hf(state: dict, folder: Path, config, dtype=None) -> None:
    """An HF folder as save_pretrained writes it for a tied model: no lm_head.weight, config beside."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: (tensor.to(dtype) if dtype else tensor).contiguous() for name, tensor in state.items()
               if name != "lm_head.weight"}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(folder)


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{index}": index for index in range(CONFIG["vocab_size"] - 1)} | {"<unk>": CONFIG["vocab_size"] - 1}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


def train_and_save(rank: int, out: Path) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.fsdp import fully_shard
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    _init_group(rank, WORLD, out / ".rendezvous-train")
    torch.manual_seed(0)
    config = Qwen2Config(**CONFIG)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # the run starts from a bf16 HF model, as RLVR runs do
        for parameter in model.parameters():
            parameter.copy_(parameter.bfloat16().float())
    if rank == 0:
        _save_hf(model.state_dict(), out / "base", config, torch.bfloat16)
        _tokenizer().save_pretrained(out / "base")
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own batch, as in data parallel
    dist.barrier()

    def save_dcp(step: int) -> None:
        state = model.state_dict()
        dcp.save(state, checkpoint_id=out / "titan" / f"step-{step}")
        dcp.save({"model": state, "optimizer": optimizer.state_dict()},
                 checkpoint_id=out / "accelerate" / f"checkpoint-{step}" / "pytorch_model_fsdp_0")
        dcp.save({"model": state}, checkpoint_id=out / "nemo" / f"step_{step}" / "policy" / "weights")
        if rank == 0:
            config.save_pretrained(out / "accelerate" / f"checkpoint-{step}")

    save_dcp(0)  # torchtitan's seed checkpoint
    for step in range(1, max(SAVE_STEPS) + 1):
        tokens = torch.randint(0, CONFIG["vocab_size"], (2, 12), generator=generator)
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step not in SAVE_STEPS:
            continue
        actor = out / "verl" / f"global_step_{step}" / "actor"
        actor.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), actor / f"model_world_size_{WORLD}_rank_{rank}.pt")
        torch.save(optimizer.state_dict(), actor / f"optim_world_size_{WORLD}_rank_{rank}.pt")
        torch.save({"lr_scheduler": None, "rng": torch.get_rng_state()},
                   actor / f"extra_state_world_size_{WORLD}_rank_{rank}.pt")
        save_dcp(step)
        full = {name: tensor.full_tensor() for name, tensor in model.state_dict().items()}  # collective
        if rank == 0:
            (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": WORLD}, indent=4))
            hf = actor / "huggingface"
            _save_hf(full, hf, config, torch.bfloat16)  # verl's hf_model content: bf16
            GenerationConfig(max_new_tokens=8).save_pretrained(hf)
            _tokenizer().save_pretrained(hf)
            torch.save({"dataloader": "state"}, actor.parent / "data.pt")
            _save_hf(full, out / "merged" / f"checkpoint-{step}", config)
            _save_hf(full, out / "merged_bf16" / f"checkpoint-{step}", config, torch.bfloat16)
            (out / "verl" / "latest_checkpointed_iteration.txt").write_text(str(step))
        dist.barrier()
    # rank files of a model with other shapes, for "a rank file from another run"
    other = Qwen2ForCausalLM(Qwen2Config(**OTHER_CONFIG))
    for layer in other.model.layers:
        fully_shard(layer)
    fully_shard(other)
    (out / "other" / "actor").mkdir(parents=True, exist_ok=True)
    torch.save(other.state_dict(), out / "other" / "actor" / f"model_world_size_{WORLD}_rank_{rank}.pt")
    dist.destroy_process_group()


def save_placements(rank: int, out: Path) -> None:
    """DTensors of every placement on a 2 × 2 mesh of four ranks, each case in its own folder."""
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    world = 4
    _init_group(rank, world, out / ".rendezvous-placements")
    torch.manual_seed(1)
    hsdp_mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("ddp", "fsdp"))
    flat_mesh = init_device_mesh("cpu", (world,))
    layers = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3))
    fully_shard(layers, mesh=hsdp_mesh)  # HSDP: (Replicate(), Shard(0)), 7 rows over 2 shards
    matrix = torch.randn(7, 6)
    state = dict(layers.state_dict())
    state["replicated"] = distribute_tensor(matrix, flat_mesh, [Replicate()])
    state["columns"] = distribute_tensor(matrix, flat_mesh, [Shard(1)])  # 6 columns over 4 ranks: 2, 2, 2, 0
    state["buffer"] = matrix.clone()  # a plain tensor every rank holds whole
    expected = {name: (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor) for name, tensor in state.items()}
    refused = {
        "partial": {"partial": DTensor.from_local(matrix, flat_mesh, [Partial()])},
        "tensor_parallel": {"tensor_parallel": distribute_tensor(
            matrix, init_device_mesh("cpu", (2, 2), mesh_dim_names=("fsdp", "tp")), [Shard(0), Shard(1)])},
    }
    for case, case_state in {"supported": state, **refused}.items():
        folder = out / "placements" / case
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(case_state, folder / f"model_world_size_{world}_rank_{rank}.pt")
    if rank == 0:
        save_file({name: tensor.contiguous() for name, tensor in expected.items()},
                  str(out / "placements" / "expected.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


def write_all(out) -> Path:
    """Write every fixture into `out` (forked processes: torch and transformers are imported once)."""
    import torch.distributed.checkpoint  # noqa: F401  everything the ranks use is imported before forking,
    import torch.distributed.fsdp  # noqa: F401  so that three ranks do not import it again on two cores
    import torch.multiprocessing as mp
    from tokenizers import Tokenizer  # noqa: F401
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2ForCausalLM  # noqa: F401

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_run, args=(train_and_save, out), nprocs=WORLD, start_method="fork")
    mp.start_processes(_run, args=(save_placements, out), nprocs=4, start_method="fork")
    for rendezvous in out.glob(".rendezvous-*"):
        rendezvous.unlink()
    return out


def _run(rank: int, function, out: Path) -> None:
    torch.set_num_threads(1)  # several ranks share two cores
    function(rank, out)


if __name__ == "__main__":
    write_all(sys.argv[1])
