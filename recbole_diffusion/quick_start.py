"""``run_recbole_diffusion``, ``objective_function`` and ``load_data_and_model``: RecBole's quick-start API
(same signatures, same return values) for our models and RecBole's alike.

RecBole's own quick-start looks models up by name inside ``recbole.model`` only, imports Ray, and loads its
checkpoints with a pickle-everything ``torch.load``; these functions use our registry, data routing and safe
checkpoints instead.
"""

import logging
import sys
from collections.abc import MutableMapping
from logging import getLogger

import torch
import torch.distributed as dist
from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_diffusion.config import Config
from recbole_diffusion.data import check_dataset, create_dataset, data_preparation
from recbole_diffusion.pretrain import prepare as prepare_pretrained
from recbole_diffusion.registry import get_model, get_trainer
from recbole_diffusion.trainer import load_checkpoint
from recbole_diffusion.utils import RecBoleDiffusionError


def _check_model_config(config):
    """Run the model's own hyperparameter checks before any data is loaded."""
    check = getattr(config.model_class, "check_config", None)
    if check is not None:
        check(config)


def apply_threads(config):
    """torch.set_num_threads(config['threads']) when set (~ keeps torch's default)."""
    import torch

    threads = config["threads"]
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise RecBoleDiffusionError(f"Invalid threads={threads!r}: must be a whole number >= 1 (or ~ for "
                                        f"torch's default). Fix it with --threads=<n>.")
        torch.set_num_threads(threads)


def details_logger(config):
    """Where the configuration, the dataset summary and the model tree are logged: RecBole's log file only,
    unless ``verbose`` (then the terminal too, as RecBole does)."""
    root = getLogger()
    if config["verbose"]:
        return root
    details = getLogger("recbole_diffusion.details")
    details.handlers = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    details.propagate = False
    details.setLevel(logging.INFO)
    return details


def log_file():
    """The path of RecBole's log file of this run (its FileHandler), or None."""
    for handler in getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def preflight(config, say=None):
    """Every check that needs no data, before anything is loaded, trained or printed: the model's
    hyperparameters and the dataset's files (RecBole's common keys were checked when the Config was built, see
    ``Config._set_default_parameters``). One RecBoleDiffusionError line on the first problem. Then torch's
    thread count is set (``threads``)."""
    apply_threads(config)
    _check_model_config(config)
    check_dataset(config, say)


def set_anomaly_detection(config):
    """Autograd anomaly detection as ``detect_anomaly`` says (default off). Importing RecBole's sequential models
    turns it on for the whole process (recbole/model/sequential_recommender/sine.py), and with it every forward
    op records its Python stack and every backward checks for NaN: training ran 2-3x slower for every model."""
    flag = config["detect_anomaly"]
    if not isinstance(flag, bool):
        raise RecBoleDiffusionError(f"detect_anomaly={flag!r}: must be True or False (default False; True only to "
                                    f"debug a NaN, it slows training several times).")
    torch.autograd.set_detect_anomaly(flag)


def build(config, dataset=None):
    """Dataset, dataloaders, model and trainer for a ready ``config``.

    ``dataset`` may be a dataset built earlier from an equal configuration (``compare`` shares one).
    Returns ``(dataset, train_data, valid_data, test_data, model, trainer)``.
    """
    _check_model_config(config)
    set_anomaly_detection(config)
    if dataset is None:
        dataset = create_dataset(config)
    details_logger(config).info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    # Pretrained embeddings / item clusters a model asks for (L-DiffRec, DDRM); before the seed, so that a cache
    # hit and a miss build and train the model alike.
    prepare_pretrained(config, train_data._dataset, valid_data._dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = config.model_class(config, train_data._dataset).to(config["device"])
    details_logger(config).info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return dataset, train_data, valid_data, test_data, model, trainer


def run_recbole_diffusion(
    model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, queue=None, callback_fn=None
):
    r"""Train and test a model (ours or RecBole's) on a dataset, as RecBole's ``run_recbole`` does.

    Args:
        model (str or type): model name or class. dataset (str): dataset name.
        config_file_list (list): yaml files. config_dict (dict): overrides.
        saved (bool): keep the best model on disk and test it (else test the last one).
        queue: multiprocessing queue for the result of rank 0 (used by :func:`run`).
        callback_fn: ``callback_fn(epoch_idx, valid_score)`` after each evaluation, as in ``Trainer.fit``.

    Returns:
        dict: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``.
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    preflight(config)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    details_logger(config).info(sys.argv)
    details_logger(config).info(config)

    dataset_, train_data, valid_data, test_data, model_, trainer = build(config)
    if not config["verbose"]:
        _print_summary(config, dataset_, model_, trainer, saved)
    if config["resume_file"]:
        trainer.resume_checkpoint(config["resume_file"])

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=callback_fn
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    details = details_logger(config)
    details.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    details.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    details.info(set_color("test result", "yellow") + f": {test_result}")
    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
    if saved:
        result["model_file"] = trainer.saved_model_file
    if not config["single_spec"]:
        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def _print_summary(config, dataset, model, trainer, saved):
    """A few lines on the terminal instead of RecBole's configuration dump (which goes to the log file)."""
    import torch

    from recbole_diffusion.compare import count_parameters

    device = config["device"]
    if device.type == "cpu":
        device = f"cpu, {torch.get_num_threads()} thread(s)"
    lines = [
        f"{config['model']} on {config['dataset']}: {dataset.user_num - 1:,} users, {dataset.item_num - 1:,} items, "
        f"{dataset.inter_num:,} interactions; {count_parameters(model):,} parameters; device {device}",
        f"training up to {config['epochs']} epochs, validating every {config['eval_step']} (early stop after "
        f"{config['stopping_step']} without a better {config['valid_metric']})",
        f"log (full configuration, model): {log_file()}",
    ]
    if saved:
        lines.append(f"best model: {trainer.saved_model_file}")
    getLogger().info("\n".join(lines))


def _run_rank(rank, *args):
    kwargs = args[-1]
    if not isinstance(kwargs, MutableMapping):
        raise ValueError(f"The last argument must be a dict of keyword arguments, got {type(kwargs)}.")
    kwargs["config_dict"] = dict(kwargs.get("config_dict") or {}, local_rank=rank)
    run_recbole_diffusion(*args[:3], **kwargs)


def run(model, dataset, config_file_list=None, config_dict=None, saved=True, nproc=1, world_size=-1,
        ip="localhost", port="5678", group_offset=0):
    """Single process, or RecBole's torch.distributed training over ``nproc`` local GPUs (RecBole's ``run``)."""
    if nproc == 1 and world_size <= 0:
        return run_recbole_diffusion(model, dataset, config_file_list, config_dict, saved)
    if world_size == -1:
        world_size = nproc
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {}, world_size=world_size, ip=ip, port=port, nproc=nproc,
                       offset=group_offset)
    kwargs = {"config_dict": config_dict, "saved": saved, "queue": queue}
    mp.spawn(_run_rank, args=(model, dataset, config_file_list, kwargs), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def objective_function(config_dict=None, config_file_list=None, saved=True, callback_fn=None):
    """RecBole's hyper-tuning objective: train with a config, return the same dict as RecBole's."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    preflight(config, say=lambda note: None)
    init_seed(config["seed"], config["reproducibility"])
    for handler in list(logging.root.handlers):
        logging.root.removeHandler(handler)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    _, train_data, valid_data, test_data, model, trainer = build(config)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, verbose=False, saved=saved, callback_fn=callback_fn
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved)
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }


def load_data_and_model(model_file):
    """Rebuild config, model (with trained weights), dataset and dataloaders from one of our checkpoints.

    Returns ``(config, model, dataset, train_data, valid_data, test_data)`` as RecBole's function does.
    The checkpoint is loaded with ``weights_only=True``: it can hold no code.
    """
    checkpoint = load_checkpoint(model_file)
    config = Config(model=checkpoint["model"], dataset=checkpoint["dataset"], config_dict=checkpoint["config"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    details_logger(config).info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    prepare_pretrained(config, train_data._dataset, valid_data._dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict({k: v.to(config["device"]) for k, v in checkpoint["state_dict"].items()})
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data
