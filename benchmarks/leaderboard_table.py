"""The README's leaderboard table, from the runs the leaderboard finished (one row per model, mean ± standard
deviation over its finished seeds), so that the README quotes runs.jsonl instead of a copy made by hand:

    python benchmarks/leaderboard_table.py [benchmarks/results/leaderboard_beauty/runs.jsonl]

Prints the table's markdown (the published rows after it) and the "N of M runs finished" count, M from the seeds
benchmarks/leaderboard_beauty.sh runs (3 for SASRec, DiffuRec and DiQDiff, 2 for the rest and the floor).
"""

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from recbole_diffusion.compare import _cell, _mean_std, epoch_time, load_runs  # noqa: E402

RUNS = os.path.join(ROOT, "benchmarks", "results", "leaderboard_beauty", "runs.jsonl")

# Row order and label of each model, and the seeds the leaderboard runs for it.
ROWS = [("SeqPop", "popularity (SeqPop)", 2),
        ("SASRec", "SASRec (RecBole, CE)", 3),
        ("BERT4Rec", "BERT4Rec (RecBole)", 2),
        ("DiffuRec", "DiffuRec", 3),
        ("DiQDiff", "DiQDiff", 3),
        ("DimeRec", "DimeRec (our values: no official code)", 2),
        ("SeqDiffRec", "SeqDiffRec (our values: no official code)", 2),
        ("DreamRec", "DreamRec (paper's MSE; at most 50 epochs)", 2)]
PUBLISHED = ["| *published, DiffuRec paper (TOIS Table 2)* | | | | *0.0475* | *0.0791* | | |",
             "| *published, RecBole SASRec CE (reports)* | | | | *0.0415* | *0.083* | | |",
             "| *published, RecBole BERT4Rec (reports)* | | | | *about 0.021* | *about 0.040* | | |"]
# (column, where the figure is in a run's record); higher is better for each, the best mean is set in bold.
METRICS = [("valid NDCG@10", "valid", "ndcg@10"), ("test NDCG@10", "test", "ndcg@10"),
           ("test Hit@10", "test", "hit@10"), ("test NDCG@5", "test", "ndcg@5")]


def read_runs(path):
    """The finished runs of runs.jsonl by model, each model's sorted by seed (a later record of a seed wins)."""
    by_key = {(run["model"], run["seed"]): run for run in load_runs(path)}
    runs = {}
    for (model, _), run in sorted(by_key.items(), key=lambda item: item[0]):
        runs.setdefault(model, []).append(run)
    return runs


def table(runs):
    """The markdown lines of the table, and (finished, planned) run counts."""
    done = {model: runs[model][:seeds] for model, _, seeds in ROWS if model in runs}
    best = {column: max(statistics.mean(run[split][metric] for run in done[model])
                        for model in done if model != "SeqPop")
            for column, split, metric in METRICS}
    lines = ["| model | seeds | epochs (best) | " + " | ".join(column for column, _, _ in METRICS)
             + " | train s/epoch |",
             "|---|---:|---:|" + "---:|" * len(METRICS) + "---:|"]
    finished = planned = 0
    for model, label, seeds in ROWS:
        planned += seeds
        if model not in done:
            continue
        mine = done[model]
        finished += len(mine)
        cells = [label, str(len(mine)), ", ".join(f"{run['epochs_trained']} ({run['best_epoch']})" for run in mine)]
        for column, split, metric in METRICS:
            values = [run[split][metric] for run in mine]
            cell = _cell("{:.4f}", *_mean_std(values))
            if model != "SeqPop" and round(statistics.mean(values), 4) == round(best[column], 4):
                cell = f"**{cell}**"
            cells.append(cell)
        cells.append(f"{statistics.mean(epoch_time(run) for run in mine):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + PUBLISHED, finished, planned


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", default=RUNS, help="the leaderboard's runs.jsonl")
    args = parser.parse_args()
    lines, finished, planned = table(read_runs(args.runs))
    print(f"{finished} of {planned} runs finished\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
