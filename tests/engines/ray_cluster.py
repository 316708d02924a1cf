"""A real Ray cluster of separate nodes on this machine, for the tests and bench/ray_engine.py.

Each node is its own `ray start --block` process with its own temporary folder and ports, one
CPU and a small object store; workers import this checkout (PYTHONPATH), as a user's nodes
import their installed relex. Everything is stopped by process id, never by a broad kill.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalRayCluster:
    """`with LocalRayCluster(nodes=2) as cluster:` ... cluster.address; cluster.kill_raylet(1)."""

    def __init__(self, nodes: int = 2, object_store_mb: int = 100):
        self.count, self.object_store_mb = nodes, object_store_mb
        self.processes, self.folders = [], []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.environment = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}

    def start(self) -> "LocalRayCluster":
        try:
            for number in range(self.count):
                self.add_node(head=number == 0)
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, head: bool = False) -> None:
        """One more node (the first is the head); returns when the cluster counts it."""
        folder = tempfile.mkdtemp(prefix="rxr-", dir="/tmp")  # short: Ray's unix sockets live under it
        self.folders.append(folder)
        command = [RAY, "start", "--block", "--num-cpus", "1", "--temp-dir", folder,
                   "--object-store-memory", str(self.object_store_mb * 10**6), "--disable-usage-stats",
                   "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                   "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                   "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]
        command += (["--head", "--port", str(self.port), "--include-dashboard=false",
                     "--ray-client-server-port", str(free_port())] if head else ["--address", self.address])
        log = open(Path(folder) / "start.log", "w")
        self.processes.append(subprocess.Popen(command, env=self.environment, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))
        self.wait_for_nodes(sum(process.poll() is None for process in self.processes), starting=self.processes[-1])

    def alive_nodes(self) -> int:
        script = ("import ray, logging; ray.init(address=%r, logging_level=logging.ERROR); "
                  "print('alive nodes:', sum(node['Alive'] for node in ray.nodes()))" % self.address)
        result = subprocess.run([sys.executable, "-c", script], env=self.environment, capture_output=True,
                                text=True, timeout=120)
        counts = [line.split(":")[1] for line in result.stdout.splitlines() if line.startswith("alive nodes:")]
        return int(counts[-1]) if result.returncode == 0 and counts else -1  # Ray may print its own news too

    def wait_for_nodes(self, count: int, timeout: float = 180, starting=None) -> None:
        """Until the cluster counts `count` live nodes; `starting`: the `ray start` that must not have failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if starting is not None and starting.poll() is not None:
                log = Path(self.folders[self.processes.index(starting)]) / "start.log"
                raise RuntimeError(f"ray start failed: {log.read_text()[-2000:]}")
            if self.alive_nodes() == count:
                return
            time.sleep(1)
        raise TimeoutError(f"the Ray cluster at {self.address} did not reach {count} nodes")

    def raylet(self, node: int) -> psutil.Process:
        """The raylet process of a node: a child of its `ray start`."""
        children = psutil.Process(self.processes[node].pid).children(recursive=True)
        (raylet,) = [child for child in children if child.name() == "raylet"]
        return raylet

    def kill_raylet(self, node: int) -> None:
        """The node dies as if its machine went away: SIGKILL to its raylet, by process id."""
        os.kill(self.raylet(node).pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM to each node's `ray start --block` (it stops the processes it started), by id; then
        SIGKILL to whatever of its process group is left."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the node's own session (start_new_session): its leftovers only
            except ProcessLookupError:
                pass
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        self.processes, self.folders = [], []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
