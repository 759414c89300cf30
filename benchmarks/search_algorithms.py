"""Random search against TPE (Optuna's, through Ray Tune) at a fixed budget of trials and epochs (issue 16).

    python benchmarks/search_algorithms.py [--model SASRec] [--dataset ml-100k] [--trials 8] [--epochs 1]
                                           [--repetitions 3] [--algs random,optuna] [--cpus 2]

Each repetition r runs one sweep per search algorithm over SPACE (SASRec's shipped space, properties/hyper/SASRec.yaml,
with at most 2 blocks so that a trial fits this 2-core machine), with the same seed (2020 + r: the searcher's and
the model's) and the same budget: --trials trials of --epochs epochs each, no early stopping, no scheduler, --cpus
trials at a time on a local Ray, one CPU (and one torch thread) per trial. The TPE search draws its first trials at
random (recbole_diffusion.search.startup_trials).

Reported, in benchmarks/results/search_algorithms.md: per sweep the best valid NDCG@10 found, the trial (in the
order the search drew them) that first reached it, the best after half the budget, and the test NDCG@10 of the best
trial; per algorithm the mean over repetitions. Each finished sweep is kept in benchmarks/results/search_algorithms/
(one JSON each), so a rerun skips what is done.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HERE, write_result  # noqa: E402

# small and fast on a CPU: the search space's keys are what the sweep tunes
FIXED = {"hidden_size": 32, "inner_size": 64, "MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 512,
         "eval_batch_size": 1024, "stopping_step": 100, "state": "ERROR", "show_progress": False,
         "use_gpu": False, "gpu_id": ""}
METRIC = "ndcg@10"
SPACE = """learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
hidden_dropout_prob: {choice: [0.1, 0.2, 0.3, 0.5]}
attn_dropout_prob: {choice: [0.1, 0.2, 0.3, 0.5]}
n_layers: {randint: [1, 2]}
"""


def run_one(alg, rep, args, scratch):
    """One sweep; returns its summary (a dict that goes to JSON)."""
    import ray

    from recbole_diffusion.tune import run_sweep

    space_file = os.path.join(scratch, "space.yaml")
    with open(space_file, "w") as f:
        f.write(SPACE)
    config = dict(FIXED, epochs=args.epochs, seed=2020 + rep, checkpoint_dir=os.path.join(scratch, "saved"))
    if args.data_path:
        config["data_path"] = os.path.abspath(args.data_path)
    out_dir = os.path.join(scratch, f"{alg}-{rep}")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        start = time.perf_counter()
        summary = run_sweep(args.model, args.dataset, space_file, config_dict=config, num_samples=args.trials,
                            cpus_per_trial=1, gpus_per_trial=0, output_dir=out_dir, search_alg=alg,
                            max_concurrent_trials=args.cpus)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    # the order the search drew the trials in: Ray numbers them so (..._00000, ..._00001, ...)
    rows = sorted(summary["rows"], key=lambda row: row["trial"])
    scores = [row[f"valid {METRIC}"] if row[f"valid {METRIC}"] is not None else float("nan") for row in rows]
    running, best = [], float("-inf")
    for score in scores:
        best = max(best, score) if score == score else best
        running.append(best)
    best_row = max((row for row in rows if row[f"valid {METRIC}"] is not None), key=lambda row: row[f"valid {METRIC}"])
    return {"alg": alg, "rep": rep, "seed": 2020 + rep, "seconds": seconds, "scores": scores, "running_best": running,
            "best": running[-1], "first_reached_at": running.index(running[-1]) + 1,
            "best_at_half": running[len(running) // 2 - 1], "best_test": best_row[f"test {METRIC}"],
            "best_config": {k: best_row[k] for k in summary["best_config"]},
            "statuses": [row["status"] for row in rows]}


def report(results, args):
    algs = args.algs.split(",")
    lines = [f"{args.model} on {args.dataset}, {args.trials} trials x {args.epochs} epochs per sweep (no early "
             f"stopping, no scheduler), {args.cpus} trials at a time, one CPU thread each; search space "
             f"{' '.join(SPACE.split())}; fixed {FIXED}. Seeds 2020 + repetition, the same for every "
             f"algorithm. Times are wall seconds on a shared 2-core machine with other jobs running: noisy.", "",
             f"| algorithm | repetition | best valid {METRIC} | trial that first reached it | best after "
             f"{args.trials // 2} trials | test {METRIC} of the best | seconds |", "|---|---:|---:|---:|---:|---:|---:|"]
    for alg in algs:
        for result in sorted((r for r in results if r["alg"] == alg), key=lambda r: r["rep"]):
            lines.append(f"| {alg} | {result['rep']} | {result['best']:.4f} | {result['first_reached_at']} of "
                         f"{args.trials} | {result['best_at_half']:.4f} | {result['best_test']:.4f} | "
                         f"{result['seconds']:.0f} |")
    lines += ["", f"| algorithm | sweeps | mean best valid {METRIC} (min-max) | mean trial that first reached it | "
                  f"mean best after {args.trials // 2} trials |", "|---|---:|---:|---:|---:|"]
    for alg in algs:
        done = [r for r in results if r["alg"] == alg]
        if not done:
            continue
        bests = [r["best"] for r in done]
        lines.append(f"| {alg} | {len(done)} | {statistics.mean(bests):.4f} ({min(bests):.4f}-{max(bests):.4f}) | "
                     f"{statistics.mean(r['first_reached_at'] for r in done):.1f} | "
                     f"{statistics.mean(r['best_at_half'] for r in done):.4f} |")
    lines += ["", "Valid " + METRIC + " of each trial in the order drawn:", ""]
    for result in sorted(results, key=lambda r: (r["alg"], r["rep"])):
        lines.append(f"- {result['alg']} {result['rep']}: " + ", ".join(f"{s:.4f}" for s in result["scores"]))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (ml-100k ships with RecBole)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--algs", default="random,optuna")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    command, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config reads --key=value from argv: ours are not keys

    keep = os.path.join(HERE, "results", "search_algorithms")
    os.makedirs(keep, exist_ok=True)
    tag = f"{args.model}-{args.dataset}-{args.trials}x{args.epochs}"
    results = []
    for rep in range(args.repetitions):
        for alg in args.algs.split(","):  # interleaved: the machine's load drifts alike for both
            path = os.path.join(keep, f"{tag}-{alg}-{rep}.json")
            if os.path.exists(path):
                with open(path) as f:
                    results.append(json.load(f))
                continue
            with tempfile.TemporaryDirectory(prefix="search_bench") as scratch:
                result = run_one(alg, rep, args, scratch)
            with open(path, "w") as f:
                json.dump(result, f, indent=1)
            results.append(result)
            sys.argv = command
            write_result("search_algorithms", report(results, args), quiet=True)
            sys.argv = sys.argv[:1]
            print(f"{alg} {rep}: best {result['best']:.4f} at trial {result['first_reached_at']}, "
                  f"{result['seconds']:.0f} s", flush=True)
    sys.argv = command
    write_result("search_algorithms", report(results, args))


if __name__ == "__main__":
    main()
