"""RecBole's DiffRec through our CLI pipeline on the official DiffRec ML-1M split, with the official setting,
next to the figures the paper and others report (issue 4).

    python benchmarks/diffrec_ml1m.py [--epochs 1000] [--data_path DIR] [--model DiffRec|LDiffRecAuto]
        [--set KEY=VALUE ...] [--tag NAME]

Data: ../shared/datasets/ml-1m-diffrec, the exact train/valid/test files of YiyanXu/DiffRec (ml-1m_clean) as
RecBole benchmark files. Setting: properties/config/<model>-ml-1m-official.yaml (official inference.py values in
RecBole's keys; training as the official main.py: evaluate every 5 epochs, select on valid Recall@20, stop after 3
evaluations without a better one, test the selected model). The test masks train + valid items and the model reads
the train matrix only, as the official code (tst_w_val False). Note the split's time order is train -> test ->
valid (see the dataset README): "test" is the block right after training.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HERE, SHARED_DATA, key_values, write_result  # noqa: E402

# What others report for ML-1M clean with the official split. Each row says where it comes from.
REFERENCE = {
    "DiffRec": [
        ("paper Table 2 (arXiv 2304.04971), as recalled in ../shared/research/models.md sec. 4 [unverified; the "
         "table itself was not retrieved]", 0.176, None),
    ],
    "LDiffRecAuto": [
        ("YiyanXu/DiffRec issue #13: a user's L-DiffRec run, official settings except steps=100 (not an official "
         "figure; quoted in ../shared/datasets/ml-1m-diffrec/README.md)", 0.1730, 0.1085),
    ],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="DiffRec", choices=sorted(REFERENCE))
    parser.add_argument("--dataset", default="ml-1m-diffrec")
    parser.add_argument("--data_path", default=SHARED_DATA)
    parser.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: the config's 1000)")
    parser.add_argument("--config", default=None, help="default: properties/config/<model>-ml-1m-official.yaml")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of the setting (yaml value)")
    parser.add_argument("--tag", default="", help="result file <model>_<dataset>_official[_<tag>].md")
    args = parser.parse_args()

    from recbole_diffusion.quick_start import run_recbole_diffusion

    config_file = args.config or os.path.join(HERE, "..", "properties", "config", f"{args.model}-ml-1m-official.yaml")
    overrides = {"data_path": args.data_path, "state": "INFO", "show_progress": False}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    overrides.update(key_values(args.set))
    if args.model == "LDiffRecAuto":
        overrides["item_emb_file"] = os.path.join(args.data_path, args.dataset, "item_emb.npy")
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config reads --key=value from argv: ours are not config keys
    start = time.perf_counter()
    result = run_recbole_diffusion(args.model, args.dataset, config_file_list=[os.path.abspath(config_file)],
                                   config_dict=overrides, saved=True)
    sys.argv = argv
    minutes = (time.perf_counter() - start) / 60
    valid, test = result["best_valid_result"], result["test_result"]

    with open(config_file) as f:
        setting = [line.rstrip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    lines = [
        f"{args.model} on {args.dataset} ({args.data_path}); setting {os.path.relpath(config_file, HERE + '/..')}"
        f"{'' if args.epochs is None else f', epochs capped at {args.epochs}'}; {minutes:.1f} min in all.", "",
        "| | Recall@20 | NDCG@20 | Recall@10 | NDCG@10 |", "|---|---:|---:|---:|---:|",
        f"| ours, valid (selected epoch) | {valid['recall@20']:.4f} | {valid['ndcg@20']:.4f} | "
        f"{valid['recall@10']:.4f} | {valid['ndcg@10']:.4f} |",
        f"| ours, test | {test['recall@20']:.4f} | {test['ndcg@20']:.4f} | {test['recall@10']:.4f} | "
        f"{test['ndcg@10']:.4f} |",
    ]
    for source, recall, ndcg in REFERENCE[args.model]:
        cell = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| reference, test: {source} | {cell(recall)} | {cell(ndcg)} | | |")
    lines += ["", "Setting used (the named config, then these overrides: "
              f"{', '.join(f'{k}={v}' for k, v in overrides.items())}):", "", "```", *setting, "```"]
    write_result(f"{args.model.lower()}_{args.dataset}_official", lines, args.tag)


if __name__ == "__main__":
    main()
