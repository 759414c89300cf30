"""SASRec and DiffuRec on Amazon Beauty, with and without DiffuASR augmentation (issue 5).

    python benchmarks/diffuasr_beauty.py [--epochs 20] [--hidden_size 64] [--max_len 50] [--data_path DIR]
        [--models SASRec,DiffuRec] [--short_quantile 0.2] [--work_dir saved/diffuasr_benchmark]
        [--aug KEY=VALUE ...] [--set KEY=VALUE ...] [--tag NAME]

The generator is trained once with ``properties/model/DiffuASR.yaml`` (``--aug aug_epochs=500`` overrides a key)
and its augmented dataset is shared by every model. One budget: each model trains ``--epochs`` epochs (no early
stopping; the last epoch's model is tested) on the original data and on the augmented data, with the same
settings and seed; hidden size and history length are common to all (``--set KEY=VALUE`` sets any other key of
every model). Test: leave-one-out, full ranking over all items, RecBole's evaluator; generated items are only
training context: the test targets and histories are the original data's (``--aug aug_eval_histories=augmented``
puts them before the test histories too, as the official code does).

Reported: NDCG@10 and Hit@10 for all test users and, on its own, for the short-sequence (long-tail) users, whom
we define as the bottom ``--short_quantile`` (20%) of users by sequence length, the interactions of the user in
the dataset; users tied at the cut-off length are all in (the paper's own threshold is not used; the share of
users it gives is printed). The gain is the relative change from the original to the augmented data.

The original dataset is linked, not copied, into ``--work_dir``, and the augmented folder is written next to the
link, so nothing is written into the shared data folder.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SHARED_DATA, key_values, timed_run, write_result  # noqa: E402

from recbole.data.dataloader import FullSortEvalDataLoader  # noqa: E402
from recbole.utils import init_logger  # noqa: E402

from recbole_diffusion.augmentation.pipeline import augment_dataset, augmentation_config  # noqa: E402

BASELINES = ("SASRec", "BERT4Rec")


def short_users(augmentation, quantile):
    """Tokens of the users whose sequence length is at most the ``quantile`` of all users' lengths; the cut-off."""
    source = augmentation.source
    real = np.flatnonzero(source.length > 0)
    cutoff = int(np.quantile(source.length[real], quantile, method="lower"))
    return {str(t) for t in source.user_tokens[real[source.length[real] <= cutoff]]}, cutoff, len(real)


def users_subset(test_data, user_tokens):
    """A test loader over the rows of ``test_data`` whose user is in ``user_tokens``, built as RecBole builds one."""
    dataset = test_data._dataset
    uid = dataset.uid_field
    users = dataset.id2token(uid, dataset.inter_feat[uid].numpy())
    keep = np.fromiter((str(u) in user_tokens for u in users), dtype=bool, count=len(users))
    subset = dataset.copy(dataset.inter_feat[np.flatnonzero(keep)])
    return FullSortEvalDataLoader(test_data.config, subset, None, shuffle=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--data_path", default=SHARED_DATA, help="folder that contains <dataset>/")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of every model (one budget)")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--max_len", type=int, default=50, help="MAX_ITEM_LIST_LENGTH of every model")
    parser.add_argument("--models", default="SASRec,DiffuRec")
    parser.add_argument("--short_quantile", type=float, default=0.2)
    parser.add_argument("--work_dir", default=os.path.join("saved", "diffuasr_benchmark"))
    parser.add_argument("--aug", action="append", metavar="KEY=VALUE", help="a DiffuASR key, e.g. aug_epochs=500")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a key of every model, e.g. n_layers=2")
    parser.add_argument("--tag", default="", help="result file benchmarks/results/diffuasr_<dataset>[_<tag>].md")
    args = parser.parse_args()
    command = list(sys.argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from argv: ours are not config keys

    work_dir = os.path.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    link = os.path.join(work_dir, args.dataset)
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.join(args.data_path, args.dataset)), link)
    common = dict(data_path=work_dir, hidden_size=args.hidden_size, MAX_ITEM_LIST_LENGTH=args.max_len,
                  **key_values(args.set))
    models = args.models.split(",")

    config = augmentation_config(models[0], args.dataset, config_dict=dict(common, **key_values(args.aug)))
    init_logger(config)  # the generator's epochs are logged
    start = time.perf_counter()
    augmentation = augment_dataset(config)
    generator_seconds = time.perf_counter() - start
    manifest = augmentation.manifest
    short, cutoff, n_users = short_users(augmentation, args.short_quantile)

    rows, gains = [], []
    for name in models:
        config = dict(common)
        if name in BASELINES:  # RecBole's defaults, one block size (as benchmarks/sequential_beauty.py)
            config.update(inner_size=4 * args.hidden_size, hidden_dropout_prob=0.2, attn_dropout_prob=0.2)
        results = {}
        for label, dataset, extra in (("original", args.dataset, {}),
                                      ("DiffuASR", augmentation.name, augmentation.overrides)):
            run = timed_run(name, dataset, args.epochs, dict(config, **extra), evaluate=False)
            trainer = run["trainer"]
            every = trainer.evaluate(run["test_data"], load_best_model=False)
            few = trainer.evaluate(users_subset(run["test_data"], short), load_best_model=False)
            results[label] = (every, few)
            rows.append(f"| {name} | {label} | {every['ndcg@10']:.4f} | {every['hit@10']:.4f} | "
                        f"{few['ndcg@10']:.4f} | {few['hit@10']:.4f} | {run['sec_per_epoch']:.1f} | "
                        f"{run['train_samples']:,} |")
            print(rows[-1], flush=True)
        cells = []
        for part in (0, 1):
            for metric in ("ndcg@10", "hit@10"):
                before, after = results["original"][part][metric], results["DiffuASR"][part][metric]
                cells.append(f"{100 * (after - before) / before:+.1f}%" if before else "-")
        gains.append(f"| {name} | " + " | ".join(cells) + " |")

    settings = manifest["settings"]
    lines = [
        f"Dataset {args.dataset}; augmented copy `{augmentation.name}`: DiffuASR ({settings['aug_guidance']} "
        f"guidance, scale {settings['aug_guidance_scale']}, M = {settings['aug_num']}, d = "
        f"{settings['aug_hidden_size']}, {settings['aug_sampling_steps']} DDIM steps of T = "
        f"{settings['aug_diffusion_steps']}) generated items before the sequences of {manifest['augmented_users']:,} "
        f"of {manifest['users']:,} users ({settings['aug_users']}); the generator learned from "
        f"{manifest['generator_training_sequences']:,} training sequences for {manifest['generator_epochs']} epochs "
        f"(at most {settings['aug_epochs']})"
        + (" in an earlier run (folder reused)." if augmentation.reused else f" in {generator_seconds:.0f} s."),
        "",
        f"{args.epochs} epochs for every model on both datasets; hidden size {args.hidden_size}, history length "
        f"{args.max_len}, other hyperparameters from each model's yaml (RecBole's for SASRec, dropout 0.2); the "
        "last epoch's model tested; leave-one-out, full ranking over all items. "
        + manifest["note"],
        "",
        f"Short-sequence users: the bottom {100 * args.short_quantile:.0f}% by sequence length, ties included: "
        f"length <= {cutoff}, {len(short):,} of {n_users:,} users ({100 * len(short) / n_users:.1f}%).",
        "",
        "| model | data | NDCG@10 | Hit@10 | NDCG@10 short | Hit@10 short | s/epoch | train samples |",
        "|---|---|---:|---:|---:|---:|---:|---:|", *rows, "",
        "Gain of the augmented data over the original (relative):", "",
        "| model | NDCG@10 all | Hit@10 all | NDCG@10 short | Hit@10 short |", "|---|---:|---:|---:|---:|", *gains,
    ]
    sys.argv = command
    write_result(f"diffuasr_{args.dataset}", lines, args.tag)


if __name__ == "__main__":
    main()
