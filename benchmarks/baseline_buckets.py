"""RecBole's sequential baselines through RecBole's own path and through our exact length buckets, side by side
(issue 12): training seconds per epoch, full-ranking evaluation seconds, and whether the evaluation results are
identical. Three paths per model: *RecBole as shipped* (every batch padded to MAX_ITEM_LIST_LENGTH, and autograd
anomaly detection on, as RecBole's import of its sine.py leaves it in every RecBole process), *RecBole's forward
path* (padding, anomaly detection off: what ``length_buckets: 0`` gives here) and *ours* (exact length buckets).

    python benchmarks/baseline_buckets.py [--dataset beauty] [--models SASRec,BERT4Rec,GRU4Rec] \
        [--max_batches 30] [--set hidden_size=64 ...]

For each model, both paths start from the same seed, so they hold the same initial weights and see the same
training batches in the same order. Each path then:
1. evaluates the validation split with those initial weights (full ranking, RecBole's evaluator): the two metric
   dicts must be identical, which is the exactness claim for scores (tests/test_bucketing.py checks scores and
   losses on the toy data);
2. trains its first ``max_batches`` batches (0: the whole epoch), timed; seconds per epoch are the mean seconds
   per batch times the batches of an epoch when the epoch is cut short (the batches are drawn from one shuffled
   epoch, so their lengths follow the data's).
The two paths of one model run one after the other, one thread each, so the ratio is measured side by side.
Results: benchmarks/results/baseline_buckets.md.
"""

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SHARED_DATA, key_values, write_result  # noqa: E402


class _Enough(Exception):
    pass


def one_path(model, dataset, shared, buckets, max_batches, settings, anomaly=False):
    from recbole.utils import init_seed

    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build

    config = Config(model=model, dataset=dataset,
                    config_dict=dict(settings, length_buckets=buckets, detect_anomaly=anomaly))
    init_seed(config["seed"], config["reproducibility"])
    _, train_data, valid_data, _, net, trainer = build(config, dataset=copy.deepcopy(shared))
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    start = time.perf_counter()
    valid = trainer.evaluate(valid_data, load_best_model=False)
    eval_seconds = time.perf_counter() - start

    batches = [0]
    loss = net.calculate_loss

    def counted(interaction):
        if max_batches and batches[0] >= max_batches:
            raise _Enough
        batches[0] += 1
        return loss(interaction)

    net.calculate_loss = counted
    start = time.perf_counter()
    try:
        trainer._train_epoch(train_data, 0, show_progress=False)
    except _Enough:
        pass
    seconds = time.perf_counter() - start
    per_epoch = len(train_data)
    return {"valid": dict(valid), "eval_s": eval_seconds, "batches": batches[0], "epoch_batches": per_epoch,
            "sec_per_epoch": seconds / batches[0] * per_epoch, "weights": weights}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--data_path", default=SHARED_DATA)
    parser.add_argument("--models", default="SASRec,BERT4Rec,GRU4Rec")
    parser.add_argument("--buckets", type=int, default=8)
    parser.add_argument("--max_batches", type=int, default=30, help="0: whole epochs")
    parser.add_argument("--set", action="append", help="KEY=VALUE for every model (e.g. hidden_size=128)")
    args = parser.parse_args()
    command = " ".join(sys.argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from argv

    import torch
    from recbole.utils import init_logger

    from recbole_diffusion.config import Config
    from recbole_diffusion.data import create_dataset

    settings = dict({"data_path": args.data_path, "state": "ERROR", "show_progress": False, "threads": 1,
                     "metrics": ["Hit", "NDCG"], "topk": [10, 20], "valid_metric": "NDCG@10"},
                    **key_values(args.set))
    models = args.models.split(",")
    first = Config(model=models[0], dataset=args.dataset, config_dict=settings)
    init_logger(first)
    torch.set_num_threads(1)
    shared = create_dataset(first)

    rows = []
    for model in models:
        shipped = one_path(model, args.dataset, shared, 0, args.max_batches, settings, anomaly=True)
        plain = one_path(model, args.dataset, shared, 0, args.max_batches, settings)
        cut = one_path(model, args.dataset, shared, args.buckets, args.max_batches, settings)
        same_init = all(torch.equal(run["weights"][k], cut["weights"][k]) for run in (shipped, plain)
                        for k in cut["weights"])
        identical = shipped["valid"] == plain["valid"] == cut["valid"]
        rows.append(f"| {model} | {shipped['sec_per_epoch']:.1f} | {plain['sec_per_epoch']:.1f} | "
                    f"{cut['sec_per_epoch']:.1f} | **{shipped['sec_per_epoch'] / cut['sec_per_epoch']:.2f}x** | "
                    f"{plain['sec_per_epoch'] / cut['sec_per_epoch']:.2f}x | {shipped['eval_s']:.1f} | "
                    f"{plain['eval_s']:.1f} | {cut['eval_s']:.1f} | {plain['eval_s'] / cut['eval_s']:.2f}x | "
                    f"{'yes' if identical and same_init else 'NO'} | {cut['batches']} of {cut['epoch_batches']} |")
        print(rows[-1], flush=True)
        if not identical:
            print(f"{model}: {shipped['valid']} / {plain['valid']} / {cut['valid']}", flush=True)

    sys.argv = command.split(" ")
    write_result("baseline_buckets", [
        f"RecBole's sequential baselines on {args.dataset} ({len(shared.inter_feat)} interactions, "
        f"MAX_ITEM_LIST_LENGTH {first['MAX_ITEM_LIST_LENGTH']}), each model's RecBole defaults"
        + (f" with {key_values(args.set)}" if args.set else "") + ", one thread. *shipped*: RecBole as it runs "
        "in its own `run_recbole` (every batch padded to MAX_ITEM_LIST_LENGTH; autograd anomaly detection on, "
        "as RecBole's import of its sine.py leaves it); *padded*: the same forward path with anomaly detection off "
        f"(`length_buckets: 0` here); *ours*: `length_buckets: {args.buckets}`, anomaly detection off (our "
        "defaults). The paths of a model start from the same weights and train the same batches; training "
        "s/epoch = mean s/batch over the batches timed x batches per epoch. *eval*: seconds of one full-ranking "
        "evaluation of the validation split with the initial weights; *identical*: the same initial weights and "
        "exactly the same validation metrics (Hit, NDCG at 10 and 20) on all three paths.",
        "",
        "| model | shipped train s/epoch | padded train s/epoch | ours train s/epoch | ours vs shipped | "
        "ours vs padded | shipped eval s | padded eval s | ours eval s | eval: ours vs padded | identical | "
        "batches timed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
