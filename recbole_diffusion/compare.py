"""Side-by-side comparison: several models, several seeds, one prepared dataset, one table and one plot.

    python run_recbole_diffusion.py --compare=DiffuRec,DreamRec,SASRec,BERT4Rec --dataset=beauty --seeds=3 \
        [--config_files="a.yaml b.yaml"] [--model_config=DiffuRec:best.yaml,SASRec:sas.yaml] \
        [--budget_epochs=N] [--output_dir=DIR] [--key=value ...]

Every (model, seed) run is RecBole's own training and full-ranking evaluation (``Trainer.fit`` with early
stopping and best-epoch selection on ``valid_metric``, then ``Trainer.evaluate`` on the test split), and writes
into ``output_dir``:

* ``runs.jsonl``: one line per finished run holding every number it produced, appended as soon as the run ends;
* ``comparison.md`` and ``comparison.csv``: per model, mean and standard deviation over seeds of every test
  metric, training seconds per epoch, inference milliseconds per user and parameter count, plus a paired
  t-test of the best diffusion model against the best baseline; rewritten after each run (a partial table);
* ``comparison.png``: the same numbers as bars with standard-deviation error bars.

Design choices, and why:

* **One dataset.** RecBole's ``Dataset`` object (loading, filtering, id remapping) depends only on dataset-level
  settings, not on the model: :func:`dataset_settings` collects them (RecBole's own ``dataset_arguments``, which
  its ``create_dataset`` compares before reusing a saved dataset, plus the few other keys ``Dataset`` reads, and
  the dataset class). Runs with equal settings share one dataset, created once; a model whose settings differ
  (say its own ``MAX_ITEM_LIST_LENGTH``) gets its own, and the progress output names the keys that differ.
  ``Dataset.build()`` (sequence augmentation, ordering, splitting) rewrites the object it is called on, so each
  run builds from a deep copy of the shared, never-built dataset: the expensive part is done once, and every
  run gets exactly what a fresh ``create_dataset`` would give it.
* **Model selection without files.** ``fit(saved=True)`` asks the trainer to save a checkpoint exactly when the
  validation metric improves; here that call keeps a copy of the weights in memory instead, and the test is
  run on that copy. Nothing is written to disk unless ``keep_checkpoints`` asks for it (then each run's best model
  is written once, after training, to ``output_dir/checkpoints/<model>-seed<seed>-<settings>.pth``, in the
  trainer's safe format, also for a resumed run).
* **Timing.** Training seconds per epoch: ``time.perf_counter`` around each call of RecBole's
  ``trainer._train_epoch`` (training only: no validation, no logging), CUDA synchronised at both ends; the
  table gives each run's median over its epochs (``runs.jsonl`` keeps every epoch's time and the mean), so that
  epochs slowed by other jobs on the machine, or run in another session, do not set a run's pace. Inference
  milliseconds per user: wall time of the full-ranking test evaluation (scoring every item, ranking, metrics)
  divided by the number of test users.
* **Seeds.** Run ``i`` of every model uses ``seed = base + i`` with ``reproducibility = True``; ``base`` is
  the seed of the shared settings (command line, ``--config_files``, ``config_dict``; RecBole's default 2020).
  ``epochs`` is set to ``budget_epochs`` for every model when given (an equal budget).
* **Resume.** A run is identified by (model, seed, settings), where settings is a hash of the run's whole
  resolved configuration minus display-only keys. A run already in ``runs.jsonl`` with the same identity is
  not trained again; a changed hyperparameter, yaml file, dataset path or device makes a new identity.
  A run cut short (a killed process, the end of a session) continues from its last validated epoch: after each
  validation the run's whole state (weights, optimizer, early-stopping counters, the best weights so far, its
  curve and timings, and every random generator it draws from: torch's, numpy's, Python's and the training
  loader's shuffle) is written atomically to ``output_dir/progress/``, and deleted once the run is in
  ``runs.jsonl``. A resumed run trains the same epochs on the same batches as an uninterrupted one and reaches
  the same result on the same machine (``tests/test_compare.py``); its timings are those of the epochs each
  process ran, and ``cpus`` lists every machine that trained it (another CPU's kernels may round differently).
  With ``keep_checkpoints`` the state after the last validation is kept (``checkpoints/<run>.last.pth``): a run
  with decay on plateau starts from the state where the same run without it stopped (``fork_from``,
  :func:`fork_at_plateau`).
* **Several workers, one comparison.** The same command started several times (processes on one machine, or
  machines sharing the folder) splits the runs between them: a worker claims a run by creating
  ``output_dir/progress/<run>.claim`` and holding an exclusive lock on it (``flock``), so exactly one worker
  gets it; the others skip it and read it back once it is in ``runs.jsonl``. The system drops the lock of a
  process that dies, however it dies, so the next worker takes the run over and resumes it from its saved
  state. Across machines this needs a shared filesystem with working locks. ``report_only`` then writes the
  whole table.
* **Time to quality.** Each run keeps its validation curve (epoch, validation score, cumulative training and
  validation seconds). The report gives, per model, the epochs and wall time to its best validation score and
  to the best validation score of the strongest baseline (SASRec when present) of the same seed (their mean
  over seeds for a seed the baseline did not run): with the mean over seeds, a baseline's own slower seed would
  never reach its target.
* **Settings of each model.** RecBole's layers, lowest first: its defaults and ours, the model's own yaml,
  ``config_file_list`` (``--config_files``), the model's file from ``model_config_files`` (``--model_config``,
  e.g. the best yaml of a Ray Tune sweep), ``config_dict``, the command line. Overrides given on the command
  line thus apply to every model and beat every yaml file; settings tuned per model belong in its yaml.
* **Diffusion or baseline.** A model from recbole_diffusion's own model packages (the registry) is a
  diffusion model; anything else (RecBole's) is a baseline.
* **The popularity floor.** Unless ``popularity_floor=False`` (``--popularity_floor=False``), the comparison
  adds the popularity ranking of its protocol: ``SeqPop`` when the models are sequential (same split and
  evaluator), RecBole's ``Pop`` otherwise. Its row is the first of the table, of kind ``floor``; it is never
  the "best baseline" of the significance test, and every model whose mean test value of the validation metric
  is not above the floor's is marked in the table and listed under it.
"""

import copy
import csv
import datetime
import glob
import hashlib
import io
import json
import os
import random
import socket
import statistics
import time

import numpy as np
import torch

try:
    import fcntl  # run claims for several workers (POSIX); without it every run is this process's own
except ImportError:  # pragma: no cover (Windows)
    fcntl = None
from recbole.utils import init_logger, init_seed
from recbole.utils.argument_list import dataset_arguments

from recbole_diffusion.config import Config
from recbole_diffusion.data import create_dataset
from recbole_diffusion.quick_start import build, preflight
from recbole_diffusion.registry import get_model, our_model_names
from recbole_diffusion.trainer import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from recbole_diffusion.utils import CheckpointError, RecBoleDiffusionError, did_you_mean, write_atomic, write_text
from recbole_diffusion.validation import unknown_command_line_keys, unknown_key_error

# Keys that change how a run is shown or stored, not what it computes: left out of a run's identity.
# The first group are the comparison's own command-line flags, which RecBole's Config also reads from argv.
_NOT_SETTINGS = {
    "compare", "seeds", "budget_epochs", "model_config", "output_dir", "keep_checkpoints", "config_files",
    "popularity_floor", "report_only", "fork_from", "test_curve",
    "state", "show_progress", "checkpoint_dir", "log_wandb", "wandb_project",
    "save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path",
}
# The learning-rate schedule's keys (overall.yaml), added after runs were recorded: with no schedule on they change
# nothing, and are left out of a run's identity, so that the runs recorded before them stay resumable and counted.
_SCHEDULE_KEYS = ("lr_step_size", "lr_gamma", "lr_plateau_decays")
# What RecBole's Dataset reads from its config besides ``dataset_arguments`` (grep of dataset.py 1.2.1).
_DATASET_KEYS = tuple(dataset_arguments) + (
    "dataset", "data_path", "encoding", "numerical_features", "discretization", "eval_args",
)
SIGNIFICANCE_LEVEL = 0.05


def _say(message):
    print(message, flush=True)


# ----------------------------------------------------------------------------------------------------------
# Command-line values
# ----------------------------------------------------------------------------------------------------------
def parse_positive_int(flag, value):
    """``value`` (int or text) as an int >= 1, or one clear error naming ``flag``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise RecBoleDiffusionError(f"--{flag} must be a whole number >= 1, got {value!r}.") from None
    if number < 1 or str(number) != str(value).strip():
        raise RecBoleDiffusionError(f"--{flag} must be a whole number >= 1, got {value!r}.")
    return number


def parse_seeds(text):
    """``--seeds=3`` or ``--seeds=2,DiffuRec:3,SASRec:3`` (a default, then per-model counts) -> (int, dict)."""
    first, *rest = [part.strip() for part in str(text).split(",")]
    per_model = {}
    for part in rest:
        model, sep, count = part.partition(":")
        if not sep or not model.strip():
            raise RecBoleDiffusionError(f"--seeds={text}: after the default count, write Model:N (e.g. "
                                        f"--seeds=2,DiffuRec:3), got {part!r}.")
        per_model[model.strip()] = parse_positive_int("seeds", count.strip())
    return parse_positive_int("seeds", first), per_model


def parse_model_list(text):
    """``"DiffuRec,SASRec"`` -> ``["DiffuRec", "SASRec"]`` (spaces around names are dropped)."""
    return [name.strip() for name in str(text).split(",") if name.strip()]


def parse_model_configs(text):
    """``"DiffuRec:best.yaml,SASRec:sas.yaml"`` -> ``{"DiffuRec": "best.yaml", "SASRec": "sas.yaml"}``."""
    configs = {}
    for item in parse_model_list(text or ""):
        model, sep, path = item.partition(":")
        if not sep or not model.strip() or not path.strip():
            raise RecBoleDiffusionError(
                f"--model_config entry {item!r} is not Model:path.yaml; write e.g. "
                f"--model_config=DiffuRec:best_diffurec.yaml,SASRec:best_sasrec.yaml."
            )
        if model.strip() in configs:
            raise RecBoleDiffusionError(f"--model_config names {model.strip()} twice; give one file per model.")
        configs[model.strip()] = path.strip()
    return configs


def parse_bool(flag, value):
    """True/False as RecBole writes them on the command line; anything else is an error, never a silent False."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise RecBoleDiffusionError(f"--{flag} must be True or False, got {value!r}.")
    return text == "true"


def popularity_floor_for(models):
    """The popularity model of the models' protocol: SeqPop for sequential models, RecBole's Pop otherwise."""
    from recbole.utils import ModelType

    sequential = all(get_model(m).type == ModelType.SEQUENTIAL for m in models)
    return "SeqPop" if sequential else "Pop"


def is_floor(model):
    return model == "Pop" or getattr(get_model(model), "is_popularity_floor", False)


def check_inputs(models, seeds, model_config_files, config_file_list, budget_epochs, model_seeds=None):
    """Raise one RecBoleDiffusionError line for the first input error that can be seen without data."""
    if not models:
        raise RecBoleDiffusionError("--compare names no model; write e.g. --compare=DiffuRec,SASRec.")
    for model in models:
        if models.count(model) > 1:
            raise RecBoleDiffusionError(
                f"Model '{model}' is listed twice in --compare={','.join(models)}; list each model once."
            )
    for model in models:
        get_model(model)  # an unknown name: the registry's error, with did-you-mean and the available models
    for count in [seeds, *(model_seeds or {}).values()]:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise RecBoleDiffusionError(f"--seeds must be a whole number >= 1, got {count!r}.")
    for model in model_seeds or {}:
        if model not in models:
            raise RecBoleDiffusionError(f"--seeds gives a count for '{model}', which is not in "
                                        f"--compare={','.join(models)}." + did_you_mean(model, models))
    if budget_epochs is not None and (isinstance(budget_epochs, bool) or not isinstance(budget_epochs, int)
                                      or budget_epochs < 1):
        raise RecBoleDiffusionError(f"--budget_epochs must be a whole number >= 1, got {budget_epochs!r}.")
    for model, path in model_config_files.items():
        if model not in models:
            raise RecBoleDiffusionError(
                f"--model_config gives a file for '{model}', which is not in --compare={','.join(models)}."
                + did_you_mean(model, models)
            )
        if not os.path.isfile(path):
            raise RecBoleDiffusionError(f"Config file '{path}' for {model} (--model_config) does not exist.")
    for path in config_file_list:
        if not os.path.isfile(path):
            raise RecBoleDiffusionError(f"Config file '{path}' (--config_files) does not exist.")


# ----------------------------------------------------------------------------------------------------------
# Measurements (also used by benchmarks/common.py)
# ----------------------------------------------------------------------------------------------------------
def count_parameters(model):
    """Number of scalars in the model's parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def _synchronize(device):
    # CUDA kernels run asynchronously: without this a timer would stop before the GPU is done.
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def record_epoch_times(trainer, on_epoch=None):
    """Time every call of ``trainer._train_epoch`` from now on.

    Returns the list that each epoch's seconds are appended to. ``on_epoch(epoch_idx, seconds, loss)`` is
    called after each epoch, outside the timed span.
    """
    seconds = []
    train_epoch = trainer._train_epoch

    def timed_train_epoch(train_data, epoch_idx, *args, **kwargs):
        _synchronize(trainer.device)
        start = time.perf_counter()
        loss = train_epoch(train_data, epoch_idx, *args, **kwargs)
        _synchronize(trainer.device)
        seconds.append(time.perf_counter() - start)
        if on_epoch is not None:
            on_epoch(epoch_idx, seconds[-1], loss)
        return loss

    trainer._train_epoch = timed_train_epoch
    return seconds


def timed_evaluate(trainer, eval_data):
    """Evaluate the trainer's current model on ``eval_data`` (full ranking).

    Returns ``(result, ms_per_user)``: RecBole's metric dict, and the evaluation's wall time in milliseconds
    divided by the number of users evaluated.
    """
    _synchronize(trainer.device)
    start = time.perf_counter()
    result = trainer.evaluate(eval_data, load_best_model=False)
    _synchronize(trainer.device)
    return result, 1000 * (time.perf_counter() - start) / eval_data.sample_size


# ----------------------------------------------------------------------------------------------------------
# Identities: of a run (for resuming) and of a dataset (for sharing)
# ----------------------------------------------------------------------------------------------------------
def _canonical(value):
    """``value`` as JSON-able plain data with a stable text for anything else (enums, devices)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    return str(value)


def settings_key(config, **changes):
    """Short hash of a run's resolved configuration (seed included), display-only keys left out; ``changes``
    replace values first (the identity of a variant of this run, e.g. ``lr_plateau_decays=0``)."""
    values = dict(config.final_config_dict, **changes)
    schedule_off = values.get("lr_step_size") is None and not values.get("lr_plateau_decays")
    settings = {k: _canonical(v) for k, v in values.items()
                if k not in _NOT_SETTINGS and not (schedule_off and k in _SCHEDULE_KEYS)}
    settings["data_path"] = os.path.abspath(str(config["data_path"]))
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_settings(config):
    """The settings that RecBole's ``create_dataset`` builds a dataset from: dataset class and dataset keys."""
    import recbole.data.dataset as recbole_datasets

    # create_dataset picks <Model>Dataset when RecBole defines one, else a class per model type.
    special = f"{config['model']}Dataset"
    settings = {"class": special if hasattr(recbole_datasets, special) else config["MODEL_TYPE"].name}
    settings.update({key: _canonical(config[key]) for key in _DATASET_KEYS})
    settings["data_path"] = os.path.abspath(str(config["data_path"]))
    return settings


# ----------------------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------------------
def _rng_states(train_data):
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
            "loader": train_data.generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_states(states, train_data):
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    train_data.generator.set_state(states["loader"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _load_progress(progress_file, key, say):
    """The saved state of an unfinished run with settings ``key``, or None (no file, or one that does not fit)."""
    if not progress_file or not os.path.isfile(progress_file):
        return None
    try:
        progress = load_checkpoint(progress_file)
    except CheckpointError as err:
        say(f"{err} Starting this run from its first epoch.")
        return None
    if progress.get("settings") != key:
        say(f"{progress_file} holds a run with other settings: starting this run from its first epoch.")
        return None
    return progress


def last_state_path(checkpoint_dir, model, seed, key):
    """Where a finished run's state after its last validation is kept (``keep_checkpoints``): the run can be
    continued from it, e.g. past its plateau at a decayed rate (:func:`fork_at_plateau`)."""
    return os.path.join(checkpoint_dir, f"{model}-seed{seed}-{key}.last.pth")


def fork_at_plateau(config, key, fork_from, progress_file, say=_say):
    """Start a run with decay on plateau (``lr_plateau_decays`` >= 1) from where the same run without it stopped.

    A run with ``lr_plateau_decays`` trains exactly as the run without it (same batches, same random draws) up to
    the validation at which that run's early stopping stopped it; there it multiplies the rate by ``lr_gamma`` and
    gets its patience afresh instead (the trainer's ``_decay_on_plateau``). So the stopped
    run's last state (``<fork_from>/<model>-seed<seed>-<its key>.last.pth``, kept by a comparison run with
    ``keep_checkpoints``), with that decay applied, is this run's state after that validation: written to
    ``progress_file``, the run continues from it like any resumed run, hours of identical epochs saved.

    Returns:
        bool: whether the state was forked; False (and one line said) when there is nothing to fork from.
    """
    if not config["lr_plateau_decays"] or os.path.isfile(progress_file):
        return False
    parent = last_state_path(fork_from, config["model"], config["seed"], settings_key(config, lr_plateau_decays=0))
    if not os.path.isfile(parent):
        say(f"no state to fork from ({parent} does not exist): this run starts from its first epoch.")
        return False
    state = load_checkpoint(parent)
    if not state["cur_step"] > config["stopping_step"]:  # RecBole's stop rule: it ended at its last epoch instead
        say(f"{parent} ended at its epoch limit, not at a plateau: this run starts from its first epoch.")
        return False
    for group in state["optimizer"]["param_groups"]:
        group["lr"] *= config["lr_gamma"]
        group["plateau_decays"] = group.get("plateau_decays", 0) + 1
    state["cur_step"] = 0  # the decayed run's early-stopping count after that validation: patience afresh
    state["settings"] = key
    state["forked_from"] = {"file": os.path.abspath(parent), "after_epoch": state["epoch"] + 1}
    save_checkpoint(state, progress_file)
    say(f"forked from {parent}: the same run without decay on plateau, which stopped at its plateau after epoch "
        f"{state['epoch'] + 1}; continues there at the rate x {config['lr_gamma']}")
    return True


_CLAIMS = {}  # claim path -> the open file whose lock this process holds


def claim_run(path):
    """Claim one run for this process: an exclusive ``flock`` on the file ``path``, held until
    :func:`release_run` or the end of the process (the system drops the lock of a process that dies, however it
    dies, so a dead worker's claim is free at once). Of several workers sharing an output folder, exactly one
    gets each run.

    Returns:
        dict or None: None when this process now holds the claim, else what the holder wrote (host, pid).
    """
    if fcntl is None:
        return None
    while True:
        f = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            text = f.read()
            f.close()
            try:
                return json.loads(text)
            except ValueError:
                return {}  # the holder is writing its record this instant
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released (and deleted) between our open and our lock: claim the file there now
            f.close()
            continue
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        f.flush()
        _CLAIMS[path] = f
        return None


def release_run(path):
    """Ends this process's claim on ``path``: the file is deleted while still locked, then the lock dropped."""
    f = _CLAIMS.pop(path, None)
    if f is None:
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    f.close()


def cpu_description():
    """This machine's processor and the instruction set torch's CPU kernels dispatch to (e.g. ``AMD EPYC, torch
    kernels AVX512``). Float results of the same run can differ in their last digits between kernels, so a run
    that spans sessions records each machine that trained it."""
    name = "unknown processor"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, torch kernels {torch.backends.cpu.get_cpu_capability()}"


def _best_to_save(best, epoch_idx):
    """The best-validation weights as a run's saved state keeps them: none when this epoch is the best, whose
    weights the state holds already (a quarter of the file: weights, Adam's two moments, best weights)."""
    return dict(best, state=None) if best.get("epoch") == epoch_idx else best


def saved_best_weights(progress):
    """The best-validation weights of a saved state (``_best_to_save``'s inverse): the state's own weights when it
    was saved at its best epoch."""
    best = progress["best"]["state"]
    return progress["state_dict"] if best is None else best


def train_and_test(config, dataset, label="", keep_checkpoints=False, say=_say, progress_file=None, key=None,
                   test_curve=False):
    """Train ``config['model']`` with RecBole's ``fit`` and test its best-validation epoch.

    Args:
        config (Config): the run's configuration (seed, epochs already set).
        dataset (Dataset): a never-built dataset of this configuration's dataset settings; it is consumed.
        label (str): prefix of the epoch progress lines.
        keep_checkpoints (bool): also write the best-validation model to ``<checkpoint_dir>/<model>-seed<seed>-
            <key>.pth`` (the trainer's safe format), once, after training (else the best weights stay in memory).
        progress_file (str): where the run's state goes after each validation, and is continued from when the
            file exists with the same settings ``key`` (see the module's notes on resuming).
        key (str): the run's settings identity (see :func:`settings_key`).
        test_curve (bool): a diagnostic: after every validation also evaluate the current model on the test split
            and keep both full metric dicts (``test_curve`` in the record). Never used for selection; evaluation
            draws come from their own seeded generators, so training and validation stay those of the same run
            without it.

    Returns:
        dict: every number of the run (see :func:`compare`).
    """
    init_seed(config["seed"], config["reproducibility"])
    _, train_data, valid_data, test_data, model, trainer = build(config, dataset=dataset)
    best, curve, valid_seconds, cpus, tests = {}, [], [], [], []
    save_best = trainer._save_checkpoint
    valid_epoch = trainer._valid_epoch
    last = {}

    def recorded_valid_epoch(*args, **kwargs):  # the full validation result, for test_curve
        score, last["valid_result"] = valid_epoch(*args, **kwargs)
        return score, last["valid_result"]

    if test_curve:
        trainer._valid_epoch = recorded_valid_epoch

    def keep_best(epoch, verbose=True, **kwargs):
        # fit(saved=True) calls this exactly when the validation metric improves (RecBole's selection).
        best["epoch"] = epoch
        best["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        best["other"] = copy.deepcopy(model.other_parameter())

    trainer._save_checkpoint = keep_best
    epoch_seconds = record_epoch_times(trainer, lambda *args: on_epoch(*args))
    progress = _load_progress(progress_file, key, say)
    forked = progress is not None and "forked_from" in progress  # kept in every later state: the record says so
    if progress is not None:
        model.load_state_dict(progress["state_dict"])
        model.load_other_parameter(progress["other_parameter"])
        trainer.optimizer.load_state_dict(progress["optimizer"])
        trainer.start_epoch = progress["epoch"] + 1
        trainer.cur_step = progress["cur_step"]
        trainer.best_valid_score = progress["best_valid_score"]
        trainer.best_valid_result = progress["best_valid_result"]
        if progress["best"]:
            best.update(progress["best"])
            best["state"] = {k: v.detach().clone() for k, v in saved_best_weights(progress).items()}
        curve.extend(progress["curve"])
        epoch_seconds.extend(progress["epoch_seconds"])
        valid_seconds.extend(progress["valid_seconds"])
        cpus.extend(progress.get("cpus", ["unknown (a state saved before machines were recorded)"]))
        tests.extend(progress.get("test_curve", []))
        _set_rng_states(progress["rng"], train_data)
        say(f"{label}: resumed after epoch {trainer.start_epoch} from {progress_file}")

    here = cpu_description()
    if here not in cpus:
        cpus.append(here)

    def on_epoch(epoch_idx, seconds, loss):
        loss = sum(loss) if isinstance(loss, tuple) else loss
        last.update(text=f"{label} epoch {epoch_idx + 1}/{config['epochs']}: train {seconds:.2f} s, loss {loss:.4f}",
                    end=time.perf_counter())
        if trainer.eval_step <= 0 or (epoch_idx + 1) % trainer.eval_step:
            say(last["text"])  # no validation follows this epoch: nothing to add to the line

    def on_valid(epoch_idx, valid_score):
        valid_seconds.append(time.perf_counter() - last["end"])
        curve.append([epoch_idx + 1, float(valid_score), sum(epoch_seconds), sum(valid_seconds)])
        mark = " (best so far)" if best.get("epoch") == epoch_idx else ""
        say(f"{last['text']}, valid {config['valid_metric'].lower()} {valid_score:.4f}{mark}")
        if test_curve:
            test_now = trainer.evaluate(test_data, load_best_model=False)
            tests.append({"epoch": epoch_idx + 1, "valid": {k: float(v) for k, v in last["valid_result"].items()},
                          "test": {k: float(v) for k, v in test_now.items()}})
            say(f"{label} epoch {epoch_idx + 1}: test {config['valid_metric'].lower()} "
                f"{tests[-1]['test'][config['valid_metric'].lower()]:.4f} (test_curve: a diagnostic, not selection)")
        if progress_file:
            save_checkpoint({
                "format": CHECKPOINT_FORMAT, "kind": "run in progress", "settings": key,
                "epoch": epoch_idx, "cur_step": trainer.cur_step, "best_valid_score": float(trainer.best_valid_score),
                "best_valid_result": {k: float(v) for k, v in (trainer.best_valid_result or {}).items()},
                "state_dict": model.state_dict(), "other_parameter": model.other_parameter(),
                "optimizer": trainer.optimizer.state_dict(), "best": _best_to_save(best, epoch_idx), "curve": curve,
                "epoch_seconds": epoch_seconds, "valid_seconds": valid_seconds, "rng": _rng_states(train_data),
                "cpus": cpus, **({"forked_from": progress["forked_from"]} if forked else {}),
                **({"test_curve": tests} if test_curve else {}),
            }, progress_file)

    stopped = progress is not None and (  # RecBole's two ends of fit: early stopping, or the last epoch
        trainer.cur_step > trainer.stopping_step or trainer.start_epoch >= trainer.epochs)
    if stopped:  # training had ended; only the test was left
        trainer.eval_collector.data_collect(train_data)  # what fit() would have collected (e.g. item popularity)
        best_valid_score, best_valid_result = trainer.best_valid_score, trainer.best_valid_result
    else:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, verbose=True, saved=True, show_progress=config["show_progress"],
            callback_fn=on_valid,
        )
    if best:
        model.load_state_dict(best["state"])
        model.load_other_parameter(best["other"])
        if keep_checkpoints:  # written once, from the best state: complete even when the run was resumed
            trainer.saved_model_file = os.path.join(
                config["checkpoint_dir"], f"{config['model']}-seed{config['seed']}-{key or 'run'}.pth")
            save_best(best["epoch"], verbose=False)
    test_result, ms_per_user = timed_evaluate(trainer, test_data)
    record = {
        "valid_metric": config["valid_metric"].lower(),
        "best_valid_score": float(best_valid_score),
        "best_epoch": best["epoch"] + 1 if best.get("epoch", -1) >= 0 else None,
        "epochs_trained": len(epoch_seconds),
        "valid": {k: float(v) for k, v in (best_valid_result or {}).items()},
        "test": {k: float(v) for k, v in test_result.items()},
        "sec_per_epoch": statistics.mean(epoch_seconds) if epoch_seconds else None,
        "epoch_seconds": epoch_seconds,
        "valid_curve": curve,
        "infer_ms_per_user": ms_per_user,
        "test_users": int(test_data.sample_size),
        "params": count_parameters(model),
        "threads": torch.get_num_threads(),
        "device": str(config["device"]) + (
            f" ({torch.cuda.get_device_name(config['device'])})" if config["device"].type == "cuda" else ""),
        "cpus": cpus,  # every machine that trained the run: a resumed run may span several
    }
    if test_curve:
        record["test_curve"] = tests
    if progress is not None:
        record["resumed_after_epoch"] = progress["epoch"] + 1
        if forked:
            record["forked_from"] = progress["forked_from"]
    if keep_checkpoints:
        record["model_file"] = trainer.saved_model_file
    return record


# ----------------------------------------------------------------------------------------------------------
# runs.jsonl
# ----------------------------------------------------------------------------------------------------------
def load_runs(path, say=_say):
    """Finished runs from ``runs.jsonl``; a line cut short by an interruption is skipped with a warning."""
    runs = []
    if not os.path.isfile(path):
        return runs
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError:
                say(f"warning: {path} line {number} is not a complete record (interrupted write?); ignored")
    return runs


def _append_run(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())  # a finished run must survive a crash right after it


# ----------------------------------------------------------------------------------------------------------
# Summary, significance, report files
# ----------------------------------------------------------------------------------------------------------
def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def epoch_time(run):
    """A run's training seconds per epoch: the median over its epochs (a run spread over sessions or sharing the
    machine has some epochs slowed by other jobs; the median is the pace of its typical epoch)."""
    return statistics.median(run["epoch_seconds"]) if run.get("epoch_seconds") else run["sec_per_epoch"]


def _epoch_pace(run):
    """Median wall seconds of one epoch's training plus validation, from the run's validation curve."""
    totals = [p[2] + p[3] for p in run["valid_curve"]]
    return statistics.median(b - a for a, b in zip([0.0] + totals[:-1], totals))


def summarize(runs, models):
    """Per model (in ``models`` order, those with at least one run): mean and std over its runs.

    Returns a list of dicts: ``model``, ``kind``, ``seeds`` (list), ``values`` {column: (mean, std)}.
    Metric columns are the test metrics in RecBole's order; then ``sec_per_epoch``, ``epochs_trained``,
    ``infer_ms_per_user``, ``params``.
    """
    metrics = list(dict.fromkeys(k for run in runs for k in run["test"]))
    rows = []
    for model in models:
        mine = [run for run in runs if run["model"] == model]
        if not mine:
            continue
        values = {m: _mean_std([run["test"].get(m) for run in mine]) for m in metrics}
        values["sec_per_epoch"] = _mean_std([epoch_time(run) for run in mine])
        for key in ("epochs_trained", "infer_ms_per_user", "params"):
            values[key] = _mean_std([run[key] for run in mine])
        rows.append({"model": model, "kind": mine[0]["kind"], "seeds": sorted(run["seed"] for run in mine),
                     "values": values, "best_valid_score": statistics.mean(r["best_valid_score"] for r in mine)})
    return rows, metrics


def paired_test(rows, runs):
    """Paired t-test, over the seeds both ran, of the best diffusion model against the best baseline.

    "Best" is the highest mean validation score (model selection never looks at the test split); the test
    compares their per-seed test values of the validation metric (scipy.stats.ttest_rel, two-sided).
    Returns a dict with ``text`` (one paragraph) and the numbers, or ``text`` saying why it is n/a.
    """
    from scipy.stats import ttest_rel

    if not runs:
        return {"text": "n/a: no finished run."}
    metric = runs[0]["valid_metric"]
    best = {}
    for kind in ("diffusion", "baseline"):
        candidates = [row for row in rows if row["kind"] == kind]
        if not candidates:
            return {"text": f"n/a: the comparison has no {kind} model."}
        best[kind] = max(candidates, key=lambda row: row["best_valid_score"])["model"]
    diff, base = best["diffusion"], best["baseline"]
    by_seed = {(run["model"], run["seed"]): run["test"][metric] for run in runs}
    seeds = sorted(s for (m, s) in by_seed if m == diff and (base, s) in by_seed)
    out = {"metric": metric, "diffusion": diff, "baseline": base, "seeds": seeds}
    head = (f"Best diffusion model (by mean validation {metric}): {diff}; best baseline: {base}. "
            f"Test {metric}, paired over seeds {', '.join(map(str, seeds)) or '-'}: ")
    if len(seeds) < 2:
        out["text"] = head + f"n/a ({len(seeds)} seed; a paired test needs at least 2)."
        return out
    a = [by_seed[(diff, s)] for s in seeds]
    b = [by_seed[(base, s)] for s in seeds]
    out["mean_difference"] = statistics.mean(x - y for x, y in zip(a, b))
    if len({round(x - y, 12) for x, y in zip(a, b)}) == 1:
        # every seed gives the same difference: the t statistic is undefined (zero variance)
        out["text"] = head + (f"{diff} - {base} = {out['mean_difference']:+.4f} on every seed; "
                              f"t-test n/a (no variance).")
        return out
    t, p = ttest_rel(a, b)
    out.update(t=float(t), p=float(p), significant=bool(p < SIGNIFICANCE_LEVEL))
    verdict = "significant" if out["significant"] else "not significant"
    direction = "lead" if out["mean_difference"] > 0 else "deficit"
    out["text"] = head + (f"{diff} - {base} = {out['mean_difference']:+.4f} (mean), t = {t:.2f}, p = {p:.3g} "
                          f"(two-sided paired t-test, scipy.stats.ttest_rel): the {direction} is {verdict} "
                          f"at {SIGNIFICANCE_LEVEL}.")
    return out


class _ThreeFigures:
    """A number format (``.format`` like a format string's): 3 significant figures with their trailing zeros
    (2.00, 0.418, 1.60), whole numbers from 100 on (169, 1234)."""

    @staticmethod
    def format(value):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:#.3g}".rstrip(".")


# column key -> (header, which mean is best, number format); metric columns: higher is best, 4 decimals.
_OTHER_COLUMNS = {
    "sec_per_epoch": ("train s/epoch", min, _ThreeFigures),
    "epochs_trained": ("epochs", None, "{:.1f}"),
    "infer_ms_per_user": ("infer ms/user", min, _ThreeFigures),
    "params": ("params", min, "{:,.0f}"),
}


def _columns(metrics):
    return [(m, m, max, "{:.4f}") for m in metrics] + [(k, *v) for k, v in _OTHER_COLUMNS.items()]


def _cell(fmt, mean, std):
    if mean is None:
        return "-"
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if std is not None else "")


def markdown_table(rows, metrics):
    """The md table; the best mean of each marked column is bold (all of them on a tie at the shown precision)."""
    columns = _columns(metrics)
    lines = ["| model | kind | seeds | " + " | ".join(c[1] for c in columns) + " |",
             "|---|---|---:|" + "---:|" * len(columns)]
    best = {}
    for key, _, pick, fmt in columns:
        means = [row["values"][key][0] for row in rows if row["values"][key][0] is not None]
        if pick is not None and means:
            best[key] = fmt.format(pick(means))
    for row in rows:
        cells = []
        for key, _, _, fmt in columns:
            mean, std = row["values"][key]
            cell = _cell(fmt, mean, std)
            cells.append(f"**{cell}**" if mean is not None and best.get(key) == fmt.format(mean) else cell)
        lines.append(f"| {row['model']} | {row['kind']} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    return lines


def csv_text(rows, metrics):
    """The csv: one row per model, ``<column>_mean`` and ``<column>_std`` at full precision (std empty for 1 seed)."""
    columns = _columns(metrics)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "kind", "seeds"] + [f"{c[0]}_{s}" for c in columns for s in ("mean", "std")])
    for row in rows:
        cells = [row["model"], row["kind"], " ".join(map(str, row["seeds"]))]
        for key, *_ in columns:
            cells += ["" if v is None else repr(v) for v in row["values"][key]]
        writer.writerow(cells)
    return buffer.getvalue()


def write_plot(path, rows, metrics, title):
    """Bar chart: test metrics grouped by metric, then training s/epoch and inference ms/user; std error bars.

    Baselines are hatched. Drawn on matplotlib's Agg canvas without pyplot, so no global backend is touched.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(rows)
    colors = [colormaps["tab10"](i % 10) for i in range(n)]
    hatches = ["" if row["kind"] == "diffusion" else "//" for row in rows]
    fig = Figure(figsize=(3 + 1.1 * max(len(metrics), 1) + 1.0 * n, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [max(len(metrics), 1) + 1, 1 + n / 3, 1 + n / 3]})
    width = 0.8 / max(n, 1)
    for i, row in enumerate(rows):
        means = [row["values"][m][0] or 0 for m in metrics]
        stds = [row["values"][m][1] or 0 for m in metrics]
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(metrics))]
        axes[0].bar(xs, means, width, yerr=stds, capsize=2, color=colors[i], hatch=hatches[i],
                    edgecolor="black", linewidth=0.4, label=f"{row['model']} ({row['kind']})")
    axes[0].set_xticks(range(len(metrics)), metrics)
    axes[0].set_ylabel("test value (best-validation epoch)")
    axes[0].legend(fontsize="small")
    for ax, key, label in ((axes[1], "sec_per_epoch", "training s/epoch"),
                           (axes[2], "infer_ms_per_user", "inference ms/user")):
        ax.bar(range(n), [row["values"][key][0] or 0 for row in rows],
               yerr=[row["values"][key][1] or 0 for row in rows], capsize=3, color=colors, hatch=hatches,
               edgecolor="black", linewidth=0.4)
        ax.set_xticks(range(n), [row["model"] for row in rows], rotation=45, ha="right")
        ax.set_title(label, fontsize="medium")
    fig.suptitle(title + " (mean ± std over seeds)")
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def below_floor(rows, runs):
    """Models whose mean test value of the validation metric is not above the popularity floor's: (floor row
    or None, [model names])."""
    floor = next((row for row in rows if row["kind"] == "floor"), None)
    if floor is None or not runs:
        return None, []
    metric = runs[0]["valid_metric"]
    level = floor["values"][metric][0]
    return floor, [row["model"] for row in rows if row["kind"] != "floor" and row["values"][metric][0] <= level]


def _duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def time_to_quality(runs, models):
    """Markdown lines: per model, epochs and wall time (training + validation) to its best validation score and
    to the reference's (SASRec's, else the strongest baseline's) best validation score of the same seed (their mean
    over seeds for a seed the reference did not run). Empty without curves."""
    curved = [r for r in runs if r.get("valid_curve") and r["kind"] != "floor"]
    if not curved:
        return []
    metric = curved[0]["valid_metric"]
    baselines = {}
    for r in curved:
        if r["kind"] == "baseline":
            baselines.setdefault(r["model"], {})[r["seed"]] = r["best_valid_score"]
    reference = "SASRec" if "SASRec" in baselines else max(
        baselines, key=lambda m: statistics.mean(baselines[m].values()), default=None)
    targets = baselines.get(reference, {})
    fallback = statistics.mean(targets.values()) if targets else None
    per_seed = ", ".join(f"{targets[seed]:.4f} (seed {seed})" for seed in sorted(targets))
    lines = ["", f"**Time to quality** (wall time of training plus validation after each epoch, "
                 f"{curved[0].get('threads', '?')} thread(s), mean over seeds; in brackets, epochs x the run's "
                 f"median epoch, which discounts epochs slowed by other jobs on the machine)"
             + (f"; each run's target is {reference}'s best validation {metric} of the same seed: {per_seed} "
                f"(their mean, {fallback:.4f}, for a seed {reference} did not run)." if reference else "."),
             "", f"| model | median epoch (train + valid) | epochs to its best | time to its best | "
                 f"epochs to {reference or 'target'} | time to {reference or 'target'} |",
             "|---|---:|---:|---:|---:|---:|"]

    def times(points):  # points: (run, curve point) pairs
        return (f"{_duration(statistics.mean(p[2] + p[3] for _, p in points))} "
                f"({_duration(statistics.mean(p[0] * _epoch_pace(r) for r, p in points))})")

    for model in models:
        mine = [r for r in curved if r["model"] == model]
        if not mine:
            continue
        to_best = [(r, next(p for p in r["valid_curve"] if p[0] == r["best_epoch"])) for r in mine if r["best_epoch"]]
        cells = [f"{statistics.mean(_epoch_pace(r) for r in mine):.0f} s",
                 f"{statistics.mean(p[0] for _, p in to_best):.1f}" if to_best else "-",
                 times(to_best) if to_best else "-"]
        if fallback is None:
            cells += ["-", "-"]
        else:
            reached = [(r, next((p for p in r["valid_curve"] if p[1] >= targets.get(r["seed"], fallback)), None))
                       for r in mine]
            hits = [(r, p) for r, p in reached if p is not None]
            note = "" if len(hits) == len(mine) else f" ({len(hits)} of {len(mine)} seeds; others never)"
            cells += ([f"{statistics.mean(p[0] for _, p in hits):.1f}{note}", times(hits)] if hits
                      else ["never", "-"])
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def runs_in_progress(output_dir):
    """Markdown lines on the runs cut short or still training in ``output_dir/progress/``: epochs done and the
    best validation score so far (from each run's saved state). Empty when there is none."""
    rows = []
    for path in sorted(glob.glob(os.path.join(output_dir, "progress", "*.pth"))):
        try:
            state = load_checkpoint(path)
        except CheckpointError:
            continue
        model, seed, _ = os.path.basename(path).rsplit("-", 2)
        curve = state.get("curve") or []
        if not curve:
            continue
        # the last epoch with the highest score: RecBole's early stopping keeps a tie as the new best
        best = max(reversed(curve), key=lambda point: point[1])
        rows.append(f"| {model} | {seed[len('seed'):]} | {curve[-1][0]} | {best[1]:.4f} (epoch {best[0]}) | "
                    f"{_duration(curve[-1][2] + curve[-1][3])} |")
    if not rows:
        return []
    return ["", "**Runs in progress** (not in the table: state saved after their last validation, continued by "
                "rerunning the command)", "", "| model | seed | epochs done | best validation so far | time so far |",
            "|---|---:|---:|---:|---:|", *rows]


def write_report(output_dir, runs, models, header, plot=True):
    """Write comparison.md, .csv (and .png) for ``runs``; returns (summary rows, metrics, significance)."""
    rows, metrics = summarize(runs, models)
    significance = paired_test(rows, runs)
    floor, below = below_floor(rows, runs)
    table = markdown_table(rows, metrics)
    floor_text = []
    if floor is not None:
        metric = runs[0]["valid_metric"]
        for name in below:
            index = next(i for i, line in enumerate(table) if line.startswith(f"| {name} |"))
            table[index] = table[index].replace(f"| {name} |", f"| {name} (not above popularity) |", 1)
        floor_text = ["", f"**Popularity floor.** {floor['model']} (items ranked by training frequency, same split "
                          f"and evaluator): test {metric} {floor['values'][metric][0]:.4f}. "
                      + (f"Not above it: {', '.join(below)}." if below else "Every model is above it." if any(
                          row["kind"] != "floor" for row in rows) else "No other model has finished yet.")]
    lines = header + [""] + table + floor_text + runs_in_progress(output_dir) + [
        "", "**Significance.** " + significance["text"]] + time_to_quality(runs, models) + ["", _COLUMN_NOTE]
    write_text(os.path.join(output_dir, "comparison.md"), "\n".join(lines) + "\n")
    write_text(os.path.join(output_dir, "comparison.csv"), csv_text(rows, metrics))
    if plot and rows:
        write_plot(os.path.join(output_dir, "comparison.png"), rows, metrics, header[0].lstrip("# "))
    return rows, metrics, significance


_COLUMN_NOTE = (
    "Columns: test metrics of each run's best-validation epoch, mean ± standard deviation over seeds (best mean "
    "in bold: highest for metrics, lowest for time and size). *train s/epoch*: wall time of RecBole's "
    "`_train_epoch` (training only), median over the epochs trained; *epochs*: epochs trained (early stopping); "
    "*infer ms/user*: wall time of the full-ranking test evaluation / test users; *params*: model parameters. "
    "Every number of every run is in runs.jsonl."
)


# ----------------------------------------------------------------------------------------------------------
# The comparison
# ----------------------------------------------------------------------------------------------------------
def run_config(model, dataset, files, config_dict=None, budget_epochs=None, output_dir=".", keep_checkpoints=False):
    """The Config of one model's runs in a comparison (its seed is set per run): the configuration files and
    overrides, reproducibility on, the equal budget where one is given (not for the popularity floor, which learns
    nothing: one pass), and the kept best models in ``output_dir/checkpoints``."""
    config = Config(model=model, dataset=dataset, config_file_list=files or None, config_dict=config_dict)
    config["reproducibility"] = True
    if budget_epochs is not None and not is_floor(model):
        config["epochs"] = budget_epochs
    if keep_checkpoints:
        config["checkpoint_dir"] = os.path.join(output_dir, "checkpoints")
    return config


def progress_path(output_dir, model, seed, key):
    """Where a comparison keeps the state of the run of ``model`` with ``seed`` and settings ``key`` until it ends."""
    return os.path.join(output_dir, "progress", f"{model}-seed{seed}-{key}.pth")


def compare(models, dataset, seeds=3, config_file_list=None, model_config_files=None, config_dict=None,
            budget_epochs=None, output_dir=None, keep_checkpoints=False, popularity_floor=True, say=_say,
            model_seeds=None, report_only=False, fork_from=None, test_curve=False):
    """Train and test every model with every seed on one prepared dataset; write the report files.

    Args:
        models (list of str): model names (ours or RecBole's), each once.
        dataset (str): dataset name.
        seeds (int): runs per model; run ``i`` uses seed ``base + i`` (``base``: the shared settings' seed).
        model_seeds (dict): model name -> its own number of runs, instead of ``seeds`` (e.g. 3 for the two
            models of the paired test, 2 for the others).
        config_file_list (list of str): yaml files for every model.
        model_config_files (dict): model name -> a yaml of overrides for that model only (e.g. a tuned config),
            applied after ``config_file_list``.
        config_dict (dict): overrides for every model.
        budget_epochs (int): if given, ``epochs`` for every model.
        output_dir (str): where the files go (default ``compare_<dataset>``).
        keep_checkpoints (bool): also keep each run's best model on disk under ``output_dir/checkpoints``, and
            its state after its last validation (``<model>-seed<seed>-<settings>.last.pth``, to fork from).
        popularity_floor (bool): add the popularity model of the protocol (SeqPop or Pop) as the first row.
        report_only (bool): train nothing; write the report of the runs already in ``runs.jsonl`` (e.g. of
            several processes that trained parts of one comparison into the same ``output_dir``).
        fork_from (str): the ``checkpoints`` folder of another comparison run with ``keep_checkpoints``: a run
            with decay on plateau and no state of its own starts from the last state of the same run without it
            there, where that run stopped at its plateau (:func:`fork_at_plateau`).
        test_curve (bool): a diagnostic: also test every validated epoch's model (``test_curve`` in each record;
            selection stays on validation). Not part of a run's identity.
        say (callable): receives each progress line.

    Returns:
        dict: ``runs`` (the records in the table, one per (model, seed): model, seed, kind, settings, test and
        valid metrics, best_valid_score, best_epoch, epochs_trained, sec_per_epoch, epoch_seconds,
        infer_ms_per_user, test_users, params, device), ``summary`` (per-model rows), ``metrics``,
        ``significance``, ``trained`` (runs trained by this call), ``resumed`` (runs read back at the start),
        ``elsewhere`` (runs other workers finished into the same folder while this call ran), ``files``.
    """
    config_file_list = [os.path.abspath(f) for f in (config_file_list or [])]
    model_config_files = {m: os.path.abspath(f) for m, f in (model_config_files or {}).items()}
    model_seeds = dict(model_seeds or {})
    check_inputs(list(models), seeds, model_config_files, config_file_list, budget_epochs, model_seeds)
    models = list(models)
    if popularity_floor and not any(is_floor(m) for m in models):
        models.insert(0, popularity_floor_for(models))
    output_dir = os.path.abspath(output_dir or f"compare_{dataset}")
    ours = set(our_model_names())

    shared = Config(model=models[0], dataset=dataset, config_file_list=config_file_list or None,
                    config_dict=config_dict)
    base_seed = shared["seed"]
    runs_of = {model: model_seeds.get(model, seeds) for model in models}
    seed_list = [base_seed + i for i in range(max(runs_of.values()))]
    init_logger(shared)

    # One Config per model, checked now so that a bad hyperparameter stops the comparison before any training.
    configs = {}
    for model in models:
        files = config_file_list + ([model_config_files[model]] if model in model_config_files else [])
        config = run_config(model, dataset, files, config_dict, budget_epochs, output_dir, keep_checkpoints)
        if isinstance(config["epochs"], bool) or not isinstance(config["epochs"], int) or config["epochs"] < 1:
            raise RecBoleDiffusionError(f"epochs={config['epochs']!r} for {model}: a comparison trains at least 1.")
        preflight(config, say)
        configs[model] = (config, files)

    if fork_from is not None:
        if not os.path.isdir(fork_from):
            raise RecBoleDiffusionError(f"--fork_from={fork_from}: no such folder. Give the checkpoints folder of a "
                                        f"comparison run with --keep_checkpoints=True (its <output_dir>/checkpoints).")
        if not any(config["lr_plateau_decays"] for config, _ in configs.values()):
            raise RecBoleDiffusionError("--fork_from continues runs past their plateau: it needs decay on plateau, "
                                        "e.g. --lr_plateau_decays=1 --lr_gamma=0.1.")
        fork_from = os.path.abspath(fork_from)

    # Command-line options: one that no compared model knows is an error; one that some ignore is reported.
    unknown = {model: set(unknown_command_line_keys(configs[model][0])) for model in models}
    nobody = [key for key in shared.cmd_config_dict if all(key in unknown[m] for m in models)]
    if nobody:
        raise unknown_key_error(nobody, configs[models[-1]][0])
    ignored = {key: [m for m in models if key in unknown[m]] for key in shared.cmd_config_dict
               if any(key in unknown[m] for m in models)}

    os.makedirs(output_dir, exist_ok=True)
    runs_path = os.path.join(output_dir, "runs.jsonl")
    identities = []  # (model, seed, settings) of every run of this comparison, seed-major
    for number, seed in enumerate(seed_list):  # seed-major: a cut-short comparison has every model at its first seeds
        for model in (m for m in models if number < runs_of[m]):
            config, _ = configs[model]
            config["seed"] = seed
            identities.append((model, seed, settings_key(config)))
    wanted, done = set(identities), {}

    def read_back():
        """Takes in the runs of this comparison found in runs.jsonl (at the start: finished by earlier calls;
        later: by other workers sharing the folder); returns the (model, seed) pairs new to ``done``."""
        new = []
        for record in reversed(load_runs(runs_path, say)):  # a run recorded twice: its last record counts
            identity = (record["model"], record["seed"], record["settings"])
            if identity in wanted and identity[:2] not in done:
                done[identity[:2]] = record
                new.append(identity[:2])
        return new

    read_back()
    plan = [identity for identity in identities if identity[:2] not in done]
    total, resumed = sum(runs_of.values()), len(done)
    if done:
        say(f"resuming: {len(done)} of {total} runs already in {runs_path}")
    if report_only:
        say(f"report only: {len(plan)} of {total} runs not finished yet, none trained now")
        plan = []

    # The datasets the pending runs need: one per distinct dataset settings, created before any training.
    datasets, dataset_keys, first_settings = {}, {}, None
    for model in dict.fromkeys(m for m, _, _ in plan):
        config, _ = configs[model]
        settings = dataset_settings(config)
        key = json.dumps(settings, sort_keys=True)
        if first_settings is None:
            first_settings = settings
        elif key not in datasets:
            differ = ", ".join(f"{k}={settings[k]!r} (not {first_settings[k]!r})"
                               for k in settings if settings[k] != first_settings[k])
            say(f"{model}: dataset settings differ ({differ}): building its own dataset")
        if key not in datasets:
            start = time.perf_counter()
            datasets[key] = create_dataset(config)
            say(f"dataset {dataset} created for {model} in {time.perf_counter() - start:.1f} s; shared by every "
                f"model with the same dataset settings")
        dataset_keys[model] = key

    budget = (f"{budget_epochs} for every model (equal budget)" if budget_epochs else
              "each model's own setting, early stopping on validation")
    header = [f"# Model comparison on {dataset}", "",
              f"Models: {', '.join(models)}. Seeds: {', '.join(map(str, seed_list))}"
              + ("" if len(set(runs_of.values())) == 1 else " (the first " + ", ".join(
                  f"{runs_of[m]} for {m}" for m in models if runs_of[m] != len(seed_list)) + ")")
              + " (reproducibility on). "
              f"Epochs: {budget}. Device: {shared['device']}. One prepared dataset shared by every model with the "
              f"same dataset settings; eval_args {_canonical(shared['eval_args'])}, best epoch by validation "
              f"{shared['valid_metric']}."]
    if ignored:
        header += ["", "Command-line options that some models do not read: " + "; ".join(
            f"--{key} (ignored by {', '.join(names)})" for key, names in ignored.items()) + "."]

    def current_runs():
        return [done[(m, s)] for s in seed_list for m in models if (m, s) in done]

    def report(plot):
        finished = len(done)
        note = [f"Written {datetime.datetime.now():%Y-%m-%d %H:%M}; {finished} of {total} runs finished"
                + ("." if finished == total else " (partial table: the comparison is still running or was stopped).")]
        return write_report(output_dir, current_runs(), models, header + note, plot=plot)

    def run_one(model, seed, key, label, progress_file):
        config, files = configs[model]
        config["seed"] = seed
        say(f"{label}: training (epochs <= {config['epochs']}, valid metric {config['valid_metric']})")
        start = time.perf_counter()
        kind = "floor" if is_floor(model) else "diffusion" if model in ours else "baseline"
        record = {"model": model, "dataset": dataset, "seed": seed, "settings": key, "kind": kind,
                  "config_files": files}
        dataset_copy = copy.deepcopy(datasets[dataset_keys[model]])  # build() rewrites it: the original stays unbuilt
        if fork_from:
            fork_at_plateau(config, key, fork_from, progress_file, lambda line: say(f"{label}: {line}"))
        record.update(train_and_test(config, dataset_copy, label, keep_checkpoints, say, progress_file, key,
                                     test_curve=test_curve))
        record["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        _append_run(runs_path, record)  # before the claim is released: no other worker can start it again
        if os.path.exists(progress_file):
            if keep_checkpoints:  # the last state, to continue the run later (fork_at_plateau)
                os.replace(progress_file, last_state_path(config["checkpoint_dir"], model, seed, key))
            else:
                os.remove(progress_file)
        done[(model, seed)] = record
        metric = record["valid_metric"]
        say(f"{label}: done in {time.perf_counter() - start:.1f} s, {record['epochs_trained']} epochs "
            f"(best {record['best_epoch']}), test {metric} {record['test'].get(metric, float('nan')):.4f}, "
            f"{record['sec_per_epoch']:.3g} s/epoch, {record['infer_ms_per_user']:.3g} ms/user")

    # Several workers (processes, machines sharing the folder) may run this same comparison into one output_dir:
    # each run is claimed by exactly one of them (progress/<run>.claim), and each reads back the others' runs.
    trained, held, elsewhere = 0, [], []
    for number, (model, seed, key) in enumerate(plan, 1):
        label = f"[{number}/{len(plan)}] {model} seed {seed}"
        progress_file = progress_path(output_dir, model, seed, key)
        os.makedirs(os.path.dirname(progress_file), exist_ok=True)
        claim_file = progress_file[:-len(".pth")] + ".claim"
        elsewhere += read_back()
        if (model, seed) in done:
            say(f"{label}: finished by another worker; read back from {runs_path}")
            continue
        holder = claim_run(claim_file)
        if holder is not None:
            held.append((model, seed))
            say(f"{label}: another worker is training it (pid {holder.get('pid')} on {holder.get('host')}); "
                f"skipped here")
            continue
        try:
            elsewhere += read_back()  # it may have finished between the check above and the claim
            if (model, seed) in done:
                say(f"{label}: finished by another worker; read back from {runs_path}")
                continue
            run_one(model, seed, key, label, progress_file)
            trained += 1
        finally:
            release_run(claim_file)
        elsewhere += read_back()  # what other workers finished meanwhile belongs in this table too
        report(plot=False)

    elsewhere += read_back()
    rows, metrics, significance = report(plot=True)
    held = [run for run in held if run not in done]
    if held:
        say(f"not finished yet, held by other workers: {', '.join(f'{m} seed {s}' for m, s in held)}; when they "
            f"end, rerun with --report_only=True for the whole table")
    files = {name: os.path.join(output_dir, name)
             for name in ("comparison.md", "comparison.csv", "comparison.png", "runs.jsonl")}
    say(f"comparison written to {files['comparison.md']} (.csv, .png; every run in runs.jsonl)")
    return {"runs": current_runs(), "summary": rows, "metrics": metrics, "significance": significance,
            "trained": trained, "resumed": resumed, "elsewhere": len(elsewhere),
            "files": files}
