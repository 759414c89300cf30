"""Convergence of the sequential diffusion models at their defaults, old against new, beside popularity and
SASRec (issue 11).

    python benchmarks/convergence_beauty5k.py [--epochs 20] [--old_epochs 10] [--models DiffuRec,...]
        [--variants old,new] [--extra NAME:KEY=VALUE[,KEY=VALUE] --variants new,NAME]
        [--out benchmarks/results/convergence_beauty5k] [--set key=value ...] [--report_only]

Each (model, variant) trains ``--epochs`` epochs (``--old_epochs`` for the old defaults) on beauty5k at hidden 64, 2 blocks (other keys: the model's
yaml), with no early stopping; after every epoch the full-ranking valid and test metrics are computed. From
the curves the script reports, per run: the epoch at which valid NDCG@10 first beats popularity's, the epoch
at which it first reaches 90% of its best, the best-valid epoch and the test metrics there, and s/epoch.
Variants: ``new`` = the yaml defaults; ``old`` = the defaults before issue 11 (PyTorch's N(0, 1) item table,
``embedding_init_std: 1.0``, with unit noise, ``noise_std: 1.0``). SASRec (RecBole's, hidden 64, 2 blocks,
its other defaults) is trained by the same rules; SeqPop gives the floor.

Every finished run is appended to ``<out>/runs.jsonl`` (resumable: a run already there is not redone);
``<out>/convergence.md`` and ``<out>/curves.png`` are rewritten after each run.
"""

import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HERE, SHARED_DATA, key_values, machine  # noqa: E402

DIFFUSION = ["DiffuRec", "DreamRec", "SeqDiffRec", "DimeRec", "DiQDiff"]
OLD = {"embedding_init_std": 1.0, "noise_std": 1.0}
METRIC = "ndcg@10"


def train_curve(model, variant, epochs, common, say, extra=None):
    """Train epoch by epoch; valid and test metrics after each epoch. Returns the run's record."""
    from recbole.utils import init_logger, init_seed

    from recbole_diffusion.compare import count_parameters, record_epoch_times
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build

    config_dict = dict(common, state="ERROR", show_progress=False, epochs=epochs)
    if variant == "old" and model in DIFFUSION:
        config_dict.update(OLD)
    config_dict.update((extra or {}).get(variant, {}))
    sys.argv = sys.argv[:1]
    config = Config(model=model, dataset="beauty5k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    _, train_data, valid_data, test_data, net, trainer = build(config)
    seconds = record_epoch_times(trainer)
    curve = []
    for epoch in range(epochs if model != "SeqPop" else 1):
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        valid = dict(trainer.evaluate(valid_data, load_best_model=False))
        test = dict(trainer.evaluate(test_data, load_best_model=False))
        curve.append({"epoch": epoch + 1, "loss": float(sum(loss) if isinstance(loss, tuple) else loss),
                      "valid": {k: float(v) for k, v in valid.items()},
                      "test": {k: float(v) for k, v in test.items()}, "seconds": seconds[-1]})
        say(f"{model} {variant} epoch {epoch + 1}: loss {curve[-1]['loss']:.4f} valid {METRIC} "
            f"{valid[METRIC]:.4f} test {test[METRIC]:.4f} ({seconds[-1]:.1f} s)")
    again = dict(trainer.evaluate(valid_data, load_best_model=False))
    return {"model": model, "variant": variant, "epochs": len(curve), "curve": curve,
            "params": count_parameters(net), "repeat_valid_identical": again == {k: v for k, v in valid.items()},
            "settings": {k: config[k] for k in ("hidden_size", "n_layers", "learning_rate", "train_batch_size")
                         if k in config}, "finished": datetime.datetime.now().isoformat(timespec="seconds")}


PATIENCE = (3, 5, 10)


def replay_early_stopping(curve, patience):
    """(epoch at which RecBole's early stopping with ``stopping_step = patience`` would stop or None, index of the
    epoch it keeps)."""
    best, waited = 0, 0
    for i, point in enumerate(curve):
        if i == 0 or point["valid"][METRIC] >= curve[best]["valid"][METRIC]:  # RecBole: a tie is kept too
            best, waited = i, 0
        else:
            waited += 1
            if waited > patience:
                return i + 1, best
    return None, best


def summary(run, floor_valid):
    values = [point["valid"][METRIC] for point in run["curve"]]
    best = replay_early_stopping(run["curve"], len(values))[1]  # RecBole's pick: the last of equal bests
    beats = next((i + 1 for i, v in enumerate(values) if v > floor_valid), None)
    near = next(i + 1 for i, v in enumerate(values) if v >= 0.9 * values[best])
    return {"best_epoch": best + 1, "best_valid": values[best], "beats_pop": beats, "reach90": near,
            "test": run["curve"][best]["test"],
            "sec_per_epoch": sum(p["seconds"] for p in run["curve"]) / len(run["curve"])}


def report(out, runs, command):
    floor = next((r for r in runs if r["model"] == "SeqPop"), None)
    floor_valid = floor["curve"][0]["valid"][METRIC] if floor else float("nan")
    floor_test = floor["curve"][0]["test"] if floor else {}
    lines = ["# Convergence on beauty5k: sequential diffusion models, old defaults against new", "",
             f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} on {machine()}.", f"Command(s): `{command}`", "",
             "beauty5k (5,000 users, all 12,101 Beauty items ranked), leave-one-out, full ranking, hidden 64, "
             "2 blocks, each model's other yaml defaults; no early stopping: valid and test after every epoch. "
             "*old*: `embedding_init_std: 1.0, noise_std: 1.0` (the N(0, 1) item table of the official codes, "
             "unit noise); *new*: the shipped defaults. Test metrics are those of the best-valid epoch.", "",
             "| model | variant | epochs | beats pop (valid) at epoch | 90% of best at epoch | best epoch | "
             "best valid NDCG@10 | test NDCG@10 | test Hit@10 | beats pop test | s/epoch |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    if floor:
        lines.append(f"| SeqPop (floor) | - | - | - | - | - | {floor_valid:.4f} | {floor_test['ndcg@10']:.4f} | "
                     f"{floor_test['hit@10']:.4f} | - | - |")
    for run in runs:
        if run["model"] == "SeqPop":
            continue
        s = summary(run, floor_valid)
        beats_test = "yes" if floor and s["test"]["ndcg@10"] > floor_test["ndcg@10"] else "**no**"
        lines.append(f"| {run['model']} | {run['variant']} | {run['epochs']} | {s['beats_pop'] or 'never'} | "
                     f"{s['reach90']} | {s['best_epoch']} | {s['best_valid']:.4f} | {s['test']['ndcg@10']:.4f} | "
                     f"{s['test']['hit@10']:.4f} | {beats_test} | {s['sec_per_epoch']:.1f} |")
    lines += ["", "Early stopping replayed on each curve (RecBole's rule, utils.early_stopping: a valid NDCG@10 >= the "
              "best is kept as the new best; stop when more than `stopping_step` validations in a row are below it): the epoch it stops at and the test NDCG@10 it keeps. "
              "'-' = still running at the last epoch trained.", "",
              "| model | variant | " + " | ".join(f"patience {p}" for p in PATIENCE) + " |",
              "|---|---|" + "---|" * len(PATIENCE)]
    for run in runs:
        if run["model"] == "SeqPop":
            continue
        cells = []
        for patience in PATIENCE:
            stop, best = replay_early_stopping(run["curve"], patience)
            cells.append(f"{stop or '-'} ({run['curve'][best]['test'][METRIC]:.4f})")
        lines.append(f"| {run['model']} | {run['variant']} | " + " | ".join(cells) + " |")
    lines += ["", "Valid NDCG@10 per epoch:", ""]
    for run in runs:
        if run["model"] != "SeqPop":
            lines.append(f"- {run['model']} {run['variant']}: "
                         + " ".join(f"{p['valid'][METRIC]:.4f}" for p in run["curve"]))
    same = [f"{r['model']} {r['variant']}" for r in runs if not r.get("repeat_valid_identical")]
    lines += ["", "Deterministic validation: a second evaluation of each final model gave identical metrics"
              + (" for every run." if not same else f" except: {', '.join(same)}.")]
    with open(os.path.join(out, "convergence.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(out, runs, floor_valid)
    print("\n".join(lines), flush=True)


def plot(out, runs, floor_valid):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, run in enumerate(r for r in runs if r["model"] != "SeqPop"):
        xs = [p["epoch"] for p in run["curve"]]
        ax.plot(xs, [p["valid"][METRIC] for p in run["curve"]], color=f"C{DIFFUSION.index(run['model'])}"
                if run["model"] in DIFFUSION else "black",
                linestyle={"old": "--", "new": "-"}.get(run["variant"], "-."),
                marker=".", label=f"{run['model']} {run['variant']}")
    ax.axhline(floor_valid, color="grey", linestyle=":", label="popularity (SeqPop)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid NDCG@10")
    ax.set_title("beauty5k, hidden 64, 2 blocks: valid NDCG@10 per epoch (dashed: old defaults, dash-dot: options)")
    ax.legend(fontsize="small", ncol=2)
    fig.savefig(os.path.join(out, "curves.png"), dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--old_epochs", type=int, default=10, help="epochs of the old-default runs (a contrast)")
    parser.add_argument("--models", default=",".join(["SeqPop", "SASRec"] + DIFFUSION))
    parser.add_argument("--variants", default="new,old")
    parser.add_argument("--data_path", default=SHARED_DATA)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "convergence_beauty5k"))
    parser.add_argument("--set", action="append", help="KEY=VALUE for every model (yaml value)")
    parser.add_argument("--extra", action="append",
                        help="NAME:KEY=VALUE[,KEY=VALUE]: one more variant NAME of the yaml defaults with overrides")
    parser.add_argument("--report_only", action="store_true")
    parser.add_argument("--commands", default=None,
                        help="with --report_only: the commands that made runs.jsonl, for the report's header")
    args = parser.parse_args()
    command = args.commands or ("python " + " ".join(sys.argv))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "runs.jsonl")
    extra = {}
    for spec in args.extra or []:
        name, _, pairs = spec.partition(":")
        extra[name] = key_values(pairs.split(","))
    common = dict({"data_path": args.data_path, "hidden_size": 64, "n_layers": 2}, **key_values(args.set))

    def load():
        if not os.path.isfile(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    if not args.report_only:
        for model in args.models.split(","):
            for variant in (args.variants.split(",") if model in DIFFUSION else ["new"]):
                if any(r["model"] == model and r["variant"] == variant for r in load()):
                    continue
                start = time.perf_counter()
                epochs = args.old_epochs if variant == "old" else args.epochs
                record = train_curve(model, variant, epochs, common, lambda m: print(m, flush=True), extra)
                record["overrides"] = extra.get(variant, OLD if variant == "old" else {})
                record["wall_seconds"] = time.perf_counter() - start
                with open(path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                report(args.out, load(), command)
    report(args.out, load(), command)


if __name__ == "__main__":
    main()
