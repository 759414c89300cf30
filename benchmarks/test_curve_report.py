"""Does the selection rule, rather than training, separate a test figure from another? Reads the runs of a
``--compare --test_curve=True`` folder (finished ones from runs.jsonl, unfinished ones from progress/) and prints,
per run, the test NDCG@10 and Hit@10 of the epoch each rule would keep:

* ours (RecBole's): the best validation NDCG@10, the later epoch on a tie;
* the official DiffuRec rule (WHUIR/DiffuRec src/trainer.py): a new best model whenever any of the six validation
  metrics (Hit and NDCG at 5, 10 and 20) beats its best so far, applied to the same validated epochs (the official
  code validates every 20 epochs and stops after 5 validations without any improvement; ours validates every epoch
  and stops on NDCG@10 alone, so the official rule here picks among our epochs);
* the oracle: the best test NDCG@10 over every validated epoch (no rule can do better with these weights).

A run also in the leaderboard (same settings) is checked against it: the same training must give the same test.

    python benchmarks/test_curve_report.py [FOLDER]   # default benchmarks/results/diffurec_gap_beauty/test_curve

Writes benchmarks/results/test_curve_<folder name>.md (of the folder above one named test_curve).
"""

import glob
import os
import sys

from common import HERE, write_result

from recbole_diffusion.compare import load_runs as finished_runs
from recbole_diffusion.trainer import load_checkpoint

VALID_METRICS = ("hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20")
LEADERBOARD = os.path.join(HERE, "results", "leaderboard_beauty", "runs.jsonl")


def ours(curve, metric="ndcg@10"):
    """RecBole's selection: the highest validation ``metric``, the later epoch on a tie (its early_stopping keeps
    a new best when ``value >= best``)."""
    return max(curve, key=lambda e: (e["valid"][metric], e["epoch"]))


def official(curve):
    """The official DiffuRec selection: the last epoch at which any validation metric set a new best."""
    best, chosen = {m: 0.0 for m in VALID_METRICS}, None
    for entry in curve:
        improved = [m for m in VALID_METRICS if entry["valid"][m] > best[m]]
        for m in improved:
            best[m] = entry["valid"][m]
        if improved:
            chosen = entry
    return chosen


def oracle(curve, metric="ndcg@10"):
    return max(curve, key=lambda e: (e["test"][metric], -e["epoch"]))


def load_runs(folder):
    """Runs with a test curve: finished ones from runs.jsonl, unfinished ones from their states in progress/."""
    runs = [dict(run, status="finished") for run in finished_runs(os.path.join(folder, "runs.jsonl"))]
    for state_file in sorted(glob.glob(os.path.join(folder, "progress", "*.pth"))):
        state = load_checkpoint(state_file)
        model, seed, _ = os.path.basename(state_file).rsplit("-", 2)  # progress_path's <model>-seed<seed>-<key>.pth
        if state.get("test_curve"):
            runs.append({"model": model, "seed": int(seed[len("seed"):]), "settings": state["settings"],
                         "test_curve": state["test_curve"],
                         "status": f"in progress (after epoch {state['epoch'] + 1})"})
    return [r for r in runs if r.get("test_curve")]


def main():
    folder = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                             os.path.join(HERE, "results", "diffurec_gap_beauty", "test_curve"))
    runs = load_runs(folder)
    # the same run (model, seed, settings) in the leaderboard: training must match it exactly on the same kind of CPU
    leaderboard = {(r["model"], r["seed"], r["settings"]): r for r in finished_runs(LEADERBOARD)}
    if not runs:
        sys.exit(f"No run with a test curve in {folder}: run --compare with --test_curve=True there first.")
    lines = [f"Runs of `{os.path.relpath(folder, os.path.dirname(HERE))}` (`--test_curve=True`): the model was tested "
             "after every validation; each rule below picks one validated epoch, and the table gives that epoch's "
             "test metrics. The leaderboard column is the same run's figure in benchmarks/results/leaderboard_beauty "
             "(same settings: training must match it exactly on the same kind of CPU).", "",
             "| model | seed | run | validated epochs | ours (best valid NDCG@10): epoch, test NDCG@10 / Hit@10 | "
             "official rule (any of 6 valid metrics): epoch, test NDCG@10 / Hit@10 | oracle (best test NDCG@10): "
             "epoch, NDCG@10 / Hit@10 | leaderboard test NDCG@10 |",
             "|---|---:|---|---:|---|---|---|---:|"]

    def cell(entry):
        return f"{entry['epoch']}: {entry['test']['ndcg@10']:.4f} / {entry['test']['hit@10']:.4f}"

    for run in runs:
        curve = run["test_curve"]
        board = leaderboard.get((run["model"], run["seed"], run["settings"]))
        board_cell = f"{board['test']['ndcg@10']:.4f} (epoch {board['best_epoch']})" if board else "-"
        lines.append(f"| {run['model']} | {run['seed']} | {run['status']} | {len(curve)} | {cell(ours(curve))} | "
                     f"{cell(official(curve))} | {cell(oracle(curve))} | {board_cell} |")
    lines += ["", "Per validated epoch, validation and test NDCG@10:", ""]
    epochs = sorted({e["epoch"] for run in runs for e in run["test_curve"]})
    lines.append("| epoch | " + " | ".join(f"{r['model']} {r['seed']} valid | test" for r in runs) + " |")
    lines.append("|---:|" + "---:|---:|" * len(runs))
    for epoch in epochs:
        cells = []
        for run in runs:
            entry = next((e for e in run["test_curve"] if e["epoch"] == epoch), None)
            cells += [f"{entry['valid']['ndcg@10']:.4f}", f"{entry['test']['ndcg@10']:.4f}"] if entry else ["", ""]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    name = os.path.basename(folder)  # .../diffurec_gap_beauty/test_curve -> test_curve_diffurec_gap_beauty.md
    write_result("test_curve", lines, tag=os.path.basename(os.path.dirname(folder)) if name == "test_curve" else name)


if __name__ == "__main__":
    main()
