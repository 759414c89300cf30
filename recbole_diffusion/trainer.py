"""Safe checkpoints for RecBole's trainers, and learning-rate schedules RecBole lacks (step decay, decay on plateau).

RecBole pickles its whole ``Config`` (classes, enums, devices) into each checkpoint and loads it with
``torch.load`` and no ``weights_only``: under torch >= 2.6 that load fails, and a blanket
``weights_only=False`` would run whatever code a file carries. Ours hold only tensors and plain values
(the user's configuration as dicts, lists, strings and numbers), are loaded with ``weights_only=True``, and
are written atomically so that a crash mid-save never destroys the previous best model.
"""

import os
import pickle
import uuid
import zipfile

import numpy as np
import torch
from recbole.utils import early_stopping, get_local_time, set_color

from recbole_diffusion.utils import CheckpointError, TrainingDivergedError

CHECKPOINT_FORMAT = "recbole_diffusion.checkpoint.v1"
_PATH_KEYS = ("data_path", "checkpoint_dir", "benchmark_filename_dir")


def _plain(value):
    """``value`` as plain Python (dict/list/str/number/bool/None), or raise TypeError."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    raise TypeError(type(value).__name__)


def plain_config(config):
    """The user's side of a RecBole Config (files, dict, command line) as plain values, paths made absolute."""
    out = {}
    for key, value in config.external_config_dict.items():
        try:
            out[key] = _plain(value)
        except TypeError:
            continue  # e.g. a class passed in config_dict: it cannot be stored safely, and is rebuilt on load
    for key in _PATH_KEYS:
        if isinstance(out.get(key), str):
            out[key] = os.path.abspath(out[key])
    out["model"], out["dataset"] = config["model"], config["dataset"]
    return out


def _plain_state(obj):
    """Optimizer/other-parameter state with numpy values turned into tensors or Python numbers."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain_state(v) for v in obj)
    return obj


def save_checkpoint(state, path):
    """Write ``state`` to ``path`` atomically: a temporary file, then a rename."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        torch.save(_plain_state(state), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, map_location="cpu"):
    """Load one of our checkpoints with ``weights_only=True``; a bad file raises one clear CheckpointError."""
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint '{path}' does not exist. Check the path, or train first with saved=True.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"Cannot load checkpoint '{path}': it is corrupt, or not a recbole_diffusion checkpoint "
            f"(files that need pickled code to load are refused). Retrain to write a new one. [{reason[:160]}]"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"Cannot load checkpoint '{path}': it is not a recbole_diffusion checkpoint "
            f"(no '{CHECKPOINT_FORMAT}' marker). Retrain with recbole_diffusion to write one."
        )
    return checkpoint


class SafeCheckpointMixin:
    """Mixed into any RecBole ``Trainer``: weights-only checkpoints, unique file names, safe loads."""

    def __init__(self, config, model):
        super().__init__(config, model)
        # RecBole names files by the second only: parallel runs (Ray trials, comparisons) would overwrite
        # each other's best model. A short random suffix keeps every run's file its own.
        name = f"{config['model']}-{config['dataset']}-{get_local_time()}-{uuid.uuid4().hex[:6]}.pth"
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        self._epoch_in_progress = epoch_idx
        self._set_learning_rate(epoch_idx)
        return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)

    def _set_learning_rate(self, epoch_idx):
        """Step decay (``lr_step_size``, ``lr_gamma``): epoch ``epoch_idx`` (0-based) trains at each group's
        initial rate x gamma ** (epoch_idx // step), torch's ``StepLR`` stepped once per epoch. The rate follows
        from the epoch alone, so a resumed run continues on the same schedule."""
        step = self.config["lr_step_size"]
        if not step:
            return
        factor = self.config["lr_gamma"] ** (epoch_idx // step)
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # a checkpoint written before schedules: never decayed
            group["lr"] = group["initial_lr"] * factor

    def _check_nan(self, loss):
        # RecBole raises a bare ValueError on NaN only; an infinite loss went on to corrupt the weights.
        if not bool(torch.isfinite(loss).all()):
            epoch = getattr(self, "_epoch_in_progress", 0) + 1
            kept = self.saved_model_file if os.path.isfile(self.saved_model_file) else None
            raise TrainingDivergedError(
                f"Training loss became {'NaN' if bool(torch.isnan(loss).any()) else 'infinite'} in epoch {epoch} of "
                f"{self.config['model']}. Likely fixes: a lower --learning_rate (now {self.config['learning_rate']}), "
                f"a smaller embedding init (embedding_init_std, where the model has it) or --clip_grad_norm="
                f"\"{{'max_norm': 5}}\". "
                + (f"The best model so far is kept in {kept}." if kept else "No checkpoint had been written yet.")
            )

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._decay_on_plateau(valid_score)
        return valid_score, valid_result

    def _decay_on_plateau(self, valid_score):
        """Decay on plateau (``lr_plateau_decays``, ``lr_gamma``): where RecBole's early stopping would stop
        (``stopping_step`` validations without a new best, and this one none either), multiply every group's rate
        by gamma and give early stopping its patience afresh, up to ``lr_plateau_decays`` times; then it stops.
        Each model decays at its own plateau. The count is kept in the optimizer's state (resumable)."""
        allowed = self.config["lr_plateau_decays"]
        groups = self.optimizer.param_groups
        if not allowed or groups[0].get("plateau_decays", 0) >= allowed:
            return
        # RecBole's own rule, asked ahead of fit's call: would this validation stop the run?
        stop = early_stopping(valid_score, self.best_valid_score, self.cur_step, max_step=self.stopping_step,
                              bigger=self.valid_metric_bigger)[2]
        if not stop:
            return
        for group in groups:
            group["lr"] *= self.config["lr_gamma"]
            group["plateau_decays"] = group.get("plateau_decays", 0) + 1
        self.cur_step = -1  # RecBole's early stopping counts this validation next: 0 of stopping_step
        self.logger.info(f"validation stalled for {self.stopping_step} evaluations: learning rate x "
                         f"{self.config['lr_gamma']} (decay {groups[0]['plateau_decays']} of {allowed})")

    def _build_optimizer(self, **kwargs):
        # A model may hand its parameters over in groups with their own learning rates (``optimizer_groups``).
        if "params" not in kwargs and hasattr(self.model, "optimizer_groups"):
            kwargs["params"] = self.model.optimizer_groups()
        optimizer = super()._build_optimizer(**kwargs)
        for group in optimizer.param_groups:  # saved with the optimizer's state: the schedule's base rates
            group.setdefault("initial_lr", group["lr"])
        return optimizer

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": self.config["model"],
            "dataset": self.config["dataset"],
            "config": plain_config(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }
        save_checkpoint(state, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _load_weights(self, checkpoint_file):
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        if checkpoint["model"] != self.config["model"]:
            raise CheckpointError(
                f"Checkpoint '{checkpoint_file}' holds a {checkpoint['model']} model, not {self.config['model']}. "
                f"Pass --model={checkpoint['model']} or another checkpoint."
            )
        try:
            self.model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            raise CheckpointError(
                f"Checkpoint '{checkpoint_file}' does not fit this {self.config['model']}: its sizes differ "
                f"({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}). "
                f"Use the hyperparameters it was trained with."
            ) from None
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        return checkpoint

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        checkpoint = self._load_weights(resume_file)
        self.saved_model_file = resume_file
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            self._load_weights(checkpoint_file)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


def with_safe_checkpoints(trainer_class):
    """``trainer_class`` (a RecBole ``Trainer``) with :class:`SafeCheckpointMixin` mixed in."""
    return type(trainer_class.__name__, (SafeCheckpointMixin, trainer_class), {"__module__": __name__})
