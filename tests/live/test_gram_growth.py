"""Growing the Gram: only the new checkpoints' rows are computed, and the result equals a one-shot pass."""

import os
import shutil

import numpy as np
import pytest
import torch

from relex_core import cache, compute_gram, open_run
from relex_core.gram import LocalEngine, grow_gram, run_gram_pass
from relex_core.stream import open_layout
from relex_core.synthetic import make_run
from tests.test_gram import brute_force_gram

STEPS = (10, 20, 30, 40, 50, 60)


class RecordingEngine(LocalEngine):
    """The real local engine, recording what it was asked for."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def gram_sums(self, layout, new=None, **options):
        self.calls.append((len(layout.readers), new))
        return super().gram_sums(layout, new, **options)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("growth") / "run", steps=STEPS, dtype=torch.bfloat16)


def copy_prefix(full_run, folder, count):
    """The run folder as a trainer had written it after `count` checkpoints (copies keep the mtimes)."""
    folder.mkdir(exist_ok=True)
    for step in (0, *STEPS[:count]):
        if not (folder / f"checkpoint-{step}").exists():
            shutil.copytree(full_run / f"checkpoint-{step}", folder / f"checkpoint-{step}")
    return folder


def test_grow_gram_computes_only_the_new_rows_and_equals_a_one_shot_pass(full_run, tmp_path):
    engine = RecordingEngine()
    run = open_run(full_run)
    with open_layout(run, checkpoints=range(3)) as layout:
        prefix = run_gram_pass(layout, progress=False)
    with open_layout(run) as layout:
        grown = grow_gram(prefix, layout, engine=engine, progress=False)
    assert engine.calls == [(len(STEPS), slice(3, len(STEPS)))]  # one pass, only the three new rows
    one_shot = compute_gram(run, use_cache=False, cache_dir=tmp_path / "cache", progress=False)
    deltas = brute_force_gram(full_run, STEPS)
    assert grown.steps.tolist() == list(STEPS)
    np.testing.assert_array_equal(grown.gram[:, :3, :3], prefix.gram)  # the old block is reused as it is
    for index, name in enumerate(grown.names):
        expected = deltas[name] @ deltas[name].T
        np.testing.assert_allclose(grown.gram[index], expected, rtol=1e-12, atol=1e-14 * np.abs(expected).max())
    np.testing.assert_allclose(grown.gram, one_shot.gram, rtol=1e-12, atol=1e-14 * np.abs(one_shot.gram).max())
    assert (grown.gram == grown.gram.transpose(0, 2, 1)).all()
    np.testing.assert_array_equal(grown.changed, one_shot.changed)
    np.testing.assert_allclose(grown.base_sq_norm, one_shot.base_sq_norm, rtol=1e-14)


def test_a_run_that_grew_finds_its_earlier_prefix_in_the_cache(full_run, tmp_path):
    folder, cache_dir = tmp_path / "run", tmp_path / "cache"
    first = compute_gram(open_run(copy_prefix(full_run, folder, 3)), cache_dir=cache_dir, progress=False)
    assert not first.from_cache
    copy_prefix(full_run, folder, len(STEPS))
    engine = RecordingEngine()
    grown = compute_gram(open_run(folder), cache_dir=cache_dir, progress=False, engine=engine)
    assert engine.calls == [(len(STEPS), slice(3, len(STEPS)))]
    with open_layout(open_run(folder)) as layout:
        assert grown.fingerprint == cache.fingerprint(layout)  # saved under the key a one-shot pass gets
    again = compute_gram(open_run(folder), cache_dir=cache_dir, progress=False)
    assert again.from_cache
    fresh = compute_gram(open_run(folder), use_cache=False, cache_dir=tmp_path / "other", progress=False)
    np.testing.assert_allclose(again.gram, fresh.gram, rtol=1e-12, atol=1e-14 * np.abs(fresh.gram).max())
    assert again.steps.tolist() == list(STEPS)


def test_a_rewritten_checkpoint_of_the_prefix_is_not_grown_from(full_run, tmp_path):
    folder, cache_dir = tmp_path / "run", tmp_path / "cache"
    compute_gram(open_run(copy_prefix(full_run, folder, 3)), cache_dir=cache_dir, progress=False)
    copy_prefix(full_run, folder, 4)
    touched = folder / "checkpoint-20" / "model.safetensors"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    engine = RecordingEngine()
    compute_gram(open_run(folder), cache_dir=cache_dir, progress=False, engine=engine)
    assert engine.calls == [(4, None)]  # a full pass: the prefix's key no longer matches


def test_select_keeps_the_sub_gram_and_the_matching_checkpoints(full_run, tmp_path):
    run_gram = compute_gram(open_run(full_run), cache_dir=tmp_path / "cache", progress=False)
    kept = run_gram.select([1, 3, 4])
    assert kept.steps.tolist() == [20, 40, 50]
    assert [checkpoint.step for checkpoint in kept.run.checkpoints] == [20, 40, 50]
    np.testing.assert_array_equal(kept.gram, run_gram.gram[:, [1, 3, 4]][:, :, [1, 3, 4]])
    np.testing.assert_array_equal(kept.changed, run_gram.changed[:, [1, 3, 4]])
