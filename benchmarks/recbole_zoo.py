"""Parity over RecBole 1.2.1's model zoo (issue 17): every general and sequential model class RecBole ships, with
its own default settings and tiny sizes, through RecBole's ``objective_function`` and through ours, on ml-100k.

    python benchmarks/recbole_zoo.py [--models SASRec,BPR,...] [--dataset ml-100k] [--epochs 1] [--restart]

Both sides get the same config_dict: the model, 1 epoch, tiny sizes, one seed with reproducibility on, the same
metrics (Recall, NDCG at 10; selection on NDCG@10) and, for sequential models, the negative sampling RecBole
requires for the loss (none with CE, uniform with BPR; RecBole refuses CE with negatives). Our side runs with
``length_buckets: 0`` (RecBole's forward path: buckets are exact in evaluation, but change training's dropout
draws; tests/test_bucketing.py covers them). A model that runs under
RecBole must run under ours; where both are deterministic, the metrics must agree. Results:
benchmarks/results/recbole_zoo.md, rewritten after each model; a rerun resumes it (models already in it are kept).
"""

import argparse
import inspect
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_result  # noqa: E402

TINY = {"embedding_size": 16, "hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 2,
        "MAX_ITEM_LIST_LENGTH": 20, "train_batch_size": 1024, "eval_batch_size": 4096, "epochs": 1,
        "metrics": ["Recall", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "state": "ERROR",
        "show_progress": False, "use_gpu": False, "seed": 2020, "reproducibility": True}
# Models whose data needs more than ml-100k's interactions (features or a knowledge graph): RecBole's own
# example configs give them ml-100k's item features, which this comparison does not set up.
NEEDS_MORE = {"FDSA": "item features", "GRU4RecF": "item features", "SASRecF": "item features",
              "GRU4RecKG": "knowledge graph", "KSR": "knowledge graph", "DIN": "context features",
              "DIEN": "context features", "S3Rec": "item attributes and pretraining"}
# Differences measured and explained (each reproduced by setting the other side's value on ours).
KNOWN_DIFFERENCES = {
    "RepeatNet": "RecBole draws one uniform negative per training row (RepeatNet is POINTWISE, so its default "
                 "train_neg_sample_args applies), which RepeatNet's loss never reads; ours draws none (negatives "
                 "follow the loss). The draws shift the random stream, hence dropout; ours with "
                 "train_neg_sample_args uniform gives RecBole's 0.0215 exactly.",
}


def zoo():
    from recbole.model import general_recommender, sequential_recommender
    from recbole.model.abstract_recommender import AbstractRecommender

    names = []
    for module in (general_recommender, sequential_recommender):
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, AbstractRecommender) and obj.__module__.startswith(
                    module.__name__):
                names.append((module.__name__.rsplit(".", 1)[1].split("_")[0], name))
    return sorted(set(names))


def settings(kind, model, dataset, epochs):
    config = dict(TINY, model=model, dataset=dataset, epochs=epochs)
    if kind == "sequential":
        from recbole.utils import get_model

        cls = get_model(model)
        loss = getattr(cls, "input_type", None)
        if loss is None:  # CE by default in RecBole's yaml for these; BPR needs negatives
            import yaml
            from recbole.config import configurator

            path = os.path.join(os.path.dirname(configurator.__file__), "..", "properties", "model", f"{model}.yaml")
            loss_type = (yaml.safe_load(open(path)) or {}).get("loss_type", "CE") if os.path.isfile(path) else "CE"
            if loss_type == "CE":
                config["train_neg_sample_args"] = None
    return config


def run(side, config):
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config reads --key=value from argv: ours are not keys
    try:
        return _run(side, config)
    finally:
        sys.argv = argv


def _run(side, config):
    if side == "recbole":
        from recbole.quick_start import objective_function
    else:
        from recbole_diffusion import objective_function

        # RecBole's own forward path for SASRec/GRU4Rec: length buckets change dropout draws, hence training
        config = dict(config, length_buckets=0)
    start = time.perf_counter()
    result = objective_function(config_dict=dict(config), saved=False)
    return dict(result["test_result"]), time.perf_counter() - start


def _rows_done(args):
    """Rows of models already in benchmarks/results/recbole_zoo.md from an earlier run with the same settings."""
    from common import HERE

    path = os.path.join(HERE, "results", "recbole_zoo.md")
    if not os.path.isfile(path):
        return {}
    text = open(path, encoding="utf-8").read()
    if f"Dataset {args.dataset}, {args.epochs} epoch(s)" not in text:
        return {}
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| type")]
    return {row.split("|")[2].strip(): row for row in rows}


def _count(counts, row):
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    recbole, ours, agree = cells[2], cells[3], cells[6]
    if recbole == "skipped":
        counts["skipped"] += 1
    elif recbole == "pass" and ours == "pass":
        counts["both"] += 1
        counts["differ"] += agree != "yes"
    elif recbole == "pass":
        counts["recbole_only"] += 1
    elif ours != "pass":
        counts["neither"] += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--restart", action="store_true", help="run every model again (default: resume the table)")
    args = parser.parse_args()
    chosen = set(args.models.split(",")) if args.models else None
    rows = ["| type | model | RecBole | ours | RecBole ndcg@10 | ours ndcg@10 | agree | note |",
            "|---|---|---|---|---:|---:|---|---|"]
    counts = {"both": 0, "recbole_only": 0, "neither": 0, "skipped": 0, "differ": 0}
    done = {} if args.restart else _rows_done(args)
    os.chdir(tempfile.mkdtemp())
    for kind, model in zoo():
        if model in done:  # resumed: a model already in the table is kept, not run again
            rows.append(done[model])
            _count(counts, done[model])
            continue
        if chosen and model not in chosen:
            continue
        if model in NEEDS_MORE:
            rows.append(f"| {kind} | {model} | skipped | skipped | | | | needs {NEEDS_MORE[model]} |")
            counts["skipped"] += 1
            continue
        config = settings(kind, model, args.dataset, args.epochs)
        outcome = {}
        for side in ("recbole", "ours"):
            try:
                outcome[side] = run(side, config)
            except Exception as err:  # noqa: BLE001 - the table records any failure
                outcome[side] = f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
                traceback.print_exc(limit=2)
        rec, ours = outcome["recbole"], outcome["ours"]
        ok_r, ok_o = isinstance(rec, tuple), isinstance(ours, tuple)
        note, agree = "", ""
        if ok_r and ok_o:
            counts["both"] += 1
            same = all(abs(rec[0][k] - ours[0][k]) <= 1e-4 for k in rec[0])
            agree = "yes" if same else "**no**"
            counts["differ"] += 0 if same else 1
            note = "" if same else KNOWN_DIFFERENCES.get(model, "")
        elif ok_r:
            counts["recbole_only"] += 1
            note = f"ours fails: {ours}"
        elif ok_o:
            note = f"RecBole fails: {rec}"
        else:
            counts["neither"] += 1
            note = f"both fail; RecBole: {rec}"
        cell = lambda r: f"{r[0]['ndcg@10']:.4f}" if isinstance(r, tuple) else ""  # noqa: E731
        rows.append(f"| {kind} | {model} | {'pass' if ok_r else 'fail'} | {'pass' if ok_o else 'fail'} | "
                    f"{cell(rec)} | {cell(ours)} | {agree} | {note.replace('|', '/')} |")
        print(rows[-1], flush=True)
        _write(rows, counts, args, partial=True)
    _write(rows, counts, args, partial=False)


def _write(rows, counts, args, partial):
    summary = (f"{counts['both']} models run under both, {counts['differ']} of them with different metrics; "
               f"{counts['recbole_only']} run under RecBole only; {counts['neither']} fail under both; "
               f"{counts['skipped']} skipped (need data ml-100k's interactions lack).")
    covered, total = len(rows) - 2, len(zoo())
    summary = f"{covered} of RecBole's {total} general and sequential models are in the table. " + summary
    if partial:
        summary = "(partial: still running) " + summary
    write_result("recbole_zoo", [f"Dataset {args.dataset}, {args.epochs} epoch(s), tiny sizes, one seed; the same "
                                 "config_dict on both sides (see the script's docstring).", "", summary, "", *rows],
                 quiet=partial)


if __name__ == "__main__":
    main()
