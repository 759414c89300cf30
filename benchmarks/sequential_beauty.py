"""Every sequential model of the package next to RecBole's SASRec and BERT4Rec on Amazon Beauty (issue 3).

    python benchmarks/sequential_beauty.py [--epochs 2] [--hidden_size 64] [--data_path DIR]

One equal budget: every model trains the same number of epochs with its own yaml defaults except one common
hidden size; the last epoch's model is tested (leave-one-out, full ranking over all 12,101 items). Printed:
  * NDCG@10, Hit@10, seconds per epoch and inference ms per user at each model's default step count;
  * each diffusion model's default against its full reverse chain (the target: default costs <= 1% relative
    NDCG@10, and inference <= 10x SASRec's ms per user);
  * DreamRec's steps-versus-quality table (DDIM at several step counts and the full 500-step ancestral chain).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SHARED_DATA, evaluate_timed, timed_run, write_result  # noqa: E402

DIFFUSION = ["DiffuRec", "DreamRec", "SeqDiffRec", "DimeRec", "DiQDiff"]
BASELINES = ["SASRec", "BERT4Rec"]
DREAMREC_STEPS = [1, 2, 5, 10, 20, 50, 100]


def evaluate_with(run, sampler, steps):
    """Test ``run``'s trained model with another reverse chain; restores the model's own setting after."""
    model = run["trainer"].model
    saved = model.sampler, model.sampling_steps
    model.sampler, model.sampling_steps = sampler, steps
    torch.manual_seed(0)
    try:
        return evaluate_timed(run["trainer"], run["test_data"])
    finally:
        model.sampler, model.sampling_steps = saved


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--data_path", default=SHARED_DATA)
    parser.add_argument("--models", default=",".join(BASELINES + DIFFUSION))
    args = parser.parse_args()

    common = {"data_path": args.data_path, "hidden_size": args.hidden_size}
    rows, chain_rows, dreamrec_rows, runs = [], [], [], {}
    for name in args.models.split(","):
        config = dict(common)
        if name in BASELINES:  # RecBole's defaults, one block size for both baselines
            config.update(inner_size=4 * args.hidden_size, hidden_dropout_prob=0.2, attn_dropout_prob=0.2)
        run = timed_run(name, args.dataset, args.epochs, config)
        runs[name] = run
        model = run["trainer"].model
        steps = f"{model.sampler} {model.sampling_steps or model.diffusion_steps}" if name in DIFFUSION else "-"
        rows.append(f"| {name} | {steps} | {run['test']['ndcg@10']:.4f} | {run['test']['hit@10']:.4f} | "
                    f"{run['sec_per_epoch']:.1f} | {run['infer_ms_per_user']:.3f} | {run['params']:,} |")
        print(rows[-1], flush=True)
        if name in DIFFUSION:
            full = evaluate_with(run, "ancestral", None)
            run["full"] = full
            if name == "DreamRec":
                for n in DREAMREC_STEPS:
                    ev = evaluate_with(run, "ddim", n)
                    dreamrec_rows.append(f"| DDIM {n} | {ev['test']['ndcg@10']:.4f} | {ev['test']['hit@10']:.4f} | "
                                         f"{ev['infer_ms_per_user']:.3f} |")
                dreamrec_rows.append(f"| ancestral {model.diffusion_steps} (paper) | {full['test']['ndcg@10']:.4f} | "
                                     f"{full['test']['hit@10']:.4f} | {full['infer_ms_per_user']:.3f} |")

    sas_ms = runs["SASRec"]["infer_ms_per_user"] if "SASRec" in runs else float("nan")
    for name in DIFFUSION:
        if name not in runs:
            continue
        run, full = runs[name], runs[name]["full"]
        ours, paper = run["test"]["ndcg@10"], full["test"]["ndcg@10"]
        rel = (ours - paper) / paper if paper else float("nan")
        ratio = run["infer_ms_per_user"] / sas_ms
        chain_rows.append(
            f"| {name} | {ours:.4f} | {paper:.4f} | {100 * rel:+.2f}% | {'met' if rel >= -0.01 else 'MISSED'} | "
            f"{run['infer_ms_per_user']:.3f} | {full['infer_ms_per_user']:.3f} | {ratio:.1f}x | "
            f"{'met' if ratio <= 10 else 'MISSED'} |")

    lines = [
        f"Dataset {args.dataset}; {args.epochs} epochs for every model; hidden size {args.hidden_size} for all, "
        "other hyperparameters from each model's yaml (RecBole's for SASRec/BERT4Rec, dropout 0.2); the last "
        "epoch's model tested; leave-one-out, full ranking over all items, no history masking.", "",
        "| model | reverse chain (default) | NDCG@10 | Hit@10 | s/epoch | infer ms/user | params |",
        "|---|---|---:|---:|---:|---:|---:|", *rows, "",
        "Default chain against the full chain, and inference against SASRec "
        f"({sas_ms:.3f} ms/user). Targets: default costs at most 1% relative NDCG@10; at most 10x SASRec's ms/user.",
        "", "| model | NDCG@10 default | NDCG@10 full chain | relative | <= 1% cost | ms/user default | "
        "ms/user full | vs SASRec | <= 10x |", "|---|---:|---:|---:|---|---:|---:|---:|---|", *chain_rows,
    ]
    if dreamrec_rows:
        lines += ["", "DreamRec, the same trained model, steps against quality:", "",
                  "| reverse chain | NDCG@10 | Hit@10 | infer ms/user |", "|---|---:|---:|---:|", *dreamrec_rows]
    write_result(f"sequential_{args.dataset}", lines)


if __name__ == "__main__":
    main()
