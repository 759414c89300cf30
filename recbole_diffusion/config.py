"""A RecBole ``Config`` that knows our models and layers our ``properties/`` over RecBole's defaults.

Order, lowest priority first: RecBole's own yaml (overall, model, dataset, quick-start), then ours:
``overall.yaml``, for general models ``quick_start_config/general.yaml`` (Recall/NDCG at 10 and 20),
``model/<Model>.yaml``, ``dataset/<dataset>.yaml``, and for sequential models
``quick_start_config/sequential.yaml`` (leave-one-out, time order, full ranking, no negative sampling).
Config files, ``config_dict`` and ``--key=value`` on the command line override all of them, as in RecBole.
"""

import os

import yaml
from recbole.config import Config as RecBoleConfig
from recbole.config import configurator

recbole_config_file = configurator.__file__
from recbole.utils import ModelType

from recbole_diffusion.registry import get_model
from recbole_diffusion.utils import RecBoleDiffusionError

# RecBole gives these sequential models their own quick-start yaml; we leave them as RecBole sets them up.
_RECBOLE_SPECIAL_SEQUENTIAL = {"DIN", "DIEN", "GRU4RecKG", "KSR"}


def properties_dir():
    """Where our yaml lives: inside the installed package, or at the top of a source checkout."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(package_dir, "properties"), os.path.join(os.path.dirname(package_dir), "properties")):
        if os.path.isfile(os.path.join(candidate, "overall.yaml")):
            return candidate
    raise RecBoleDiffusionError(
        "recbole_diffusion's properties/ folder is missing from the installation. Reinstall with `pip install .`."
    )


# RecBole's default negative sampling (its overall.yaml), for the models and losses that need negatives.
RECBOLE_TRAIN_NEG_SAMPLE_ARGS = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False,
                                 "candidate_num": 0}


def needs_negatives(model_class, loss_type):
    """Whether a model trains on sampled negative items: a pairwise model, or one whose pairwise loss is chosen
    by ``loss_type`` (RecBole's sequential models with ``loss_type: BPR``)."""
    from recbole.utils import InputType

    input_type = getattr(model_class, "input_type", None)
    if input_type is not None:
        return input_type == InputType.PAIRWISE
    return loss_type == "BPR"


class Config(RecBoleConfig):
    def _load_config_files(self, file_list):
        """RecBole's loading of the user's yaml files, with one clear line for a missing file, a YAML syntax
        error (file, line and column) or a file that is not a mapping of keys to values."""
        loaded = {}
        for file in file_list or []:
            if not os.path.isfile(file):
                raise RecBoleDiffusionError(f"Config file '{file}' does not exist. Check the path in --config_files.")
            with open(file, encoding="utf-8") as f:
                try:
                    content = yaml.load(f.read(), Loader=self.yaml_loader)
                except yaml.YAMLError as err:
                    mark = getattr(err, "problem_mark", None)
                    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                    raise RecBoleDiffusionError(
                        f"YAML error in config file '{file}'{where}: {problem}. Fix that line (one 'key: value' "
                        f"per line, lists as [a, b])."
                    ) from None
            if content is None:
                continue
            if not isinstance(content, dict):
                raise RecBoleDiffusionError(
                    f"Config file '{file}' holds a {type(content).__name__}, not 'key: value' lines. Write one "
                    f"setting per line, e.g. 'learning_rate: 0.001'."
                )
            loaded.update(content)
        return loaded

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        try:
            super().__init__(model, dataset, config_file_list, config_dict)
        except (ValueError, NotImplementedError) as err:
            if isinstance(err, RecBoleDiffusionError):
                raise
            # RecBole's own configuration checks (eval_args, train_neg_sample_args, ...): one line, not a traceback
            raise RecBoleDiffusionError(f"Invalid configuration: {err}") from None

    def _set_default_parameters(self):
        from recbole_diffusion.validation import check_common_keys

        check_common_keys(self)  # before RecBole's own checks, which raise bare exceptions on some of these keys
        # Negative sampling follows the model and its loss. Our sequential protocol sets train_neg_sample_args: ~
        # for every sequential model (a CE model would silently train on negatives); a RecBole model whose loss
        # needs negatives (SASRec with loss_type: BPR, ...) gets RecBole's default sampling back, unless the
        # user set train_neg_sample_args.
        final = self.final_config_dict
        if (final.get("train_neg_sample_args") is None and "train_neg_sample_args" not in self.external_config_dict
                and needs_negatives(self.model_class, final.get("loss_type"))):
            final["train_neg_sample_args"] = dict(RECBOLE_TRAIN_NEG_SAMPLE_ARGS)
        super()._set_default_parameters()

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise RecBoleDiffusionError("No model given. Pass --model=<Name>, e.g. --model=DiffuRec.")
        if isinstance(model, str):
            final_model, final_model_class = model, get_model(model)
        else:
            final_model, final_model_class = model.__name__, model
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise RecBoleDiffusionError("No dataset given. Pass --dataset=<name>, e.g. --dataset=ml-100k.")
        return final_model, final_model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        root = properties_dir()
        dataset_file = os.path.join(root, "dataset", f"{dataset}.yaml")
        files = [os.path.join(root, "overall.yaml")]
        if model_class.type in (ModelType.GENERAL, ModelType.TRADITIONAL):
            files.append(os.path.join(root, "quick_start_config", "general.yaml"))
        files += [os.path.join(root, "model", f"{model}.yaml"), dataset_file]
        if model_class.type == ModelType.SEQUENTIAL and model not in _RECBOLE_SPECIAL_SEQUENTIAL:
            files.append(os.path.join(root, "quick_start_config", "sequential.yaml"))
        for file in files:
            if os.path.isfile(file):
                loaded = self._update_internal_config_dict(file) or {}
                if file == dataset_file:
                    self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]
        recbole_dataset_file = os.path.join(os.path.dirname(recbole_config_file), "..", "properties", "dataset",
                                            f"{dataset}.yaml")
        if not os.path.isfile(dataset_file) and not os.path.isfile(recbole_dataset_file):
            # A dataset nobody describes: RecBole's sample.yaml would load only user_id and item_id, so a
            # sequential model fails for want of the timestamp. Load every column of the atomic files instead.
            self.internal_config_dict["load_col"] = None
        self.internal_config_dict["MODEL_TYPE"] = model_class.type
