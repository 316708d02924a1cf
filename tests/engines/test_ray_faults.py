"""A node that dies in the middle of a pass: Ray runs its tasks again elsewhere and the Gram is unchanged."""

import numpy as np

from relex_core import open_run
from relex_core.engines.ray import RayEngine
from relex_core.gram import LocalEngine
from relex_core.stream import open_layout

ONE_ROW = 0.0001  # MB: about one row per item, hundreds of tasks, so the kill lands mid-pass


def test_a_pass_survives_a_worker_node_dying_midway(ray_cluster, ray_run):
    killed = []

    def progress(fraction, message):
        if fraction > 0.2 and not killed:
            ray_cluster.kill_raylet(1)  # the second node's raylet: its workers and running tasks die with it
            killed.append(fraction)

    try:
        with open_layout(open_run(ray_run)) as layout:
            on_ray = RayEngine(ray_cluster.address).gram_sums(layout, chunk_mb=ONE_ROW, progress=progress)
            local = LocalEngine().gram_sums(layout, chunk_mb=ONE_ROW, progress=False)
        assert killed and killed[0] < 0.5
        assert all(np.array_equal(mine, theirs) for mine, theirs in zip(on_ray, local))
    finally:
        ray_cluster.processes[1].wait(timeout=120)  # its `ray start --block` ends with the raylet
        ray_cluster.wait_for_nodes(1)  # the cluster has declared it dead: later drivers are not told so again
        ray_cluster.add_node()  # two nodes again for the tests after this one
