"""The general diffusion family next to RecBole's BPR and LightGCN on ML-1M, one budget (issue 4).

    python benchmarks/general_ml1m.py [--epochs 20] [--data_path DIR] [--models BPR,LightGCN,...] [--tag NAME]

Data: the official DiffRec ML-1M split (../shared/datasets/ml-1m-diffrec: its train/valid/test files, RecBole's
full ranking with train items masked at validation and train + valid items at test). T-DiffRec weights each user's
training interactions by time order, and these files have no timestamp; their rows are in each user's time order
(dataset README), so the script writes a copy with timestamp = position in the user's rows of its file, under
--work_dir, and every model reads that copy.

Budget: every model trains --epochs epochs (no early stopping) and its last epoch is tested. The pretrained
backbone of L-DiffRec and DDRM is LightGCN trained --epochs epochs too (RecBole's defaults otherwise; one run,
cached and shared by both); its time is printed apart. Settings: DiffRec and T-DiffRec the official DiffRec ML-1M
setting (properties/config/DiffRec-ml-1m-official.yaml; T-DiffRec adds time-aware with w_min 0.1, w_max 1.0, the
official defaults), L-DiffRec the official L-DiffRec ML-1M setting with its own clustering
(LDiffRecAuto-ml-1m-official.yaml without item_emb_file), DDRM its yaml (the official ML-1M grid), BPR and LightGCN
RecBole's defaults. Printed: Recall@20, NDCG@20 (and @10), seconds per training epoch, inference ms per user.
"""

import argparse
import os
import sys
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HERE, SHARED_DATA, timed_run, write_result  # noqa: E402

MODELS = ["BPR", "LightGCN", "DiffRec", "T-DiffRec", "LDiffRecAuto", "DDRM"]
NAMED_CONFIG = {"DiffRec": "DiffRec-ml-1m-official.yaml", "T-DiffRec": "DiffRec-ml-1m-official.yaml",
                "LDiffRecAuto": "LDiffRecAuto-ml-1m-official.yaml"}
# The budget, the data and the reported metrics are the script's, not the named config's.
NOT_FROM_CONFIG = {"data_path", "item_emb_file", "epochs", "eval_step", "stopping_step", "metrics", "topk",
                   "valid_metric"}


def write_timed_copy(source, target, dataset):
    """Copy ``dataset``'s train/valid/test files with a timestamp column: the row's position among its user's
    rows in that file (1, 2, ...). Returns the parent folder of the copy."""
    folder = os.path.join(target, dataset)
    os.makedirs(folder, exist_ok=True)
    for split in ("train", "valid", "test"):
        name = f"{dataset}.{split}.inter"
        out = os.path.join(folder, name)
        if os.path.isfile(out):
            continue
        seen = {}
        with open(os.path.join(source, dataset, name)) as f, open(out + ".tmp", "w") as g:
            g.write(f.readline().rstrip("\n") + "\ttimestamp:float\n")
            for line in f:
                user = line.split("\t", 1)[0]
                seen[user] = seen.get(user, 0) + 1
                g.write(f"{line.rstrip()}\t{seen[user]}\n")
        os.replace(out + ".tmp", out)
    return target


def model_settings(name):
    """(RecBole model name, config_dict) of a benchmark row."""
    settings = {}
    if name in NAMED_CONFIG:
        with open(os.path.join(HERE, "..", "properties", "config", NAMED_CONFIG[name])) as f:
            settings = {k: v for k, v in yaml.safe_load(f).items() if k not in NOT_FROM_CONFIG}
    if name == "T-DiffRec":
        settings.update({"time-aware": True, "w_min": 0.1, "w_max": 1.0})
    return ("DiffRec" if name == "T-DiffRec" else name), settings


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m-diffrec")
    parser.add_argument("--data_path", default=SHARED_DATA)
    parser.add_argument("--work_dir", default=os.path.join("saved", "benchmark_data"),
                        help="where the copy with timestamps goes (default saved/benchmark_data)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--tag", default="", help="result file benchmarks/results/general_<dataset>[_<tag>].md")
    args = parser.parse_args()

    from recbole_diffusion import pretrain

    argv = list(sys.argv)  # timed_run empties it (RecBole's Config would read it); write_result prints it
    data_path = write_timed_copy(args.data_path, args.work_dir, args.dataset)
    pretraining = []
    train_backbone = pretrain.train_backbone

    def timed_backbone(config):
        start = time.perf_counter()
        tables = train_backbone(config)
        pretraining.append((config["model"], time.perf_counter() - start))
        return tables

    pretrain.train_backbone = timed_backbone

    common = {
        "data_path": data_path,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "metrics": ["Recall", "NDCG"],
        "topk": [10, 20],
        "valid_metric": "NDCG@20",
        "eval_batch_size": 400 * 2811,  # 400 users of ML-1M per full-ranking batch (speed only)
        "backbone": "LightGCN",
        "backbone_config": {"epochs": args.epochs, "eval_step": args.epochs, "stopping_step": args.epochs},
    }
    rows = []
    for name in args.models.split(","):
        model, settings = model_settings(name)
        run = timed_run(model, args.dataset, args.epochs, {**common, **settings})
        test = run["test"]
        rows.append(f"| {name} | {test['recall@20']:.4f} | {test['ndcg@20']:.4f} | {test['recall@10']:.4f} | "
                    f"{test['ndcg@10']:.4f} | {run['sec_per_epoch']:.2f} | {run['infer_ms_per_user']:.3f} | "
                    f"{run['params']:,} |")
        print(rows[-1], flush=True)

    backbone = (", ".join(f"{m} {s:.0f} s ({args.epochs} epochs, cache miss)" for m, s in pretraining)
                or "found in the cache (no pretraining in this run)")
    lines = [
        f"Dataset {args.dataset} (the official DiffRec ML-1M clean split, from {args.data_path}; copy with per-user "
        f"position timestamps in {data_path}). {args.epochs} epochs for every model, last epoch tested; full "
        "ranking, train + valid items masked at test.", "",
        "| model | Recall@20 | NDCG@20 | Recall@10 | NDCG@10 | s/epoch | infer ms/user | params |",
        "|---|---:|---:|---:|---:|---:|---:|---:|", *rows, "",
        f"Backbone pretraining for LDiffRecAuto and DDRM (LightGCN, shared cache): {backbone}. Not in their s/epoch.",
        "Settings: DiffRec/T-DiffRec properties/config/DiffRec-ml-1m-official.yaml (T-DiffRec: time-aware, w_min 0.1, "
        "w_max 1.0); LDiffRecAuto properties/config/LDiffRecAuto-ml-1m-official.yaml without item_emb_file "
        "(clusters from the pretrained LightGCN); DDRM properties/model/DDRM.yaml; BPR, LightGCN RecBole's defaults.",
    ]
    sys.argv = argv
    write_result(f"general_{args.dataset}", lines, args.tag)


if __name__ == "__main__":
    main()
