"""Sweeps on a real multi-node Ray cluster started on this machine (tests/ray_cluster.py): a head with 1 CPU and a
worker with 1 CPU and 2 logical GPUs, joined with --ray_address. Trials placed on both nodes, fractional GPU
bookkeeping without CUDA, a driver killed and resumed, and a worker node killed under a running trial.

The cluster is shared by the module and always stopped; the tests are skipped, with the reason printed, only when
Ray cannot start a second node here. The node-loss test runs last: it leaves the cluster without its worker."""

import collections
import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ray.tune import Callback
from ray_cluster import ClusterStartError, LocalCluster, kill_tree
from test_cli import cli
from test_tune import write_space

from recbole_diffusion.tune import run_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = {"sampler": "ddim", "sampling_steps": 2}


@pytest.fixture(scope="module")
def cluster():
    local = LocalCluster(head_cpus=1)
    try:
        local.start()
        local.worker = local.add_node("worker", num_cpus=1, num_gpus=2)
    except ClusterStartError as err:
        local.stop()
        print(f"\nskipped: Ray cannot start a two-node cluster here: {err}")
        pytest.skip(f"Ray cannot start a two-node cluster here: {err}")
    try:
        yield local
    finally:
        local.stop()
    assert not local.leftovers(), "processes of the test cluster survived its stop"


def progress(out_dir):
    """trial id -> its reports (progress.csv rows, in order; a restarted trial appends to its file)."""
    reports = {}
    for path in glob.glob(os.path.join(out_dir, "trial_*", "progress.csv")):
        with open(path) as f:
            reports[os.path.basename(os.path.dirname(path))[6:]] = list(csv.DictReader(f))
    return reports


def epoch_reports(rows):
    return [int(r["epoch"]) for r in rows if r["final"] != "True"]


def test_trials_run_on_both_nodes(monkeypatch, capsys, toy_config, cluster, workdir):
    space = write_space(workdir, "learning_rate: {grid: [0.005, 0.01]}\n")
    out_dir = str(workdir / "sweep")
    code, out, err = cli(monkeypatch, capsys, dict(toy_config, **FAST), "--model=DiffuRec", f"--tune={space}",
                         "--num_samples=1", "--epochs=1", "--cpus_per_trial=1", "--gpus_per_trial=0",
                         f"--ray_address={cluster.address}", f"--output_dir={out_dir}")
    assert code == 0, err
    with open(os.path.join(out_dir, "trials.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["completed", "completed"]
    # one CPU per node, one per trial: the two ran side by side, one on each node (Ray's node id and node ip)
    assert len({r["nodes"] for r in rows}) == 2 and all(len(r["nodes"]) == 8 for r in rows)
    reports = progress(out_dir)
    assert {r["node_ip"] for rows in reports.values() for r in rows} == {"127.0.0.2", "127.0.0.3"}
    assert all(r["failures"] == "0" for r in rows)


class MostRunning(Callback):
    """The most trials Ray had started and not yet ended at once (a trial starts once Ray grants its resources)."""

    running, most = set(), 0

    def on_trial_start(self, iteration, trials, trial, **info):
        MostRunning.running.add(trial.trial_id)
        MostRunning.most = max(MostRunning.most, len(MostRunning.running))

    def on_trial_complete(self, iteration, trials, trial, **info):
        MostRunning.running.discard(trial.trial_id)

    on_trial_error = on_trial_complete


def test_fractional_gpus_without_cuda(capfd, toy_config, cluster, workdir):
    """The worker declares 2 GPUs that do not exist: 0.5 GPU per trial runs 4 trials at once on it, each told its
    GPU id by Ray, and each trains on the CPU with a warning (no CUDA here) instead of crashing."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU fallback is not what would run")
    space = write_space(workdir, "hidden_dropout_prob: {grid: [0.1, 0.2, 0.3, 0.4]}\n")
    out_dir = str(workdir / "sweep")
    result = run_sweep("DiffuRec", "toy", space, config_dict=dict(toy_config, epochs=1, **FAST), num_samples=1,
                       cpus_per_trial=0.25, gpus_per_trial=0.5, ray_address=cluster.address, output_dir=out_dir,
                       callbacks=[MostRunning()])
    rows = result["rows"]
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert MostRunning.most == 4
    # Ray's GPU ids: two trials on each of the two logical GPUs; every trial ran on the worker, on the CPU
    assert collections.Counter(r["gpus"] for r in rows) == {"0 (cpu)": 2, "1 (cpu)": 2}
    reports = progress(out_dir)
    assert {r["node_ip"] for rows in reports.values() for r in rows} == {"127.0.0.3"}
    # the warning, from the trials' processes on the driver's console (Ray forwards their stderr)
    printed = "".join(capfd.readouterr())
    assert "Ray gave this trial GPU" in printed and "torch finds no CUDA device there: the trial trains on the CPU" \
        in printed


def driver_command(toy_config, *args):
    overrides = [f"--{k}={v!r}" if isinstance(v, (dict, list)) else f"--{k}={v}" for k, v in toy_config.items()
                 if k != "dataset"]
    return [sys.executable, os.path.join(ROOT, "run_recbole_diffusion.py"), "--dataset=toy", *overrides, *args]


def test_killed_driver_resumes_without_redoing_finished_trials(toy_config, cluster, workdir):
    space = write_space(workdir, "learning_rate: {grid: [0.002, 0.005, 0.01]}\n")
    out_dir = str(workdir / "sweep")
    config = dict(toy_config, epochs=3, stopping_step=10, **FAST)
    args = ["--model=DiffuRec", f"--tune={space}", "--num_samples=1", "--cpus_per_trial=1", "--gpus_per_trial=0",
            f"--ray_address={cluster.address}", f"--output_dir={out_dir}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled")
    with open(workdir / "driver.log", "w") as log:
        driver = subprocess.Popen(driver_command(config, *args), cwd=str(workdir), env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    # two trials run at once (one CPU per node): kill the driver once one has finished and another has not
    deadline = time.time() + 240
    while time.time() < deadline and driver.poll() is None:
        reports = progress(out_dir)
        finished = [t for t, rows in reports.items() if any(r["final"] == "True" for r in rows)]
        if finished and len(reports) > len(finished):
            driver.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL, open(workdir / "driver.log").read()[-3000:]
    before = {t: epoch_reports(rows) for t, rows in progress(out_dir).items()}

    result = run_sweep("DiffuRec", "toy", space, config_dict=config, cpus_per_trial=1, gpus_per_trial=0,
                       ray_address=cluster.address, output_dir=out_dir, resume=True)
    assert [r["status"] for r in result["rows"]] == ["completed"] * 3 and result["unfinished"] == 0
    after = {t: epoch_reports(rows) for t, rows in progress(out_dir).items()}
    redone = {t: len(after[t]) - len(set(after[t])) for t in after}
    finished_before = [t for t in before if len(before[t]) == 3]
    print(f"\nkilled driver: {len(finished_before)} of 3 trials had finished; after --resume, epochs redone per "
          f"trial: {redone}; epoch reports before {before}, after {after}")
    assert finished_before
    for trial in finished_before:
        assert after[trial] == before[trial]  # not one epoch again
    assert all(sorted(set(epochs)) == [0, 1, 2] for epochs in after.values())
    assert sum(redone.values()) <= 2  # at most the epoch each interrupted trial was in when the driver died


class KillWorkerAt(Callback):
    """Fault injection from the driver: when a trial on the node at ``ip`` reports ``epoch``, SIGKILL that whole
    node at once (its ``ray start`` process ``root_pid``, its raylet and its workers, the trial's among them), as a
    machine goes down. Killing the raylet alone left its workers alive for a moment, in which a fast trial could
    report its remaining epochs straight to the driver and end without a failure (seen once in CI). What it did is
    kept on the class: Ray pickles its callbacks with the sweep's state."""

    killed = []

    def __init__(self, ip, root_pid, epoch):
        self.ip, self.root_pid, self.epoch = ip, root_pid, epoch

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not KillWorkerAt.killed and result.get("node_ip") == self.ip and result.get("epoch") == self.epoch \
                and not result.get("final"):
            kill_tree(self.root_pid)
            KillWorkerAt.killed.append(trial.trial_id)


def test_a_lost_node_costs_one_retried_trial(toy_config, cluster, workdir):
    space = write_space(workdir, "learning_rate: {grid: [0.005, 0.01]}\n")
    out_dir = str(workdir / "sweep")
    killer = KillWorkerAt(cluster.worker["ip"], cluster.worker["popen"].pid, epoch=1)
    result = run_sweep("DiffuRec", "toy", space, config_dict=dict(toy_config, epochs=4, stopping_step=10, **FAST),
                       cpus_per_trial=1, gpus_per_trial=0, ray_address=cluster.address, output_dir=out_dir,
                       num_samples=1, max_failures=1, callbacks=[killer])
    (killed,) = KillWorkerAt.killed
    assert not cluster.is_running(cluster.worker)  # the whole node went down
    rows = {r["trial"]: r for r in result["rows"]}
    assert [r["status"] for r in result["rows"]] == ["completed", "completed"]
    lost, other = rows[killed], next(r for t, r in rows.items() if t != killed)
    # the lost trial went on from its last epoch checkpoint on the head node, with its final metrics
    assert lost["failures"] == 1 and other["failures"] == 0
    first, second = lost["nodes"].split(" > ")
    assert first != second and other["nodes"] == second
    assert lost["epochs"] == 4 and lost["best_epoch"] is not None and lost["test ndcg@10"] is not None
    epochs = epoch_reports(progress(out_dir)[killed])
    restarted_at = epochs[[r["iterations_since_restore"] for r in progress(out_dir)[killed]
                           if r["final"] != "True"].index("1", 1)]
    print(f"\nlost node: trial {killed} reported epochs {epochs}; it restarted at epoch {restarted_at}")
    assert restarted_at >= 1 and len(epochs) - len(set(epochs)) <= 1 and sorted(set(epochs)) == [0, 1, 2, 3]
    with open(os.path.join(out_dir, "trials.md")) as f:
        assert f"| 1 | {lost['nodes']}" in f.read().replace("\\", "")
    json.dumps(result["rows"])  # plain values
