"""Checks of a run's inputs that need no data: RecBole's common keys, command-line keys nobody reads, and the
atomic files' shape. Each failure is one ``RecBoleDiffusionError`` line naming the problem and the fix.

Called right after a ``Config`` is built and before any data is loaded or anything is printed, by the runner
(``quick_start``), ``--compare`` and ``--tune``.
"""

import os

from recbole.evaluator.register import metric_types, smaller_metrics  # noqa: F401
from recbole.utils import ModelType
from recbole.utils.argument_list import (
    dataset_arguments,
    evaluation_arguments,
    general_arguments,
    training_arguments,
)

from recbole_diffusion.utils import RecBoleDiffusionError, did_you_mean

# Keys RecBole sets or reads at run time that no yaml defines.
RUNTIME_KEYS = {"local_rank", "nproc", "world_size", "offset", "ip", "port", "device", "single_spec", "model",
                "dataset", "config_files", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "valid_metric_bigger",
                "enable_amp", "enable_scaler", "wandb_project", "shuffle", "require_pow", "kg_reverse_r",
                "entity_kg_num_interval", "relation_kg_num_interval", "train_stage", "pretrain_epochs",
                "save_step", "transform", "numerical_features", "discretization", "encoding", "worker"}
# The command line's own flags (cli.py): argparse reads them, RecBole's Config sees them too.
CLI_FLAGS = {"model", "m", "dataset", "d", "config_files", "nproc", "world_size", "ip", "port", "group_offset",
             "compare", "seeds", "budget_epochs", "model_config", "output_dir", "keep_checkpoints", "report_only",
             "popularity_floor", "fork_from", "test_curve", "tune", "num_samples", "cpus_per_trial", "gpus_per_trial", "ray_address",
             "scheduler", "resume", "search_alg", "max_failures", "augment", "threads", "verbose"}
RECBOLE_KEYS = set(general_arguments) | set(training_arguments) | set(evaluation_arguments) | set(dataset_arguments)


def _bad(key, value, requirement, fix=None):
    return RecBoleDiffusionError(
        f"Invalid {key}={value!r}: {requirement}. " + (fix or f"Fix it with --{key}=<value> or in your yaml file.")
    )


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(config, key):
    value = config[key]
    if not _is_int(value) or value < 1:
        raise _bad(key, value, "must be a whole number >= 1")


def check_common_keys(config):
    """RecBole's own keys that every run reads: epochs, batch sizes, learning rate, early stopping, evaluation
    cadence, metrics, cut-offs, the validation metric, the seed."""
    for key in ("epochs", "train_batch_size", "eval_batch_size", "stopping_step"):
        _positive_int(config, key)
    value = config["eval_step"]
    if not _is_int(value) or value < 0:
        raise _bad("eval_step", value, "must be a whole number >= 0 (0 = never validate; 1 = after every epoch)")
    value = config["learning_rate"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _bad("learning_rate", value, "must be a number > 0, e.g. 0.001")
    value = config["weight_decay"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise _bad("weight_decay", value, "must be a number >= 0")
    step = config["lr_step_size"]
    if step is not None and (not _is_int(step) or step < 1):
        raise _bad("lr_step_size", step, "must be a whole number of epochs >= 1, or ~ for a constant learning rate")
    gamma = config["lr_gamma"]
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1):
        raise _bad("lr_gamma", gamma, "must be a number in (0, 1], e.g. 0.1")
    decays = config["lr_plateau_decays"]
    if decays is not None and (not _is_int(decays) or decays < 0):
        raise _bad("lr_plateau_decays", decays, "must be a whole number >= 0 (0 = no decay on plateau)")
    if (step is not None or decays) and gamma is None:
        raise _bad("lr_gamma", gamma, "must be set with lr_step_size or lr_plateau_decays, e.g. 0.1")
    if step is not None and decays:
        raise _bad("lr_plateau_decays", decays, "cannot be combined with lr_step_size (two schedules of one rate)",
                   "Set one of them: --lr_plateau_decays=0 or --lr_step_size=~.")
    if not _is_int(config["seed"]):
        raise _bad("seed", config["seed"], "must be a whole number, e.g. 2020")

    topk = config["topk"]
    cutoffs = [topk] if _is_int(topk) else topk
    if not isinstance(cutoffs, list) or not cutoffs or not all(_is_int(k) and k >= 1 for k in cutoffs):
        raise _bad("topk", topk, "must be a whole number >= 1 or a list of them, e.g. [5, 10, 20]")
    metrics = config["metrics"]
    metrics = [metrics] if isinstance(metrics, str) else metrics
    if not isinstance(metrics, list) or not metrics:
        raise _bad("metrics", metrics, "must be a list of metric names, e.g. [Hit, NDCG]")
    names = sorted(set(metric_types) | set(smaller_metrics))
    for metric in metrics:
        if not isinstance(metric, str) or metric.lower() not in metric_types:
            raise _bad("metrics", metrics, f"'{metric}' is not a RecBole metric.{did_you_mean(str(metric).lower(), names)} "
                       f"Known: {', '.join(names)}", "Fix it with --metrics=\"['Hit','NDCG']\" or in your yaml file.")
    valid = config["valid_metric"]
    topk_metrics = {m.lower() for m in metrics if _is_topk_metric(m)}
    allowed = [f"{m}@{k}" for m in metrics if m.lower() in topk_metrics for k in cutoffs]
    allowed += [m for m in metrics if m.lower() not in topk_metrics]
    if not isinstance(valid, str) or valid.lower() not in {a.lower() for a in allowed}:
        raise _bad("valid_metric", valid, f"must be one of the metrics at one of the cut-offs: {', '.join(allowed)}"
                   + did_you_mean(str(valid), allowed))


def _is_topk_metric(metric):
    """Metrics computed at each cut-off of ``topk`` (Hit@10, ...), as opposed to AUC, MAE, ..."""
    from recbole.evaluator.register import metrics_dict

    cls = metrics_dict.get(str(metric).lower())
    return cls is not None and any(need in ("rec.topk", "rec.items") for need in cls.metric_need)


def known_keys(config, also=()):
    """Every key some loaded yaml (RecBole's, ours, the model's, the dataset's, the user's files or config_dict)
    defines, RecBole's documented arguments, run-time keys and the CLI's flags."""
    return (set(config.internal_config_dict) | set(config.file_config_dict) | set(config.variable_config_dict)
            | RECBOLE_KEYS | RUNTIME_KEYS | CLI_FLAGS | set(also))


def unknown_command_line_keys(config, also=()):
    """The ``--key=value`` keys of the command line that nothing defines, in command-line order."""
    known = known_keys(config, also)
    return [key for key in config.cmd_config_dict if key not in known]


def unknown_key_error(keys, config, also=(), model=None):
    known = sorted(k for k in known_keys(config, also) if k not in CLI_FLAGS | RUNTIME_KEYS)
    key = keys[0]
    where = f" for {model}" if model else ""
    return RecBoleDiffusionError(
        f"Unknown option --{key}{where}: no yaml of RecBole, recbole_diffusion, the model or yours defines it, so "
        f"it would be silently ignored.{did_you_mean(key, known)} If you mean it (a key your own code reads), "
        f"put it in a yaml file of yours (--config_files)."
        + (f" Also unknown: {', '.join('--' + k for k in keys[1:])}." if len(keys) > 1 else "")
    )


def check_command_line_keys(config, also=()):
    keys = unknown_command_line_keys(config, also)
    if keys:
        raise unknown_key_error(keys, config, also, config["model"])


# ----------------------------------------------------------------------------------------------------------
# The atomic files
# ----------------------------------------------------------------------------------------------------------
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def check_interaction_file(config):
    """The .inter file of the dataset: a well-formed header, the columns the model needs, at least one row, and
    enough interactions per user for leave-one-out. Returns a list of notes (warnings) to show the user."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    if not os.path.isfile(path):
        return []  # check_dataset_exists speaks to a missing dataset; ml-100k ships inside RecBole
    separator = config["field_separator"] or "\t"
    with open(path, encoding=config["encoding"] or "utf-8") as f:
        header = f.readline().rstrip("\r\n")
        has_row = any(line.strip() for line in f)
    fields = {}
    for column in header.split(separator):
        name, sep, kind = column.partition(":")
        if not sep or not name or kind not in FIELD_TYPES:
            raise RecBoleDiffusionError(
                f"Malformed header in {path}: column {column!r} is not name:type with type one of "
                f"{', '.join(FIELD_TYPES)} (columns separated by {separator!r}). Write e.g. "
                f"'user_id:token<TAB>item_id:token<TAB>timestamp:float' on the first line."
            )
        fields[name] = kind
    needed = [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]]
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        needed.append(config["TIME_FIELD"])
    missing = [name for name in needed if name not in fields]
    if missing:
        why = " (sequential models order each user's items by it)" if config["TIME_FIELD"] in missing else ""
        raise RecBoleDiffusionError(
            f"{path} has no column {', '.join(repr(m) for m in missing)}{why}; its columns are "
            f"{', '.join(fields)}. Add the column, or name yours with --USER_ID_FIELD/--ITEM_ID_FIELD/--TIME_FIELD."
        )
    if not has_row:
        raise RecBoleDiffusionError(f"{path} has a header but no interaction rows. Fill it, or pick another dataset.")
    return _leave_one_out_notes(config, path, separator)


def _leave_one_out_notes(config, path, separator, max_bytes=200 * 2**20):
    split = (config["eval_args"] or {}).get("split") or {}
    if "LS" not in split or os.path.getsize(path) > max_bytes:
        return []
    import pandas as pd

    user = f"{config['USER_ID_FIELD']}:token"
    counts = pd.read_csv(path, sep=separator, usecols=[user], dtype=str,
                         encoding=config["encoding"] or "utf-8")[user].value_counts()
    needed = 3 if split["LS"] == "valid_and_test" else 2
    short = int((counts < needed).sum())
    if short == len(counts):
        raise RecBoleDiffusionError(
            f"No user of {path} has the {needed} interactions leave-one-out needs (one to train on, "
            + ("one to validate, one to test" if needed == 3 else "one to hold out") + "): the split is impossible. "
            "Use a dataset with longer histories, or another eval_args split."
        )
    if short:
        return [f"note: {short} of {len(counts)} users in {os.path.basename(path)} have fewer than {needed} "
                f"interactions, which leave-one-out needs: they get no training row (RecBole keeps what it can "
                f"of them for validation and test)."]
    return []
