"""A Ray Tune sweep of DiffuRec on CPUs against the same trials run one after another (issue 6).

    python benchmarks/tune_diffurec.py [--epochs 2] [--dataset ml-100k] [--data_path DIR] [--cpus 2]

The 4 trials are a grid, hidden_size {16, 32} x learning_rate {1e-3, 5e-3}, so both runs train exactly the same
configurations on tiny budgets (1 block, sequences of 20, DDIM with 4 steps):
  * sweep: ``tune.run_sweep`` with ASHA, a local Ray of --cpus CPUs, 1 CPU per trial (so --cpus trials at a time);
  * one after another: ``objective_function`` on each configuration in this process, with --cpus torch threads
    (what one would run without Ray: every core for one trial at a time).
Printed and kept in benchmarks/results/tune_diffurec.md: both wall times (Ray's start-up apart), their ratio, the
epochs each sweep trial ran (ASHA may stop some early: that is part of what the sweep saves), and the best
configuration each run finds.
"""

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_result  # noqa: E402

SPACE = "hidden_size: {grid: [16, 32]}\nlearning_rate: {grid: [1.0e-3, 5.0e-3]}\n"
TINY = {"inner_size": 64, "n_layers": 1, "n_heads": 2, "MAX_ITEM_LIST_LENGTH": 20, "train_batch_size": 256,
        "eval_batch_size": 1024, "sampler": "ddim", "sampling_steps": 4, "stopping_step": 10,
        "state": "ERROR", "show_progress": False, "use_gpu": False, "gpu_id": ""}  # CPU only, even beside a GPU


def one_after_another(configs, base, threads):
    """``objective_function`` on each configuration in turn; returns (seconds, {config: best valid score})."""
    from recbole_diffusion.quick_start import objective_function

    torch.set_num_threads(threads)
    scores = {}
    start = time.perf_counter()
    for config in configs:
        result = objective_function(dict(base, **config))
        scores[tuple(sorted(config.items()))] = result["best_valid_score"]
    return time.perf_counter() - start, scores


def sweep(space_file, base, args, output_dir):
    """The 4-trial sweep with ASHA on a local Ray of ``args.cpus`` CPUs; returns (init s, sweep s, summary)."""
    import ray

    from recbole_diffusion.tune import run_sweep

    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    init_seconds = time.perf_counter() - start
    try:
        start = time.perf_counter()
        summary = run_sweep("DiffuRec", args.dataset, space_file, config_dict=base, num_samples=1,
                            cpus_per_trial=1, gpus_per_trial=0, scheduler="asha", output_dir=output_dir)
        return init_seconds, time.perf_counter() - start, summary
    finally:
        ray.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (ml-100k ships with RecBole)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray, and threads of the sequential run")
    args = parser.parse_args()
    command, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config reads --key=value from argv: ours are not keys

    base = dict(TINY, model="DiffuRec", dataset=args.dataset, epochs=args.epochs)
    if args.data_path:
        base["data_path"] = os.path.abspath(args.data_path)
    configs = [{"hidden_size": h, "learning_rate": lr} for h in (16, 32) for lr in (1e-3, 5e-3)]
    with tempfile.TemporaryDirectory() as scratch:
        base["checkpoint_dir"] = os.path.join(scratch, "saved")
        space_file = os.path.join(scratch, "space.yaml")
        with open(space_file, "w") as f:
            f.write(SPACE)
        sequential_seconds, scores = one_after_another(configs, base, args.cpus)
        init_seconds, sweep_seconds, summary = sweep(space_file, base, args, os.path.join(scratch, "sweep"))
        with open(summary["files"]["trials.md"]) as f:
            trials_table = f.read().strip()

    metric = "ndcg@10"
    best_sequential = dict(max(scores, key=scores.get))
    rows = summary["rows"]
    epochs_run = ", ".join(f"{row['hidden_size']}/{row['learning_rate']:g}: {row['epochs']} ({row['status']})"
                           for row in rows)
    sys.argv = command
    write_result("tune_diffurec", [
        f"DiffuRec on {args.dataset}, 4 trials (hidden_size x learning_rate grid), {args.epochs} epochs at most, "
        f"tiny sizes {TINY}.",
        "",
        "| run | wall seconds | best config (valid " + metric + ") |",
        "|---|---|---|",
        f"| one after another (objective_function, {args.cpus} threads) | {sequential_seconds:.1f} | "
        f"{best_sequential} ({max(scores.values()):.4f}) |",
        f"| Ray Tune sweep (ASHA, {args.cpus} concurrent trials x 1 CPU) | {sweep_seconds:.1f} | "
        f"{summary['best_config']} ({rows[0]['valid ' + metric] or float('nan'):.4f}) |",
        "",
        f"**Ratio, one after another / sweep: {sequential_seconds / sweep_seconds:.2f}x** "
        f"(Ray's start-up, {init_seconds:.1f} s, is not in the sweep's time).",
        f"Epochs each sweep trial ran (hidden/lr: epochs): {epochs_run}.",
        "",
        "Sweep trials:",
        "",
        trials_table,
    ])


if __name__ == "__main__":
    main()
