"""verl's FSDP checkpoints: `global_step_N/actor/model_world_size_W_rank_R.pt`, one file per rank.

Each rank file holds that rank's shard of every parameter, as DTensors in fp32 (the precise
record of the run; verl's own merger rounds them to bf16). Only the `model_*` files are ever
opened: `optim_*`, `extra_state_*` and `data.pt` are pickles that nothing here needs.

A tensor is rebuilt from its placements without gathering it: `Shard(d)` on one mesh
dimension makes each rank's local tensor a block along d (blocks may be uneven: FSDP2 gives
the last ranks fewer rows), `Replicate` dimensions (HSDP's replica groups) are read from
their first copy, and plain tensors are single-GPU saves or buffers every rank holds whole.
A row range of a `Shard(0)` tensor is then read from the one or two rank files holding it.
"""

import json
import re
from pathlib import Path

import torch

from ..errors import RelexError
from .names import strip_wrappers
from .reader import CheckpointReader, chunk_of_whole
from .stored import Chunk, check_tiling
from .torch_reader import load_state_dict, stored_array

FORMAT = "verl"
MODEL_FILE = re.compile(r"^model_world_size_(\d+)_rank_(\d+)\.pt$")
CONFIG_FILE = "fsdp_config.json"
HF_FOLDER = "huggingface"  # beside the rank files: config, generation config, tokenizer; weights if hf_model was saved


def holds(folder: Path) -> bool:
    try:
        return any(MODEL_FILE.match(entry.name) for entry in folder.iterdir())
    except OSError:
        return False


def rank_files(folder: Path) -> list[Path]:
    """The model rank files of one checkpoint, by rank, checked: one world size, every rank, as fsdp_config.json says."""
    found = {}
    for entry in sorted(folder.iterdir()):
        match = MODEL_FILE.match(entry.name)
        if match:
            found[entry] = (int(match.group(1)), int(match.group(2)))
    sizes = sorted({world for world, _ in found.values()})
    if len(sizes) > 1:
        odd = next(file for file, (world, _) in found.items() if world != sizes[-1])
        raise RelexError(f"rank files of different world sizes ({', '.join(map(str, sizes))}) in one checkpoint",
                         path=odd)
    world = sizes[0]
    config_path = folder / CONFIG_FILE
    if config_path.is_file():
        try:
            configured = json.loads(config_path.read_text())["world_size"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RelexError(f"unreadable FSDP config ({error})", path=config_path) from None
        if configured != world:
            raise RelexError(f"says world_size {configured} but the rank files are model_world_size_{world}_rank_*.pt",
                             path=config_path)
    by_rank = {rank: file for file, (_, rank) in found.items()}
    for rank in range(world):
        if rank not in by_rank:
            raise RelexError(f"rank file missing: the checkpoint was saved by {world} ranks",
                             path=folder / f"model_world_size_{world}_rank_{rank}.pt")
    extra = sorted(rank for rank in by_rank if rank >= world)
    if extra:
        raise RelexError(f"rank {extra[0]} is outside world size {world}", path=by_rank[extra[0]])
    return [by_rank[rank] for rank in range(world)]


def weight_files(folder: Path) -> tuple[list[Path], dict]:
    return rank_files(folder), {}


def hf_folder(folder: Path) -> Path:
    """Where verl keeps the HF config and tokenizer of this checkpoint (and bf16 weights, if asked to)."""
    return folder / HF_FOLDER


class VerlReader(CheckpointReader):
    format = FORMAT

    def __init__(self, location):
        super().__init__(location)
        self.files = rank_files(self.location)
        self.description = f"verl FSDP shards (world size {len(self.files)})"
        import torch.distributed.tensor  # noqa: F401  registers DTensor with the weights-only unpickler

        states = []
        for file in self.files:
            state = {}
            for key, tensor in load_state_dict(file).items():
                state[strip_wrappers(key)] = tensor
            states.append(state)
        reference = states[0]
        for file, state in zip(self.files[1:], states[1:]):
            for name in set(reference) ^ set(state):
                where = "missing from this rank file" if name in reference else "not in rank 0's file"
                raise RelexError(f"tensor {where} (a rank file from another run?)", path=file, tensor=name)
        for name in reference:
            shape, dtype, chunks = _assemble(name, [(file, state[name]) for file, state in zip(self.files, states)])
            self._add(name, shape, dtype, chunks, path=self.files[0])
        self._drop_tied_copy(hf_folder(self.location))


def _assemble(name: str, pieces) -> tuple:
    """(global shape, dtype, chunks) of one tensor from its piece in every rank file."""
    from torch.distributed.tensor import DTensor, Shard

    first_file, first = pieces[0]
    if not isinstance(first, DTensor):  # a single-GPU save, or a buffer each rank holds whole
        for file, tensor in pieces[1:]:
            if isinstance(tensor, DTensor) or tensor.shape != first.shape or tensor.dtype != first.dtype:
                raise RelexError(f"{_describe(tensor)} here, {_describe(first)} in rank 0's file "
                                 "(a rank file from another step or run?)", path=file, tensor=name)
        return tuple(first.shape), first.dtype, chunk_of_whole(stored_array(first_file, first))
    mesh_shape = tuple(first.device_mesh.mesh.shape)
    placements = tuple(first.placements)
    for file, tensor in pieces[1:]:
        if not isinstance(tensor, DTensor) or tensor.shape != first.shape or tensor.dtype != first.dtype \
                or tuple(tensor.placements) != placements or tuple(tensor.device_mesh.mesh.shape) != mesh_shape:
            raise RelexError(f"{_describe(tensor)} here, {_describe(first)} in rank 0's file "
                             "(a rank file from another step or run?)", path=file, tensor=name)
    world = len(pieces)
    if torch.Size(mesh_shape).numel() != world:
        raise RelexError(f"device mesh {list(mesh_shape)} does not hold the {world} ranks of this checkpoint",
                         path=first_file, tensor=name)
    for placement in placements:
        if not (type(placement) is Shard or placement.is_replicate()):
            raise RelexError(f"placement {placement} cannot be read from the shards alone (partial sums or "
                             "strided sharding); merge this checkpoint with the framework's tool", path=first_file,
                             tensor=name)
    sharded = [(mesh_dim, placement.dim) for mesh_dim, placement in enumerate(placements) if type(placement) is Shard]
    if len(sharded) > 1:
        raise RelexError(f"sharded over {len(sharded)} mesh dimensions {placements} (tensor parallel): relex reads "
                         "FSDP and HSDP shards, with one sharded mesh dimension", path=first_file, tensor=name)
    by_coordinate = {}
    for file, tensor in pieces:
        coordinate = tuple(tensor.device_mesh.get_coordinate() or ())
        if coordinate in by_coordinate or len(coordinate) != len(mesh_shape):
            raise RelexError(f"mesh coordinate {list(coordinate)} is also that of {by_coordinate[coordinate][0].name}"
                             if coordinate in by_coordinate else "rank file holds no mesh coordinate",
                             path=file, tensor=name)
        by_coordinate[coordinate] = (file, tensor.to_local())
    if not sharded:
        file, local = by_coordinate[(0,) * len(mesh_shape)]
        _check_copies(name, by_coordinate, lambda coordinate: (0,) * len(mesh_shape))
        return tuple(first.shape), first.dtype, chunk_of_whole(stored_array(file, local))
    mesh_dim, dim = sharded[0]

    def representative(coordinate):
        return tuple(coordinate[mesh_dim] if axis == mesh_dim else 0 for axis in range(len(mesh_shape)))

    chunks, position = [], 0
    for index in range(mesh_shape[mesh_dim]):
        file, local = by_coordinate[representative((index,) * len(mesh_shape))]
        offsets = [0] * first.dim()
        offsets[dim] = position
        chunks.append(Chunk(tuple(offsets), stored_array(file, local)))
        position += local.shape[dim]
    check_tiling(chunks, tuple(first.shape), path=first_file, tensor=name)
    _check_copies(name, by_coordinate, representative)
    return tuple(first.shape), first.dtype, tuple(chunks)


def _check_copies(name, by_coordinate, representative) -> None:
    """Replicas are never read, but must have the shape of the copy that is."""
    for coordinate, (file, local) in by_coordinate.items():
        expected = by_coordinate[representative(coordinate)][1]
        if local.shape != expected.shape:
            raise RelexError(f"local shard {list(local.shape)} differs from its replica's {list(expected.shape)}",
                             path=file, tensor=name)


def _describe(tensor) -> str:
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        return f"a {list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')} DTensor {tuple(tensor.placements)}"
    return f"a plain {list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')} tensor"
