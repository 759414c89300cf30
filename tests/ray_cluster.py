"""A Ray cluster of several nodes on this machine, for tests/test_cluster.py: a head and worker nodes, each started by
``ray start --block`` in a process group of its own, under a short temporary directory of its own.

Addresses are loopback only, one per node (127.0.0.2 for the head, 127.0.0.3, ... for the workers), so that Ray's
own ``node_ip`` tells the nodes apart. Not 127.0.0.1: Ray replaces that one by the machine's outward address.
Token authentication (current Ray) is off, since nothing here leaves loopback.

Every process it started is ended by its pid and its process group, never by ``ray stop`` (which would end every
Ray on the machine, other people's jobs included).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port(host="127.0.0.2"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ray_cli():
    """The ``ray`` command of the Python that runs the tests."""
    path = os.path.join(os.path.dirname(sys.executable), "ray")
    return path if os.path.exists(path) else shutil.which("ray")


class ClusterStartError(RuntimeError):
    """Ray could not start a node here (the tests that need a cluster are skipped with this reason)."""


def kill_tree(root_pid):
    """SIGKILL, at once, the process group that ``root_pid`` leads and every descendant of ``root_pid`` (any that
    left the group): a node's ``ray start --block`` (started with ``start_new_session``) with its raylet and its
    workers, the way a machine goes down. Returns the descendants (psutil processes) it found."""
    import psutil

    try:
        procs = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    try:
        os.killpg(root_pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return procs


class LocalCluster:
    """``start()`` the head, ``add_node()`` workers, ``kill_tree(node["popen"].pid)`` for fault injection,
    ``stop()`` all.
    A node is a dict: ``name``, ``ip``, ``popen`` (its ``ray start --block``), ``log``."""

    def __init__(self, head_cpus=1):
        self.temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # Ray's socket paths must stay under ~107 chars
        self.port = free_port()
        self.address = f"127.0.0.2:{self.port}"
        self.env = dict(os.environ, **RAY_ENV)
        # RecBole's Config sets CUDA_VISIBLE_DEVICES in the test process; a node that inherited it would refuse
        # --num-gpus beyond the devices it lists
        self.env.pop("CUDA_VISIBLE_DEVICES", None)
        self.nodes = []
        self.head_cpus = head_cpus

    def _start(self, name, ip, args, timeout=120):
        log_path = os.path.join(self.temp_dir, f"{name}.log")
        command = [ray_cli(), "start", *args, f"--node-ip-address={ip}", f"--temp-dir={self.temp_dir}", "--block",
                   "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port(ip)}",
                   "--object-store-memory=100000000"]
        with open(log_path, "w") as log:
            popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=self.env)
        node = {"name": name, "ip": ip, "popen": popen, "log": log_path}
        self.nodes.append(node)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if popen.poll() is not None:
                raise ClusterStartError(f"ray start for the {name} node exited with {popen.returncode}: "
                                        f"{self._tail(log_path)}")
            with open(log_path, errors="replace") as f:
                if "Ray runtime started" in f.read():
                    return node
            time.sleep(0.5)
        raise ClusterStartError(f"the {name} node did not start within {timeout} s: {self._tail(log_path)}")

    @staticmethod
    def _tail(path, lines=4):
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.read().strip().splitlines()[-lines:])

    def start(self):
        return self._start("head", "127.0.0.2", ["--head", f"--port={self.port}", f"--num-cpus={self.head_cpus}",
                                                 "--num-gpus=0", "--include-dashboard=false",
                                                 f"--ray-client-server-port={free_port()}"])

    def add_node(self, name, num_cpus=1, num_gpus=0):
        ip = f"127.0.0.{len(self.nodes) + 2}"
        return self._start(name, ip, [f"--address={self.address}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}"])

    @staticmethod
    def is_running(node):
        return node["popen"].poll() is None

    def stop(self):
        """End every process this cluster started, by pid and process group; remove its address file and folder."""
        import psutil

        for node in reversed(self.nodes):
            psutil.wait_procs(kill_tree(node["popen"].pid), timeout=10)
            node["popen"].wait(timeout=10)
        # a process of ours re-parented out of the tree still names our temp dir on its command line
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if any(self.temp_dir in part for part in proc.info["cmdline"] or []):
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
        # `ray start --head` leaves its address in ray_current_cluster, where a later ray.init() on this machine
        # would look for a cluster to join: remove it when it is ours
        for folder in ("/tmp/ray", self.temp_dir):
            path = os.path.join(folder, "ray_current_cluster")
            try:
                with open(path) as f:
                    ours = f.read().strip() == self.address
                if ours:
                    os.remove(path)
            except OSError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def leftovers(self):
        """Processes that still name this cluster's temp dir (none after ``stop``)."""
        import psutil

        return [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
                if any(self.temp_dir in part for part in p.info["cmdline"] or [])]
