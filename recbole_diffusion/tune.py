"""Ray Tune sweeps for any model this package runs, ours or RecBole's:
``run_recbole_diffusion.py --model=DiffuRec --dataset=ml-100k --tune=properties/hyper/DiffuRec.yaml``.

RecBole's own Ray path (``run_hyper.py --tool Ray``) does not work with the Ray that RecBole 1.2.1 allows: it
reports the *test* result, nested, so the scheduler's metric is missing, and it asks one GPU per trial, so CPU
trials wait forever. Each trial here is our own function trainable (:mod:`recbole_diffusion.tune_trial`):

* it trains through ``quick_start.build`` and ``Trainer.fit`` with its sampled config, and reports the flat
  validation metrics (``ndcg@10``, ``hit@10``, ...), ``epoch`` and ``best_epoch`` after every evaluation, so ASHA
  can stop bad trials early;
* its best model is our safe checkpoint in ``<trial dir>/checkpoints/``; with every report it also hands Ray a
  checkpoint (the epoch's training state and the best model), from which ``--resume`` continues the trials that
  an interruption left unfinished (``Tuner.restore``);
* a last report adds the test metrics of the best-valid model (``test_ndcg@10``, ...);
* a crash (an exception, a NaN loss, out of memory, its node lost) fails that trial only; the sweep goes on, and
  Ray starts the trial again from its last checkpoint up to ``--max_failures`` times.

At the end the output folder holds ``trials.csv`` and ``trials.md`` (every trial, sorted by the validation
metric), ``best.yaml`` (the tuned keys of the best trial, for ``--config_files``) and ``valid_curves.png``
(:mod:`recbole_diffusion.tune_report`). How trials are drawn: :mod:`recbole_diffusion.search`.

The search-space format is documented in :data:`DISTRIBUTIONS` and at the top of every ``properties/hyper/`` file.
Ray is imported inside functions only, so ``import recbole_diffusion`` stays Ray-free.
"""

import math
import os
import random
import re

import yaml

from recbole_diffusion import search
from recbole_diffusion.tune_report import report_sweep, saved_trials
from recbole_diffusion.tune_trial import _train_trial, _trial_dirname, mend_lost_checkpoints
from recbole_diffusion.utils import RecBoleDiffusionError, did_you_mean

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
            mend_lost_checkpoints(saved_trials(output_dir))
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
