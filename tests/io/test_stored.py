"""The one read path: tensors as stored pieces of files, rows read with pread."""

from pathlib import Path

import pytest
import torch

from relex_core import RelexError
from relex_core.io.reader import open_reader
from relex_core.io.stored import Chunk, StoredArray, check_tiling


def pieces(*blocks):
    """Chunks at (offsets, shape), with no file behind them: only the tiling is checked."""
    return [Chunk(offsets, StoredArray(Path("f"), 0, torch.float32, shape)) for offsets, shape in blocks]


@pytest.mark.parametrize("blocks, words", [
    ((((0, 0), (3, 4)), ((2, 0), (3, 4))), "overlap along dimension 0"),
    ((((0, 0), (3, 4)), ((4, 0), (1, 4))), "leave a gap along dimension 0"),
    ((((0, 0), (3, 4)),), "cover 3 of 5 along dimension 0"),
    ((((0, 0), (3, 2)), ((0, 2), (3, 2)), ((3, 0), (2, 2))), "3 stored pieces of this tensor do not form a grid"),
    ((((0, 0), (5, 4)), ((0, 0), (5, 4))), "2 stored pieces of this tensor do not form a grid"),
])
def test_pieces_that_do_not_tile_the_tensor_are_refused(blocks, words):
    with pytest.raises(RelexError, match=words):
        check_tiling(pieces(*blocks), (5, 4), path="f", tensor="w")


def test_grids_and_empty_pieces_tile():
    check_tiling(pieces(((0, 0), (3, 2)), ((0, 2), (3, 2)), ((3, 0), (2, 2)), ((3, 2), (2, 2)), ((5, 0), (0, 4))),
                 (5, 4), path="f", tensor="w")


def test_torch_files_are_read_in_place_whatever_their_layout(tmp_path):
    """Strided storages (a transposed matrix saved as is), views into a larger storage, 0-d and
    integer tensors, and a legacy (pre-zip) pickle, which is the one file loaded whole."""
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    state = {"transposed": base.t(), "view": base[2:5], "scalar": torch.tensor(3.5, dtype=torch.float64),
             "steps": torch.arange(7), "half": base.to(torch.bfloat16)}
    torch.save(state, tmp_path / "weights.pt")
    torch.save({"legacy": base}, tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    with open_reader(tmp_path / "weights.pt") as reader:
        assert reader.format == "torch" and reader.tensors["steps"].dtype is None  # read, never analysed
        for name, tensor in state.items():
            assert torch.equal(reader.read(name), tensor.reshape(-1) if tensor.dim() == 0 else tensor), name
            if tensor.dim():
                assert torch.equal(reader.read(name, 1, 3), tensor[1:3]), name
    with open_reader(tmp_path / "old.bin") as reader:
        assert torch.equal(reader.read("legacy", 2, 4), base[2:4])


def test_a_wrong_buffer_is_a_bug_of_the_caller_not_a_user_error(tmp_path):
    """Only bad input becomes a RelexError; relex's own mistakes keep their type and traceback."""
    torch.save({"w": torch.ones(4, 4)}, tmp_path / "weights.pt")
    with open_reader(tmp_path / "weights.pt") as reader:
        with pytest.raises(ValueError, match="uint8 tensor of at least 64 bytes"):
            reader.read("w", 0, 4, out=torch.empty(8, dtype=torch.uint8))
        with pytest.raises(ValueError, match="uint8"):
            reader.read("w", 0, 4, out=torch.empty(64, dtype=torch.float32))
