"""One real 2-node Ray cluster for the whole session (starting one costs seconds of these shared cores)."""

import pytest
import torch

from relex_core.synthetic import make_run

from .ray_cluster import LocalRayCluster


@pytest.fixture(scope="session")
def ray_cluster():
    """Two nodes of one CPU each, as separate `ray start` processes; the test process joins as the driver."""
    import ray

    with LocalRayCluster(nodes=2) as cluster:
        yield cluster
        ray.shutdown()  # before the nodes go: a driver left connected waits for its GCS, then exits the process


@pytest.fixture(scope="session")
def ray_run(tmp_path_factory):
    """A small bf16 run in shards: 26 tensors, six checkpoints after the base."""
    return make_run(tmp_path_factory.mktemp("ray") / "run", steps=(10, 20, 30, 40, 50, 60), dtype=torch.bfloat16,
                    relative_update=1e-2, shard_size=20_000)
