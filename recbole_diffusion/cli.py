"""The command line: ``run_recbole_diffusion.py --model=DiffuRec --dataset=ml-100k [--key=value ...]``, or
``--compare=DiffuRec,SASRec --seeds=3 ...`` for a side-by-side comparison (see ``recbole_diffusion/compare.py``),
or ``--tune=properties/hyper/DiffuRec.yaml --num_samples=20 ...`` for a Ray Tune sweep (``recbole_diffusion/tune.py``).

Arguments it does not know (``--hidden_size=64``) are read by RecBole's Config from the command line, as in
RecBole's ``run_recbole.py``.
"""

import argparse
import os
import sys

from recbole_diffusion.utils import RecBoleDiffusionError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train and evaluate a recommender (recbole_diffusion's or RecBole's) with RecBole's pipeline.",
        epilog="Any --key=value is a config override, e.g. --epochs=5 --hidden_size=64 --data_path=../shared/datasets",
        allow_abbrev=False,  # else RecBole's --seed=2022 would be read as our --seeds=2022 (a prefix of it)
    )
    parser.add_argument("--model", "-m", type=str, default="DiffuRec", help="model name, e.g. DiffuRec, SASRec")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", type=str, default=None, help="space-separated yaml files")
    parser.add_argument("--nproc", type=int, default=1, help="processes (GPUs) for torch.distributed training")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes over all nodes")
    parser.add_argument("--ip", type=str, default="localhost", help="address of the rank-0 node")
    parser.add_argument("--port", type=str, default="5678", help="port of the rank-0 node")
    parser.add_argument("--group_offset", type=int, default=0, help="rank offset of this node")
    # Comparison flags: read as text and checked by compare.py, so that a bad value is one error line.
    parser.add_argument("--compare", type=str, default=None,
                        help="comma-separated models to train and test side by side instead of --model")
    parser.add_argument("--seeds", type=str, default="3",
                        help="with --compare: seeds per model (default 3), or per model: 2,DiffuRec:3,SASRec:3")
    parser.add_argument("--budget_epochs", type=str, default=None, help="with --compare: epochs for every model")
    parser.add_argument("--model_config", type=str, default=None,
                        help="with --compare: per-model yaml, e.g. DiffuRec:best.yaml,SASRec:sas.yaml")
    parser.add_argument("--output_dir", type=str, default=None,
                        help="with --compare: folder of the report (default compare_<dataset>); "
                             "with --tune: folder of the sweep (default saved/tune/<model>-<dataset>)")
    parser.add_argument("--report_only", type=str, default="False",
                        help="with --compare: train nothing, write the table of the runs in --output_dir")
    parser.add_argument("--popularity_floor", type=str, default="True",
                        help="with --compare: False leaves out the popularity row (SeqPop/Pop) added by default")
    parser.add_argument("--keep_checkpoints", type=str, default="False",
                        help="with --compare: True keeps each run's best model under <output_dir>/checkpoints")
    parser.add_argument("--fork_from", type=str, default=None,
                        help="with --compare and --lr_plateau_decays: the checkpoints folder of the same comparison "
                             "without decay (run with --keep_checkpoints=True); each run starts where that one "
                             "stopped at its plateau")
    parser.add_argument("--test_curve", type=str, default="False",
                        help="with --compare: True also tests the model after every validation (a diagnostic kept "
                             "as test_curve in runs.jsonl; selection stays on validation)")
    # Sweep flags (recbole_diffusion/tune.py): numbers read as text and checked there, one error line each.
    parser.add_argument("--tune", type=str, default=None,
                        help="search-space yaml, e.g. properties/hyper/DiffuRec.yaml: run a Ray Tune sweep")
    parser.add_argument("--num_samples", type=str, default="10", help="with --tune: trials drawn (default 10)")
    parser.add_argument("--cpus_per_trial", type=str, default="1", help="with --tune: CPUs per trial (default 1)")
    parser.add_argument("--gpus_per_trial", type=str, default=None,
                        help="with --tune: GPUs per trial, fractions share a GPU (default 1 with GPUs, else 0)")
    parser.add_argument("--ray_address", type=str, default=None,
                        help="with --tune: an existing Ray cluster (e.g. auto); default a local one")
    parser.add_argument("--scheduler", type=str, default="none", help="with --tune: asha or none (default)")
    parser.add_argument("--resume", action="store_true", help="with --tune: continue the sweep in --output_dir")
    parser.add_argument("--search_alg", type=str, default="random",
                        help="with --tune: random (default), optuna or hyperopt (TPE; pip install optuna/hyperopt)")
    parser.add_argument("--max_failures", type=str, default="1",
                        help="with --tune: restarts of a failed trial from its last epoch, e.g. after its node died "
                             "(default 1)")
    # Data augmentation (recbole_diffusion/augmentation/): options are config keys, e.g. --aug_num=10.
    parser.add_argument("--augment", type=str, default=None,
                        help="augmenter, e.g. DiffuASR: write an augmented copy of --dataset, then train and test "
                             "--model on the original and on the augmented data")
    args, _ = parser.parse_known_args(argv)
    return args


def format_results(result):
    """The valid/test metric table printed at the end of a run."""
    valid, test = result["best_valid_result"] or {}, result["test_result"] or {}
    rows = [f"{'metric':<12}{'valid':>10}{'test':>10}"]
    for key in list(dict.fromkeys(list(valid) + list(test))):
        fmt = lambda v: f"{v:>10.4f}" if isinstance(v, (int, float)) else f"{'-':>10}"  # noqa: E731
        rows.append(f"{key:<12}{fmt(valid.get(key))}{fmt(test.get(key))}")
    return "\n".join(rows)


def run_comparison(args, config_files):
    """``--compare``: every model with every seed on one dataset; prints the table and where the files are."""
    from recbole_diffusion import compare

    if args.nproc != 1 or args.world_size > 0:
        raise RecBoleDiffusionError("--compare runs one process; leave out --nproc/--world_size.")
    seeds, model_seeds = compare.parse_seeds(args.seeds)
    result = compare.compare(
        compare.parse_model_list(args.compare), args.dataset, seeds=seeds, model_seeds=model_seeds,
        config_file_list=config_files,
        model_config_files=compare.parse_model_configs(args.model_config),
        budget_epochs=None if args.budget_epochs is None else compare.parse_positive_int(
            "budget_epochs", args.budget_epochs),
        output_dir=args.output_dir,
        keep_checkpoints=compare.parse_bool("keep_checkpoints", args.keep_checkpoints),
        popularity_floor=compare.parse_bool("popularity_floor", args.popularity_floor),
        report_only=compare.parse_bool("report_only", args.report_only),
        fork_from=args.fork_from,
        test_curve=compare.parse_bool("test_curve", args.test_curve),
    )
    with open(result["files"]["comparison.md"], encoding="utf-8") as f:
        print("\n" + f.read())
    return result


def run_augmentation(args, config_files):
    """``--augment``: an augmented copy of the dataset, then --model on the original and on it, side by side."""
    from recbole_diffusion import augmentation

    if args.compare is not None or args.tune is not None:
        raise RecBoleDiffusionError("--augment trains one --model; it cannot be combined with --compare or --tune.")
    if args.nproc != 1 or args.world_size > 0:
        raise RecBoleDiffusionError("--augment runs one process; leave out --nproc/--world_size.")
    result = augmentation.run_augmented(args.augment, args.model, args.dataset, config_file_list=config_files)
    print("\n" + augmentation.format_report(args.model, args.dataset, result))
    return result


def check_options(args, config_files):
    """``--key=value`` options that no loaded yaml defines are errors (with a did-you-mean), before anything
    runs: a misspelt key would otherwise be silently ignored. ``--compare`` checks its own (per model)."""
    if args.compare is not None:
        return
    from recbole.utils import ModelType

    from recbole_diffusion.config import Config, properties_dir
    from recbole_diffusion.validation import check_command_line_keys

    also = set()
    if args.augment is not None:  # the augmenter's keys (aug_*) are read from its own yaml
        path = os.path.join(properties_dir(), "model", f"{args.augment}.yaml")
        if not os.path.isfile(path):
            return  # an unknown augmenter: --augment's own error names it
        import yaml

        with open(path, encoding="utf-8") as f:
            also |= set(yaml.safe_load(f) or {})
    if args.tune is not None:  # the sweep's keys live in the space file, applied on top
        also |= {"space"}
    config = Config(model=args.model, dataset=args.dataset, config_file_list=config_files)
    if args.augment is not None and config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        return  # --augment's own error: the model is not sequential
    check_command_line_keys(config, also)


def main(argv=None):
    args = parse_args(argv)
    config_files = [os.path.abspath(f) for f in args.config_files.strip().split(" ")] if args.config_files else None
    check_options(args, config_files)
    if args.augment is not None:
        return run_augmentation(args, config_files)
    if args.compare is not None:
        return run_comparison(args, config_files)
    if args.tune is not None:
        from recbole_diffusion.tune import run_sweep_from_args

        return run_sweep_from_args(args, config_files)
    from recbole_diffusion.quick_start import run

    result = run(args.model, args.dataset, config_file_list=config_files, nproc=args.nproc,
                 world_size=args.world_size, ip=args.ip, port=args.port, group_offset=args.group_offset)
    if result is not None:
        print(f"\n{args.model} on {args.dataset}")
        print(format_results(result))
        if result.get("model_file"):
            print(f"best model: {result['model_file']}")
    return result


def quiet_library_warnings():
    """Deprecation notices of the libraries under us (RecBole's pandas calls, torch's GradScaler, Ray) are not
    the user's business: they are filtered here, in the entry point, never printed into a progress bar."""
    import warnings

    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(recbole|pandas|torch|ray|numpy|sklearn)\b")
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler.*", category=FutureWarning)
    # torch's notice about RecBole's tensors made from read-only numpy arrays (pandas 3 hands those out)
    warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable", category=UserWarning)


def entry_point(argv=None):
    """Run :func:`main`; user errors become one line on stderr and exit status 2 (RBD_DEBUG=1 shows tracebacks)."""
    quiet_library_warnings()
    try:
        main(argv)
    except ModuleNotFoundError as err:
        if err.name != "recbole" or os.environ.get("RBD_DEBUG"):
            raise
        print("error: RecBole is not installed. Install it without its dependencies (its metadata pins ray<=2.6.3): "
              "pip install --no-deps recbole==1.2.1", file=sys.stderr)
        return 2
    except (RecBoleDiffusionError, FileNotFoundError, SyntaxError) as err:
        # SyntaxError: RecBole's answer to a --key given twice with different values
        if os.environ.get("RBD_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
