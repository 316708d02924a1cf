"""The Gram pass and the export as Ray tasks, on a cluster whose nodes see the run at the same paths.

The driver (the `relex` process) plans the same work items as the local engine, packs
consecutive ones into tasks of about one chunk, and keeps at most `max_in_flight` tasks
submitted and not yet added. Each task asks Ray for one CPU and the memory it will hold, opens
the run's files itself (a layout holds open files, which do not travel), runs the items
(`item_gram`, `export_item`) and returns their small results: a Gram block per item, or an
export item's rounding sums (its rows are written into the shard files in place, never sent).
The driver adds the results in item order, so the Gram and relex.json equal the local engine's,
whatever node computed what and in which order it finished.

Faults: a task whose worker or node dies is run again by Ray (max_retries); items are pure
reads, and an export item writes the same bytes at the same offsets, so a retry changes nothing.
A RelexError (or OSError) raised in a task is raised again here as itself: one line, exit 2.
"""

import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import ray
from ray.exceptions import RayTaskError

from .. import threads
from ..errors import RelexError
from ..export import ExportJob, ItemLoss, export_item, item_read_bytes
from ..gram import GramSums, item_gram, pass_bytes, pass_items, sum_blocks
from ..stream import ByteProgress, RunLayout, budget_bytes, chunk_bytes, open_layout, stored_bytes

# What a task holds besides its read buffer: the worker's own footprint is Ray's business, this is
# relex's: float64 column blocks, Gram blocks, rounding temporaries. Enough for the tests' tiny runs
# and small next to a real chunk.
TASK_OVERHEAD_BYTES = 64 << 20


@dataclass
class RayEngine:
    """Runs work items as Ray tasks on the cluster at `address` ('auto', 'HOST:PORT', 'ray://HOST:PORT').

    cpus_per_task: CPUs each task asks for (and product threads it runs);
    max_in_flight: tasks submitted and not yet added (default: twice the cluster's CPUs over cpus_per_task);
    max_retries: how often Ray reruns a task whose worker or node died.
    """
    address: str = "auto"
    cpus_per_task: int = 1
    max_in_flight: int | None = None
    max_retries: int = 3

    def connect(self) -> None:
        """Join the cluster once per process; an address that does not answer is one line."""
        if ray.is_initialized():
            return
        _check_reachable(self.address)
        try:
            ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
        except Exception as error:  # ConnectionError, RuntimeError, ValueError, ...: all mean no cluster here
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise RelexError(f"cannot connect to the Ray cluster at {self.address} ({first_line})") from None

    # ------------------------------------------------------------ the pass

    def gram_sums(self, layout: RunLayout, new=None, *, chunk_mb: float = 256, progress=True) -> GramSums:
        """`LocalEngine.gram_sums` on the cluster: the same items and the same sums, in the same order."""
        self.connect()
        items = pass_items(layout, chunk_mb)
        groups = task_groups(items, [stored_bytes(layout, item) for item in items], budget_bytes(chunk_mb))
        memory = TASK_OVERHEAD_BYTES + chunk_bytes(layout, items)
        source = _Source(layout.run, tuple(layout.positions), uuid.uuid4().hex)

        def submit(group):
            return _gram_task.options(num_cpus=self.cpus_per_task, memory=memory, max_retries=self.max_retries) \
                .remote(source, group, new, self.cpus_per_task)

        results = self._run(groups, submit, memory, pass_bytes(layout, items), "relex gram pass (ray)",
                            lambda group: pass_bytes(layout, group), progress)
        return sum_blocks(layout, items, new, (block for _, blocks in results for block in blocks))

    # ------------------------------------------------------------ the export

    def export_items(self, job: ExportJob, layout: RunLayout, items, progress) -> list[ItemLoss]:
        """`export.local_export` on the cluster: tasks write their rows into the laid-out shards."""
        self.connect()
        sizes = [item_read_bytes(job, layout, item) for item in items]
        groups = task_groups(items, sizes, max(sizes, default=1))
        elements = max(((stop - start) * layout.base.tensors[name].row_numel for name, start, stop in items), default=0)
        # rows as stored, then per target δ̂ in float64 with its rounding temporaries and the output
        memory = TASK_OVERHEAD_BYTES + max(sizes, default=0) + 28 * elements * job.n_targets
        source = _Source(layout.run, tuple(layout.positions), uuid.uuid4().hex)
        shared_job = ray.put(job)
        size_of = dict(zip(items, sizes))

        def submit(group):
            return _export_task.options(num_cpus=self.cpus_per_task, memory=memory, max_retries=self.max_retries) \
                .remote(source, shared_job, group, self.cpus_per_task)

        losses = []
        for _, group_losses in self._run(groups, submit, memory, sum(sizes), "relex export (ray)",
                                         lambda group: sum(size_of[item] for item in group), progress):
            losses.extend(group_losses)
        return losses

    # ------------------------------------------------------------ scheduling

    def _run(self, groups, submit, memory: int, total_bytes: int, description: str, group_bytes, progress):
        """(group, result) in group order; tasks run in any order, at most max_in_flight not yet yielded."""
        _check_fits(memory)
        limit = self.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)) // self.cpus_per_task)
        pending, finished = {}, {}
        submitted = yielded = 0
        with ByteProgress(total_bytes, description, progress) as bar:
            try:
                while yielded < len(groups):
                    while submitted < len(groups) and submitted - yielded < limit:
                        pending[submit(groups[submitted])] = submitted
                        submitted += 1
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for reference in ready:
                        number = pending.pop(reference)
                        finished[number] = _result(reference)
                        bar.advance(group_bytes(groups[number]))
                    while yielded in finished:
                        yield groups[yielded], finished.pop(yielded)
                        yielded += 1
            finally:
                for reference in pending:  # an error or Ctrl-C: nothing keeps running for a pass that ended
                    ray.cancel(reference)


def task_groups(items, sizes, budget: int) -> list[tuple]:
    """Consecutive items packed into tasks of at most `budget` bytes read (at least one item each):
    small tensors (norms, biases) would otherwise cost a task's overhead for a few kilobytes."""
    groups, current, current_bytes = [], [], 0
    for item, size in zip(items, sizes):
        if current and current_bytes + size > budget:
            groups.append(tuple(current))
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    return groups + [tuple(current)] if current else groups


def _result(reference):
    """ray.get, with a task's user error (RelexError, OSError) raised again as itself."""
    try:
        return ray.get(reference)
    except RayTaskError as error:
        cause = error.cause
        if isinstance(cause, (RelexError, OSError)):
            raise cause from None
        if isinstance(cause, ModuleNotFoundError) and "relex_core" in str(cause):
            raise RelexError("relex is not installed on a Ray node (install it on every node)") from None
        raise


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on fails in seconds, with its reason, not after Ray's long retries."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RelexError(f"Ray address '{address}' must look like HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise RelexError(f"cannot reach the Ray cluster at {address} ({error.strerror or error})") from None


def _check_fits(memory: int) -> None:
    """A task no node can hold would wait forever: say so, with the way out."""
    largest = max((node["Resources"].get("memory", 0) for node in ray.nodes() if node["Alive"]), default=0)
    if memory > largest:
        raise RelexError(f"a work item needs {memory / 2**20:.0f} MiB of memory but the largest Ray node offers "
                         f"{largest / 2**20:.0f} MiB (lower --chunk-mb)")


# ---------------------------------------------------------------- on the workers


@dataclass(frozen=True)
class _Source:
    """What a task needs to open the layout itself: the run, the positions read, and which pass it is."""
    run: object
    positions: tuple
    pass_id: str


_worker_layouts = {}  # pass_id -> the open layout: a worker opens the run's files once per pass


def _layout(source: _Source) -> RunLayout:
    layout = _worker_layouts.get(source.pass_id)
    if layout is None:
        for other in _worker_layouts.values():  # one pass at a time per worker: earlier files are closed
            other.close()
        _worker_layouts.clear()
        run = source.run
        _check_visible([run.base.path, *(run.checkpoints[position].path for position in source.positions)])
        layout = _worker_layouts[source.pass_id] = open_layout(run, checkpoints=source.positions)
    return layout


def _check_visible(paths) -> None:
    for path in paths:
        if not os.path.exists(path):
            raise RelexError(f"not visible on Ray node {_node_name()}: every node must see the run and the "
                             "output folder at the same paths (shared storage)", path=path)


def _node_name() -> str:
    return f"{ray.util.get_node_ip_address()} (node id {ray.get_runtime_context().get_node_id()[:12]})"


def _products(cpus: int):
    return ThreadPoolExecutor(cpus, thread_name_prefix="relex-ray") if cpus > 1 else nullcontext()


@ray.remote
def _gram_task(source: _Source, items, new, cpus: int) -> list:
    threads.configure()
    layout = _layout(source)
    with _products(cpus) as pool:
        return [item_gram(layout, item, new, pool=pool) for item in items]


@ray.remote
def _export_task(source: _Source, job: ExportJob, items, cpus: int) -> list:
    threads.configure()
    layout = _layout(source)
    _check_visible([writer.folder for writer in job.writers])
    with _products(cpus) as pool:
        return [export_item(job, layout, item, pool=pool) for item in items]
