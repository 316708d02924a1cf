"""Streaming reads: layouts, chunk plans against a budget, rows as stored, float64 blocks, read-ahead."""

import re
import threading
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from relex_core import RelexError, open_run
from relex_core.stream import (BLOCK_BYTES, ByteProgress, ReadAhead, WorkItem, budget_bytes, chunk_bytes,
                               delta_blocks, float64_blocks, locate_non_finite, open_layout, plan_chunks,
                               read_rows, stored_bytes)
from relex_core.synthetic import make_run

STEPS = (10, 20, 30)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("stream") / "run", steps=STEPS, dtype=torch.bfloat16, shard_size=30_000)


def stored(run_folder, step) -> dict:
    """Every tensor of one checkpoint, read whole with safetensors itself."""
    state = {}
    for file in sorted((run_folder / f"checkpoint-{step}").glob("*.safetensors")):
        state.update(load_file(file))
    return state


def test_a_layout_opens_the_base_and_the_chosen_checkpoints(run_folder):
    run = open_run(run_folder)
    with open_layout(run) as layout:
        assert [reader.location for reader in layout.readers] == [checkpoint.path for checkpoint in run.checkpoints]
        assert layout.positions == [0, 1, 2] and layout.sources[0] is layout.base
        assert sorted(layout.names) == sorted(stored(run_folder, 0))
    with open_layout(run, checkpoints=[2]) as layout:
        assert [reader.location.name for reader in layout.readers] == ["checkpoint-30"]
        assert layout.positions == [2]


def test_a_checkpoint_that_lacks_a_tensor_is_refused_with_file_and_tensor(tmp_path):
    folder = make_run(tmp_path / "run", steps=STEPS)
    file = folder / "checkpoint-20" / "model.safetensors"
    state = load_file(file)
    del state["model.norm.weight"]
    save_file(state, file, metadata={"format": "pt"})
    run = open_run(folder)
    with pytest.raises(RelexError, match="model.norm.weight") as error:
        open_layout(run)
    assert "checkpoint-20" in str(error.value)
    with open_layout(run, checkpoints=[0, 2]) as layout:  # the damaged checkpoint is not opened
        assert len(layout.readers) == 2


def test_chunks_cover_every_row_once_within_the_budget(run_folder):
    with open_layout(open_run(run_folder)) as layout:
        budget, per_element = budget_bytes(0.01), 8 * 4
        items = plan_chunks(layout, budget, per_element)
        for name in layout.names:
            info = layout.base.tensors[name]
            ranges = [(item.start, item.stop) for item in items if item.tensor == name]
            assert ranges[0][0] == 0 and ranges[-1][1] == info.rows
            assert all(stop == start for (_, stop), (start, _) in zip(ranges, ranges[1:]))
            for start, stop in ranges:  # within the budget, or a single row that alone exceeds it
                assert (stop - start) * info.row_numel * per_element <= budget or stop - start == 1
        assert [item.tensor for item in items] == sorted((item.tensor for item in items), key=layout.names.index)
        just_two = plan_chunks(layout, budget, per_element, names=["model.norm.weight", "model.embed_tokens.weight"])
        assert [item.tensor for item in just_two][0] == "model.norm.weight"
        assert budget_bytes(256) == 256 * 2**20


def test_rows_are_the_stored_values_of_the_base_then_each_checkpoint(run_folder):
    states = [stored(run_folder, step) for step in (0, *STEPS)]
    with open_layout(open_run(run_folder)) as layout:
        items = plan_chunks(layout, budget_bytes(0.005), 8 * 4)
        buffer = torch.empty(chunk_bytes(layout, items), dtype=torch.uint8)
        for item in items:
            rows = read_rows(layout, item, out=buffer)
            assert rows.dtype == torch.bfloat16  # as stored: nothing converted
            assert rows.data_ptr() == buffer.data_ptr()  # read into the reused buffer
            expected = torch.stack([state[item.tensor][item.start:item.stop].reshape(-1) for state in states])
            assert torch.equal(rows, expected)
        largest = max(len(layout.sources) * (item.stop - item.start) * layout.base.tensors[item.tensor].row_numel * 2
                      for item in items)
        assert chunk_bytes(layout, items) == largest
        total = sum(stored_bytes(layout, item) for item in items)
    assert total == sum(tensor.numel() * tensor.element_size() for state in states for tensor in state.values())


def test_checkpoints_in_different_dtypes_are_read_as_exact_float64(tmp_path):
    folder = make_run(tmp_path / "run", steps=STEPS, dtype=torch.float32)
    file = folder / "checkpoint-20" / "model.safetensors"
    save_file({name: tensor.to(torch.bfloat16) for name, tensor in load_file(file).items()}, file,
              metadata={"format": "pt"})
    with open_layout(open_run(folder)) as layout:
        assert "mix dtypes" in layout.notes[0]
        name = "model.layers.0.mlp.up_proj.weight"
        rows = read_rows(layout, WorkItem(name, 3, 9))
    assert rows.dtype == torch.float64
    assert torch.equal(rows[2], load_file(file)[name][3:9].reshape(-1).to(torch.float64))


def test_float64_blocks_hold_the_exact_values_and_delta_blocks_the_exact_deltas():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(5, 300_000, generator=generator).to(torch.bfloat16)  # several blocks of BLOCK_BYTES
    exact = rows.to(torch.float64)
    values = torch.cat([block.clone() for _, block in float64_blocks(rows)], dim=1)
    assert torch.equal(values, exact)
    firsts = [first for first, _ in float64_blocks(rows)]
    assert len(firsts) > 1 and firsts[0] == 0
    assert all(block.numel() * 8 <= max(BLOCK_BYTES, 5 * 1024 * 8) for _, block in float64_blocks(rows))
    deltas = torch.cat([block.clone() for _, block in delta_blocks(rows)], dim=1)
    assert torch.equal(deltas[0], exact[0]) and torch.equal(deltas[1:], exact[1:] - exact[0])


def test_read_ahead_reads_the_next_item_on_another_thread_into_two_alternating_buffers():
    items = [WorkItem("t", start, start + 1) for start in range(6)]
    readers, buffers = [], []

    def read(item, buffer):
        readers.append(threading.current_thread().name)
        buffers.append(buffer.data_ptr())
        buffer[:1] = item.start
        return buffer[:1]

    seen = []
    with ReadAhead(items, read, 8) as chunks:
        for item, rows in chunks:
            seen.append((item.start, int(rows[0])))
    assert seen == [(start, start) for start in range(6)]
    assert all(name.startswith("relex-read") for name in readers)
    assert len(set(buffers)) == 2 and buffers[0::2] == [buffers[0]] * 3 and buffers[1::2] == [buffers[1]] * 3
    with ReadAhead(items, read, 8, prefetch=False) as chunks:
        assert [int(rows[0]) for _, rows in chunks] == list(range(6))
    assert readers[-1] == threading.current_thread().name


def test_leaving_a_read_ahead_early_waits_for_the_read_under_way():
    started, finished = [], []

    def slow_read(item, buffer):
        started.append(item.start)
        time.sleep(0.2)
        finished.append(item.start)
        return buffer

    with pytest.raises(RuntimeError, match="stop"):
        with ReadAhead([WorkItem("t", start, start + 1) for start in range(5)], slow_read, 8) as chunks:
            for item, _ in chunks:
                time.sleep(0.05)  # item 1 is being read now
                raise RuntimeError("stop")
    assert finished == started == [0, 1]  # the block was left only once item 1 was read; nothing after it
    time.sleep(0.3)
    assert started == [0, 1]


def test_byte_progress_says_bytes_read_of_the_total_and_the_rate():
    seen = []
    with ByteProgress(3 * 10**9, "test", lambda fraction, message: seen.append((fraction, message))) as progress:
        progress.advance(10**9)
        progress.advance(2 * 10**9)
    assert [fraction for fraction, _ in seen] == [pytest.approx(1 / 3), 1.0]
    assert re.fullmatch(r"1\.00 / 3\.00 GB read, \d+\.\d\d GB/s", seen[0][1])
    assert re.fullmatch(r"3\.00 / 3\.00 GB read, \d+\.\d\d GB/s", seen[1][1])
    small = ByteProgress(2_500_000, "test", False)
    small.advance(1_250_000)
    assert small.message().startswith("1.25 / 2.50 MB read")


def test_a_non_finite_value_is_traced_to_its_file(tmp_path):
    folder = make_run(tmp_path / "run", steps=STEPS)
    file = folder / "checkpoint-30" / "model.safetensors"
    state = load_file(file)
    state["model.norm.weight"][3] = float("nan")
    save_file(state, file, metadata={"format": "pt"})
    with open_layout(open_run(folder)) as layout:
        error = locate_non_finite(layout, "model.norm.weight")
        assert "checkpoint-30" in str(error) and "model.norm.weight" in str(error) and "NaN" in str(error)
        clean = locate_non_finite(layout, "model.embed_tokens.weight")
        assert "overflowed float64" in str(clean)
