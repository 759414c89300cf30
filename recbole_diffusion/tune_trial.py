"""The trainable of a sweep (see :mod:`recbole_diffusion.tune`): one trial, run by Ray in a worker process in the
trial's own directory. It trains through ``quick_start.build`` and ``Trainer.fit``, reports the flat validation
metrics after every evaluation with a checkpoint of its training state, and ends with a report of the test metrics of
its best-valid model (that report carries a checkpoint too). Each report says where it ran: ``node_id``, ``device``
and the ``gpu_ids`` Ray gave it."""

import json
import os
import re
import shutil
import sys

_STATE_FILE = "trial_state.json"

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


def mend_lost_checkpoints(trials, say=print):
    """Before ``--resume``: give back each unfinished trial the checkpoint that the sweep's saved state names and
    that is gone from its folder, as a copy of the trial's newest checkpoint there. Returns the paths it wrote.

    Ray deletes a trial's older checkpoint as soon as it registers a newer one (``num_to_keep=1``) and saves the
    sweep's state a moment later: a driver killed in between leaves a state that names a deleted checkpoint, and
    current Ray fails that trial on restore ("does not exist on storage anymore"). The newest checkpoint is the
    trial's own later epoch, so the trial goes on from there; nothing is lost and no epoch is trained twice. Ray
    before 2.7 (the pinned 2.6.3), whose trials' checkpoints carry no ``path``, falls back to the newest checkpoint
    itself (``TUNE_FALLBACK_TO_LATEST_CHECKPOINT``)."""
    mended = []
    for trial in trials:
        if trial.status not in ("PENDING", "RUNNING", "PAUSED"):  # what --resume continues
            continue
        path = getattr(getattr(trial, "checkpoint", None), "path", None)
        folder = os.path.dirname(path) if isinstance(path, str) else None
        if not folder or os.path.exists(path) or not os.path.isdir(folder):
            continue
        newest = sorted(name for name in os.listdir(folder) if re.fullmatch(r"checkpoint_\d+", name))
        if not newest:
            continue
        shutil.copytree(os.path.join(folder, newest[-1]), path)
        say(f"trial {trial.trial_id}: its saved state names {os.path.basename(path)}, which Ray had deleted before "
            f"the driver stopped; it goes on from its newest checkpoint, {newest[-1]}.")
        mended.append(path)
    return mended


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
    """One trial: ``sampled`` is the configuration Ray drew, ``spec`` what all trials share (see
    :func:`recbole_diffusion.tune.run_sweep`)."""
    import ray
    import torch

    from recbole_diffusion.quick_start import build
    from recbole_diffusion.ray_api import api
    from recbole_diffusion.trainer import SafeCheckpointMixin

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
