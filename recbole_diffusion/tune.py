"""Ray Tune sweeps for any model this package runs, ours or RecBole's:
``run_recbole_diffusion.py --model=DiffuRec --dataset=ml-100k --tune=properties/hyper/DiffuRec.yaml``.

RecBole's own Ray path (``run_hyper.py --tool Ray``) does not work with the Ray that RecBole 1.2.1 allows: it
reports the *test* result, nested, so the scheduler's metric is missing, and it asks one GPU per trial, so CPU
trials wait forever. Each trial here is our own function trainable (:func:`_train_trial`):

* it trains through ``quick_start.build`` and ``Trainer.fit`` with its sampled config, and reports the flat
  validation metrics (``ndcg@10``, ``hit@10``, ...), ``epoch`` and ``best_epoch`` after every evaluation, so ASHA
  can stop bad trials early;
* its best model is our safe checkpoint in ``<trial dir>/checkpoints/``; with every report it also hands Ray a
  checkpoint (the epoch's training state and the best model), from which ``--resume`` continues the trials that
  an interruption left unfinished (``Tuner.restore``);
* a last report adds the test metrics of the best-valid model (``test_ndcg@10``, ...);
* a crash (an exception, a NaN loss, out of memory) fails that trial only; the sweep goes on.

At the end the output folder holds ``trials.csv`` and ``trials.md`` (every trial, sorted by the validation
metric), ``best.yaml`` (the tuned keys of the best trial, for ``--config_files``) and ``valid_curves.png``.

The search-space format is documented in :data:`DISTRIBUTIONS` and at the top of every ``properties/hyper/`` file.
Ray is imported inside functions only, so ``import recbole_diffusion`` stays Ray-free.
"""

import csv
import io
import json
import math
import os
import random
import re
import shutil
import sys

import yaml

from recbole_diffusion import search
from recbole_diffusion.utils import RecBoleDiffusionError, did_you_mean, write_atomic, write_text

# name -> its arguments in the yaml, e.g. ``learning_rate: {loguniform: [1e-4, 1e-2]}``
DISTRIBUTIONS = {
    "choice": "[a, b, ...]",  # one of the values, drawn for each trial
    "grid": "[a, b, ...]",  # every value; each grid point runs num_samples times, and grids multiply
    "uniform": "[lo, hi]",  # a float between lo and hi
    "quniform": "[lo, hi, q]",  # a float between lo and hi, rounded to a multiple of q
    "loguniform": "[lo, hi]",  # a float between lo and hi, uniform in log scale (0 < lo; the bounds, not logs)
    "randint": "[lo, hi]",  # an integer from lo to hi, both included (Ray's upper bound is exclusive)
}
# set by the sweep itself for every trial, or fixed by the command line
_NOT_TUNABLE = ("model", "dataset", "data_path", "checkpoint_dir", "use_gpu", "gpu_id", "device")
_STATE_FILE = "trial_state.json"
_SNAPSHOT_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "1", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


class _SpaceLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; a search space means the number (as RecBole's own loader does)."""


_SpaceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?[eE][-+]?\d+|\.\d+[eE][-+]?\d+)$"),
    list("-+0123456789."),
)


class Dimension:
    """One tuned key of a search space: ``name: {kind: args}`` (see :data:`DISTRIBUTIONS`)."""

    def __init__(self, name, kind, args):
        self.name, self.kind, self.args = name, kind, list(args)

    def __repr__(self):
        return f"{self.name}: {{{self.kind}: {self.args}}}"

    def edge_values(self):
        """Values the model's own checks must accept: every listed value, or both ends of a range."""
        return list(self.args) if self.kind in ("choice", "grid") else list(self.args[:2])

    def sample(self, rng):
        """One value drawn with ``rng`` (a ``random.Random``), without Ray."""
        if self.kind in ("choice", "grid"):
            return rng.choice(self.args)
        lo, hi = self.args[:2]
        if self.kind == "randint":
            return rng.randint(lo, hi)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(lo), math.log(hi)))
        value = rng.uniform(lo, hi)
        if self.kind == "quniform":
            q = self.args[2]
            value = min(max(round(value / q) * q, lo), hi)
        return value

    def to_ray(self):
        from ray import tune

        if self.kind == "choice":
            return tune.choice(self.args)
        if self.kind == "grid":
            return tune.grid_search(self.args)
        if self.kind == "randint":
            return tune.randint(self.args[0], self.args[1] + 1)  # Ray's upper bound is exclusive
        return getattr(tune, self.kind)(*self.args)


def _space_error(path, name, problem, kind=None):
    example = f" Write it as {name}: {{{kind}: {DISTRIBUTIONS[kind]}}}." if kind else ""
    return RecBoleDiffusionError(f"Search space {path}: {name}: {problem}.{example}")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_dimension(path, name, spec):
    if not isinstance(spec, dict) or len(spec) != 1:
        raise _space_error(path, name, f"expected one {{distribution: arguments}}, got {spec!r}", "choice")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise RecBoleDiffusionError(
            f"Search space {path}: {name}: unknown distribution '{kind}'.{did_you_mean(str(kind), list(DISTRIBUTIONS))}"
            f" Use one of: {', '.join(DISTRIBUTIONS)}."
        )
    if not isinstance(args, list):
        raise _space_error(path, name, f"{kind} takes a list, got {args!r}", kind)
    if kind in ("choice", "grid"):
        if not args:
            raise _space_error(path, name, f"empty {kind} list: nothing to try", kind)
        return Dimension(name, kind, args)
    arity = 3 if kind == "quniform" else 2
    if len(args) != arity or not all(_is_number(a) for a in args):
        raise _space_error(path, name, f"{kind} takes {arity} numbers, got {args!r}", kind)
    lo, hi = args[:2]
    if lo >= hi:
        raise _space_error(path, name, f"empty range {args!r}: lo must be below hi", kind)
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise _space_error(path, name, f"randint takes integers, got {args!r}", kind)
    if kind == "loguniform" and lo <= 0:
        raise _space_error(path, name, f"loguniform needs 0 < lo, got {args!r}", kind)
    if kind == "quniform" and args[2] <= 0:
        raise _space_error(path, name, f"quniform needs q > 0, got {args!r}", kind)
    return Dimension(name, kind, args)


def load_space(path):
    """Read and validate a search-space yaml; returns ``{key: Dimension}`` in file order."""
    if not os.path.isfile(path):
        raise RecBoleDiffusionError(
            f"Search space file '{path}' not found. Each model's is properties/hyper/<Model>.yaml "
            f"(e.g. --tune=properties/hyper/DiffuRec.yaml)."
        )
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.load(f, Loader=_SpaceLoader)
        except yaml.YAMLError as err:
            line = str(err).replace("\n", " ")
            raise RecBoleDiffusionError(f"Search space {path} is not valid yaml: {line}") from None
    if not isinstance(raw, dict) or not raw:
        raise RecBoleDiffusionError(
            f"Search space {path} holds no keys. Write one line per key, "
            f"e.g. learning_rate: {{loguniform: [1e-4, 1e-2]}}."
        )
    return {str(name): _parse_dimension(path, name, spec) for name, spec in raw.items()}


def check_space(space, config, path):
    """Every key must be one of the model's configuration keys, and every listed value or range end must pass the
    model's own hyperparameter checks (``config`` is the model's resolved Config; it is left unchanged)."""
    from recbole_diffusion.quick_start import _check_model_config

    known = list(config.final_config_dict)
    for name, dim in space.items():
        if name in _NOT_TUNABLE:
            raise RecBoleDiffusionError(
                f"Search space {path}: {name} cannot be tuned: the sweep sets it (use --{name}=<value> for all trials)."
            )
        if name not in config:
            raise RecBoleDiffusionError(
                f"Search space {path}: {config['model']} has no key '{name}'.{did_you_mean(name, known)} "
                f"Its keys are in properties/model/{config['model']}.yaml and RecBole's documentation."
            )
    for name, dim in space.items():
        before = config[name]
        try:
            for value in dim.edge_values():
                config[name] = value
                try:
                    _check_model_config(config)
                except RecBoleDiffusionError as err:
                    raise RecBoleDiffusionError(f"Search space {path}: {dim} allows {name}={value!r}: {err}") from None
        finally:
            config[name] = before


def sample_space(space, seed=0):
    """One configuration drawn from ``space`` without Ray (a grid counts as a choice)."""
    rng = random.Random(seed)
    return {name: dim.sample(rng) for name, dim in space.items()}


def valid_metric_names(config):
    """The keys of RecBole's valid/test result dicts for this config, e.g. ``hit@5 ... ndcg@20``."""
    from recbole.evaluator.base_metric import TopkMetric
    from recbole.evaluator.register import metrics_dict

    names = []
    for metric in (m.lower() for m in config["metrics"]):
        topk = issubclass(metrics_dict[metric], TopkMetric)
        names += [f"{metric}@{k}" for k in config["topk"]] if topk else [metric]
    return names


# ---------------------------------------------------------------------------------------------------------------
# The trainable: runs inside a Ray worker, in the trial's own directory


def _link_or_copy(src, dst):
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class _TrialState:
    """What a trial must carry across an interruption besides the weights: its best epoch and best valid result."""

    def __init__(self, best_epoch=None, best_valid_result=None, finished=False, best_model_name=None, final=None):
        self.best_epoch, self.best_valid_result = best_epoch, best_valid_result
        self.finished, self.best_model_name = finished, best_model_name
        self.final = final  # the last report (test metrics included) once the trial is tested

    def save(self, folder):
        with open(os.path.join(folder, _STATE_FILE), "w") as f:
            json.dump(vars(self), f)

    @classmethod
    def load(cls, folder):
        with open(os.path.join(folder, _STATE_FILE)) as f:
            return cls(**json.load(f))


def _resume_from(checkpoint, trainer, state):
    """Load a Ray checkpoint written by :func:`_epoch_checkpoint` into ``trainer`` and ``state``."""
    with checkpoint.as_directory() as folder:
        saved = _TrialState.load(folder)
        trainer.resume_checkpoint(os.path.join(folder, "last.pth"))
        # resume_checkpoint points saved_model_file at the file it read; the best model keeps its own file
        trainer.saved_model_file = os.path.join(trainer.checkpoint_dir, saved.best_model_name)
        if not os.path.isfile(trainer.saved_model_file):  # resumed on another node
            shutil.copy2(os.path.join(folder, "best.pth"), trainer.saved_model_file)
    vars(state).update(vars(saved))


def _epoch_checkpoint(trainer, epoch, state, staging):
    """A Ray checkpoint of this epoch: the training state (weights, optimizer, early-stopping counters) as
    ``last.pth``, the best model as ``best.pth`` (both our safe format) and the trial state."""
    from recbole_diffusion.ray_api import api

    os.makedirs(staging, exist_ok=True)
    trainer._save_checkpoint(epoch, verbose=False, saved_model_file=os.path.join(staging, "last.pth"))
    _link_or_copy(trainer.saved_model_file, os.path.join(staging, "best.pth"))
    state.best_model_name = os.path.basename(trainer.saved_model_file)
    state.save(staging)
    return api().Checkpoint.from_directory(staging)


def _trial_config(sampled, spec, trial_dir):
    """The trial's Config, its logger set up: the shared settings, the drawn values, and what the trial owns."""
    import logging

    import ray
    import torch
    from recbole.utils import init_logger, init_seed

    from recbole_diffusion.config import Config

    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from argv: a Ray worker's are not config keys
    # RecBole sets CUDA_VISIBLE_DEVICES to gpu_id and trains on "cuda" whenever gpu_id is not empty (use_gpu is not
    # asked): the trial gets exactly the GPUs Ray gave it, and a CPU trial the empty gpu_id
    gpu_id = ",".join(str(i) for i in ray.get_gpu_ids()) if spec["gpus_per_trial"] > 0 else ""
    no_cuda = bool(gpu_id) and not torch.cuda.is_available()
    if no_cuda:  # a node that declares GPUs (ray start --num-gpus) without CUDA: train anyway, on the CPU
        gpu_id = ""
    use_gpu = bool(gpu_id)
    # progress bars of trials running side by side would interleave on the driver's console
    config_dict = dict(spec["config_dict"], **sampled, checkpoint_dir=os.path.join(trial_dir, "checkpoints"),
                       show_progress=False, use_gpu=use_gpu, gpu_id=gpu_id)
    config = Config(model=spec["model"], dataset=spec["dataset"], config_file_list=spec["config_file_list"],
                    config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)  # the full log stays in the trial's log/ folder
    if no_cuda:
        warning = (f"Warning: Ray gave this trial GPU {','.join(str(i) for i in ray.get_gpu_ids())} of node "
                   f"{ray.get_runtime_context().get_node_id()[:8]}, but torch finds no CUDA device there: the trial "
                   f"trains on the CPU. Declare only real GPUs (ray start --num-gpus), or pass --gpus_per_trial=0.")
        print(warning, file=sys.stderr)  # on the driver's console through Ray, and in the worker's .err log
        logging.getLogger().info(warning)  # in the trial's own log file (the console shows warnings only)
    return config


def _train_trial(sampled, spec):
    """One trial: ``sampled`` is the configuration Ray drew, ``spec`` what all trials share (see :func:`run_sweep`)."""
    import torch

    from recbole_diffusion.quick_start import build
    from recbole_diffusion.ray_api import api
    from recbole_diffusion.trainer import SafeCheckpointMixin

    import ray

    session = api()
    trial_dir = session.trial_dir()
    torch.set_num_threads(max(1, int(spec["cpus_per_trial"])))
    config = _trial_config(sampled, spec, trial_dir)
    # where this attempt runs, with every report: a trial retried after a lost node shows both nodes
    placement = {"node_id": ray.get_runtime_context().get_node_id(), "device": str(config["device"]),
                 "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()) if spec["gpus_per_trial"] > 0 else ""}
    _, train_data, valid_data, test_data, _, trainer = build(config)

    state = _TrialState()
    resumable = isinstance(trainer, SafeCheckpointMixin)
    checkpoint = session.get_checkpoint()
    if checkpoint is not None and resumable:
        _resume_from(checkpoint, trainer, state)
    if state.final is not None:  # finished and tested before an interruption: only its last report was lost
        session.report(dict(state.final, **placement))
        return

    # fit's callback gets the valid score only: keep the whole valid result of each evaluation
    last_valid = {}
    valid_epoch = trainer._valid_epoch

    def remembering_valid_epoch(*args, **kwargs):
        score, result = valid_epoch(*args, **kwargs)
        last_valid.update(result)
        return score, result

    trainer._valid_epoch = remembering_valid_epoch
    staging = os.path.join(trial_dir, "resume_state")

    def report_epoch(epoch, valid_score):
        if trainer.cur_step == 0:  # this evaluation was the best so far (early_stopping reset its counter)
            state.best_epoch, state.best_valid_result = epoch, dict(last_valid)
        state.finished = trainer.cur_step > trainer.stopping_step or epoch + 1 >= trainer.epochs
        metrics = dict(last_valid, epoch=epoch, best_epoch=state.best_epoch, final=False, **placement)
        epoch_checkpoint = _epoch_checkpoint(trainer, epoch, state, staging) if resumable else None
        session.report(metrics, checkpoint=epoch_checkpoint)

    if not state.finished:
        trainer.fit(train_data, valid_data, saved=True, callback_fn=report_epoch)
    test_result = trainer.evaluate(test_data, load_best_model=True)
    final = dict(state.best_valid_result or {}, epoch=state.best_epoch, best_epoch=state.best_epoch, final=True)
    final.update({f"test_{key}": float(value) for key, value in test_result.items()})
    state.final = final
    # the last report carries a checkpoint too: a sweep interrupted before it recorded this trial as finished
    # resumes it to this report, not to another evaluation
    final_checkpoint = _epoch_checkpoint(trainer, state.best_epoch, state, staging) if resumable else None
    session.report(dict(final, **placement), checkpoint=final_checkpoint)
    shutil.rmtree(staging, ignore_errors=True)  # Ray keeps its own copy of the last checkpoint


def _trial_dirname(trial):
    return f"trial_{trial.trial_id}"


# ---------------------------------------------------------------------------------------------------------------
# The driver


def _check_numbers(num_samples, cpus_per_trial, gpus_per_trial, scheduler, max_failures=0):
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise RecBoleDiffusionError(f"--num_samples={num_samples!r}: must be a positive integer.")
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise RecBoleDiffusionError(
            f"--max_failures={max_failures!r}: must be an integer >= 0 (the retries of a trial whose node or process "
            f"died; 0 never retries)."
        )
    if not _is_number(cpus_per_trial) or not 0 < cpus_per_trial < math.inf:
        raise RecBoleDiffusionError(f"--cpus_per_trial={cpus_per_trial!r}: must be a number > 0.")
    if gpus_per_trial is not None:
        if not _is_number(gpus_per_trial) or not 0 <= gpus_per_trial < math.inf:
            raise RecBoleDiffusionError(f"--gpus_per_trial={gpus_per_trial!r}: must be a number >= 0.")
        if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
            raise RecBoleDiffusionError(
                f"--gpus_per_trial={gpus_per_trial}: above 1 it must be a whole number (Ray shares a GPU between "
                f"trials only with fractions below 1, e.g. 0.5 for two trials per GPU)."
            )
    if scheduler not in (None, "none", "asha"):
        raise RecBoleDiffusionError(
            f"--scheduler={scheduler}: use asha (stop bad trials early) or none."
            + did_you_mean(str(scheduler), ["asha"])
        )


def _trial_resources(ray, cpus, gpus):
    """``{'cpu', 'gpu'}`` for one trial, checked against the nodes of the running Ray cluster."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    cluster_gpus = sum(node.get("GPU", 0) for node in nodes)
    if gpus is None:
        gpus = 1 if cluster_gpus else 0
    if gpus > 0 and not cluster_gpus:
        raise RecBoleDiffusionError(
            f"--gpus_per_trial={gpus:g}, but the Ray cluster has no GPU: no trial could ever start (they would wait "
            f"forever). Pass --gpus_per_trial=0 (the default without GPUs) or a --ray_address with GPU nodes."
        )
    if not any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        most_cpus = max((node.get("CPU", 0) for node in nodes), default=0)
        most_gpus = max((node.get("GPU", 0) for node in nodes), default=0)
        raise RecBoleDiffusionError(
            f"No node of the Ray cluster can run even one trial: --cpus_per_trial={cpus:g} "
            f"--gpus_per_trial={gpus:g} asked, its largest node has {most_cpus:g} CPUs and {most_gpus:g} GPUs. "
            f"Lower --cpus_per_trial/--gpus_per_trial, or connect to a larger cluster with --ray_address."
        )
    return {"cpu": cpus, "gpu": gpus}


def _raw_data_path(config):
    """``data_path`` as the user gave it (RecBole appends the dataset name to the final one), made absolute."""
    raw = config.external_config_dict.get("data_path", config.internal_config_dict.get("data_path"))
    return os.path.abspath(raw) if raw else raw


def run_sweep(model, dataset, space_file, config_file_list=None, config_dict=None, num_samples=10,
              cpus_per_trial=1, gpus_per_trial=None, ray_address=None, scheduler=None, resume=False,
              output_dir=None, max_concurrent_trials=None, retry_failed=False, callbacks=None, ignore_cmd_keys=(),
              search_alg="random", max_failures=1):
    """Run (or with ``resume`` continue) a Ray Tune sweep of ``model`` on ``dataset`` over ``space_file``.

    Everything is checked before Ray starts a trial: the space file, its keys and values against the model's
    configuration, the dataset, and that one trial fits on a node of the cluster. ``config_file_list``,
    ``config_dict`` and the command line's ``--key=value`` (except ``ignore_cmd_keys``, the CLI's own flags)
    apply to every trial. ``gpus_per_trial`` defaults to 1 on a cluster with GPUs and 0 without.
    ``retry_failed`` (with ``resume``) runs failed trials again from scratch; otherwise they stay failed.
    ``callbacks`` are Ray Tune callbacks (e.g. a logger integration) for a new sweep; a resumed one keeps its own.
    ``search_alg`` draws the trials (see :mod:`recbole_diffusion.search`). ``max_failures`` is how many times Ray
    starts a trial again, from its last epoch checkpoint, after it failed (its node lost, its process killed, or
    an error in its own code, which then fails again and is recorded as failed).

    Returns a dict: ``rows`` (the table, best first), ``best_config``, ``output_dir``, ``files``, ``unfinished``.
    """
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import preflight

    _check_numbers(num_samples, cpus_per_trial, gpus_per_trial, scheduler, max_failures)
    space = load_space(space_file)
    search.check_search_alg(search_alg, space, space_file)
    config_file_list = [os.path.abspath(f) for f in config_file_list] if config_file_list else None
    visible_gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    # RecBole's Config has just set CUDA_VISIBLE_DEVICES to gpu_id ('0' by default): a local Ray started now would
    # see that one GPU only
    if visible_gpus is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_gpus
    preflight(config)
    check_space(space, config, space_file)
    model, dataset = config["model"], config["dataset"]
    metric, mode = config["valid_metric"].lower(), "max" if config["valid_metric_bigger"] else "min"

    output_dir = os.path.abspath(output_dir or os.path.join("saved", "tune", f"{model}-{dataset}"))
    import ray
    from ray import tune

    if resume and not tune.Tuner.can_restore(output_dir):
        raise RecBoleDiffusionError(f"Nothing to resume in {output_dir}: no sweep was started there. Drop --resume.")
    if not resume and os.path.isdir(output_dir) and tune.Tuner.can_restore(output_dir):
        raise RecBoleDiffusionError(
            f"{output_dir} already holds a sweep: pass --resume to continue it, or another --output_dir."
        )

    # what every trial shares; absolute paths, since Ray runs each trial in its own directory
    shared = {k: v for k, v in config.cmd_config_dict.items() if k not in set(ignore_cmd_keys)}
    shared.update(config_dict or {})
    if _raw_data_path(config):
        shared["data_path"] = _raw_data_path(config)

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ray_address, include_dashboard=False)
    # Ray saves the sweep's state every 10 s or more by default: a driver killed in between loses what happened
    # since. Every second costs little beside trials of minutes (and current Ray warns when it saves that often).
    saved_env = {name: os.environ.get(name) for name in _SNAPSHOT_ENV}
    os.environ.update({name: saved_env[name] or value for name, value in _SNAPSHOT_ENV.items()})
    try:
        resources = _trial_resources(ray, cpus_per_trial, gpus_per_trial)
        spec = {"model": model, "dataset": dataset, "config_file_list": config_file_list, "config_dict": shared,
                "cpus_per_trial": resources["cpu"], "gpus_per_trial": resources["gpu"]}
        trainable = tune.with_resources(tune.with_parameters(_train_trial, spec=spec), resources)
        if resume:
            tuner = tune.Tuner.restore(output_dir, trainable, resume_unfinished=True, restart_errored=retry_failed)
        else:
            searcher = search.make_search_alg(search_alg, num_samples, config["seed"], max_concurrent_trials)
            tuner = _new_tuner(trainable, space, metric, mode, num_samples, scheduler, output_dir,
                               max_concurrent_trials, callbacks, searcher, max_failures)
        grid = tuner.fit()
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
        if started_here:
            ray.shutdown()
    return report_sweep(grid, space, model, dataset, metric, mode, valid_metric_names(config), output_dir)


def _parse_number(flag, text, integer=False):
    """A number given as text on the command line, or one clear error line."""
    if text is None:
        return None
    try:
        value = float(text)
        if value == int(value):
            value = int(value)  # "1" and "1.0" are the integer 1
        elif integer:
            raise ValueError
    except (ValueError, OverflowError):
        kind = "an integer" if integer else "a number"
        raise RecBoleDiffusionError(f"--{flag}={text}: must be {kind}.") from None
    return value


def run_sweep_from_args(args, config_files):
    """The CLI's ``--tune``: the sweep flags of ``args`` (argparse) turned into a :func:`run_sweep` call."""
    if args.nproc != 1 or args.world_size > 0:
        raise RecBoleDiffusionError("--tune runs each trial in one process; leave out --nproc/--world_size.")
    return run_sweep(
        args.model, args.dataset, args.tune, config_file_list=config_files,
        num_samples=_parse_number("num_samples", args.num_samples, integer=True),
        cpus_per_trial=_parse_number("cpus_per_trial", args.cpus_per_trial),
        gpus_per_trial=_parse_number("gpus_per_trial", args.gpus_per_trial),
        ray_address=args.ray_address, scheduler=args.scheduler.lower(), resume=args.resume,
        output_dir=args.output_dir, ignore_cmd_keys=vars(args), search_alg=args.search_alg.lower(),
        max_failures=_parse_number("max_failures", args.max_failures, integer=True),
    )


def _new_tuner(trainable, space, metric, mode, num_samples, scheduler, output_dir, max_concurrent_trials, callbacks,
               searcher=None, max_failures=1):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from ray.tune.search.basic_variant import BasicVariantGenerator

    from recbole_diffusion.ray_api import api

    random_search = searcher is None or isinstance(searcher, BasicVariantGenerator)
    if scheduler == "asha":
        # one training_iteration per evaluation; max_t out of reach, so that only the trial's own epochs and
        # early stopping end a trial that ASHA keeps
        scheduler = ASHAScheduler(time_attr="training_iteration", grace_period=1, reduction_factor=2, max_t=10**6)
    else:
        scheduler = None
    return tune.Tuner(
        trainable,
        param_space={name: dim.to_ray() for name, dim in space.items()},
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=num_samples, scheduler=scheduler,
                                    search_alg=searcher, trial_dirname_creator=_trial_dirname,
                                    # a random search limits itself (make_search_alg); Ray wraps a searcher
                                    max_concurrent_trials=None if random_search else max_concurrent_trials),
        run_config=api().RunConfig(
            name=os.path.basename(output_dir),
            storage_path=os.path.dirname(output_dir),
            failure_config=api().FailureConfig(max_failures=max_failures, fail_fast=False),
            checkpoint_config=api().CheckpointConfig(num_to_keep=1),
            callbacks=callbacks,
            verbose=1,
        ),
    )


# ---------------------------------------------------------------------------------------------------------------
# The report: table, best yaml, curves


def _error_line(error):
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(error).__name__


def _plain_value(value):
    return value.item() if hasattr(value, "item") else value


def _placement(frame):
    """The nodes a trial reported from, in order (8 characters of Ray's node id each), and the GPU ids Ray gave it
    with the device it trained on, e.g. ``1 (cuda)``, or ``1 (cpu)`` on a node without CUDA."""
    nodes, gpus = [], []
    if frame is None or "node_id" not in frame:
        return "", ""
    for _, report in frame.iterrows():
        node, gpu_ids = report.get("node_id"), report.get("gpu_ids")
        for seen, value in ((nodes, node), (gpus, gpu_ids)):
            if isinstance(value, (int, float)) and value == value:  # one GPU id read back as a number
                value = str(int(value))
            if not isinstance(value, str) or not value:  # NaN: a report without the column
                continue
            value = value[:8] if seen is nodes else f"{value} ({str(report.get('device', '')).split(':')[0]})"
            if not seen or seen[-1] != value:
                seen.append(value)
    return " > ".join(nodes), " > ".join(gpus)


def _trial_row(result, saved, space, metric, mode, metric_names):
    """One table row (a dict) from a Ray ``Result`` and the trial's saved (status, failures): config, best epoch,
    valid and test metrics, status, the nodes it ran on and how often it failed."""
    trial_status, failures = saved or (None, 0)
    last = result.metrics or {}
    frame = result.metrics_dataframe
    epochs, per_epoch = [], None
    if frame is not None and metric in frame and "final" in frame:
        # a trial resumed from a checkpoint older than its last report repeats those epochs: the later row wins
        per_epoch = frame[frame["final"].astype(str) != "True"].drop_duplicates("epoch", keep="last")
        epochs = [(int(e), float(v)) for e, v in zip(per_epoch["epoch"], per_epoch[metric]) if v == v]
    row = {"trial": os.path.basename(result.path).replace("trial_", ""), "status": None}
    row.update({name: _plain_value((result.config or {}).get(name)) for name in space})  # None: never started
    if last.get("final"):
        status, valid = "completed", {k: last.get(k) for k in metric_names}
        test = {k: last.get(f"test_{k}") for k in metric_names}
        best_epoch = last.get("best_epoch")
    else:
        status, test = "stopped early", {}
        best_epoch, valid = None, {}
        if epochs:
            pick = max if mode == "max" else min
            best_epoch = pick(epochs, key=lambda ev: ev[1])[0]
            best_row = per_epoch[per_epoch["epoch"] == best_epoch].iloc[0]
            valid = {k: _plain_value(best_row.get(k)) for k in metric_names}
    if result.error is not None:
        status = f"failed: {_error_line(result.error)}"
    elif trial_status in ("RUNNING", "PENDING", "PAUSED"):
        status = "unfinished"
    nodes, gpus = _placement(frame)
    row.update({"status": status, "best_epoch": best_epoch, "epochs": len(epochs), "failures": failures,
                "nodes": nodes or None, "gpus": gpus or None})
    row.update({f"valid {k}": valid.get(k) for k in metric_names})
    row.update({f"test {k}": test.get(k) for k in metric_names})
    return row, epochs


def _sort_key(metric, mode):
    def key(row):
        value = row.get(f"valid {metric}")
        if value is None or value != value:
            return (1, 0.0)
        return (0, -value if mode == "max" else value)

    return key


def _cell(value, metric=True):
    """Markdown text of a table cell: metrics with 4 decimals, configuration values with 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if metric else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _write_table(rows, space, csv_path, md_path):
    columns = list(rows[0])
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    write_text(csv_path, buffer.getvalue(), newline="")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c], metric=c not in space) for c in columns) + " |" for row in rows]
    write_text(md_path, "\n".join(lines) + "\n")
    return "\n".join(lines)


def _write_best_yaml(best, space, path, model, dataset, metric, total):
    config = {name: best[name] for name in space}
    test = best.get(f"test {metric}")
    header = [
        f"# Best of {total} trials of {model} on {dataset}: valid {metric} = {_cell(best[f'valid {metric}'])} "
        f"at epoch {best['best_epoch']}" + (f", test {metric} = {_cell(test)}" if test is not None else "") + ".",
        "# Only the tuned keys. Train with them:",
        f"#   python run_recbole_diffusion.py --model={model} --dataset={dataset} --config_files={path}",
    ]
    write_text(path, "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return config


def _plot_curves(curves, path, model, dataset, metric):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    styles = {"completed": "-", "stopped early": "--", "unfinished": ":"}
    for label, status, epochs in curves:
        if not epochs:
            continue
        xs, ys = zip(*epochs)
        ax.plot(xs, ys, styles.get(status, ":"), marker="o" if len(xs) < 30 else None, markersize=3,
                label=f"{label} ({status.split(':')[0]})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"valid {metric}")
    ax.set_title(f"{model} on {dataset}: valid {metric} per epoch, one line per trial")
    ax.grid(alpha=0.3)
    if 0 < len(curves) <= 20:
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def _saved_statuses(output_dir):
    """Trial id -> (status, failures) in the sweep's saved state. After an interruption (Ctrl-C) the trials that were
    running are TERMINATED in the ResultGrid but PENDING on disk, which is what ``--resume`` continues."""
    import logging

    from ray.tune import ExperimentAnalysis

    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns about every trial that failed before its first report
    try:
        return {trial.trial_id: (trial.status, trial.num_failures) for trial in ExperimentAnalysis(output_dir).trials}
    finally:
        quiet.setLevel(level)


def report_sweep(grid, space, model, dataset, metric, mode, metric_names, output_dir):
    """Write trials.csv, trials.md, best.yaml and valid_curves.png for a finished (or interrupted) sweep."""
    statuses = _saved_statuses(output_dir)
    rows, curves = [], []
    for result in grid:
        trial_id = os.path.basename(result.path).replace("trial_", "")
        row, epochs = _trial_row(result, statuses.get(trial_id), space, metric, mode, metric_names)
        rows.append(row)
        curves.append((row["trial"], row["status"], epochs))
    rows.sort(key=_sort_key(metric, mode))
    if not any(row["gpus"] for row in rows):
        for row in rows:
            del row["gpus"]
    files = {name: os.path.join(output_dir, name) for name in ("trials.csv", "trials.md", "best.yaml",
                                                                 "valid_curves.png")}
    table = _write_table(rows, space, files["trials.csv"], files["trials.md"])
    _plot_curves(curves, files["valid_curves.png"], model, dataset, metric)
    ranked = [row for row in rows if row.get(f"valid {metric}") is not None and not row["status"].startswith("fail")]
    best_config = None
    if ranked:
        best_config = _write_best_yaml(ranked[0], space, files["best.yaml"], model, dataset, metric, len(rows))
    else:
        files.pop("best.yaml")
    unfinished = sum(row["status"] == "unfinished" for row in rows)
    failed = sum(row["status"].startswith("failed") for row in rows)
    print(f"\nSweep of {model} on {dataset}: {len(rows)} trials, {failed} failed, {unfinished} unfinished; "
          f"sorted by valid {metric} ({mode}).")
    print(table)
    if best_config is not None:
        print(f"best config: {best_config}")
    if unfinished:
        print(f"The sweep was interrupted: continue it with --resume --output_dir={output_dir}")
    for path in files.values():
        print(f"wrote {path}")
    return {"rows": rows, "best_config": best_config, "output_dir": output_dir, "files": files,
            "unfinished": unfinished}
