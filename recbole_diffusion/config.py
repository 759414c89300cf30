"""A RecBole ``Config`` that knows our models and layers our ``properties/`` over RecBole's defaults.

Order, lowest priority first: RecBole's own yaml (overall, model, dataset, quick-start), then ours:
``overall.yaml``, for general models ``quick_start_config/general.yaml`` (Recall/NDCG at 10 and 20),
``model/<Model>.yaml``, ``dataset/<dataset>.yaml``, and for sequential models
``quick_start_config/sequential.yaml`` (leave-one-out, time order, full ranking, no negative sampling).
Config files, ``config_dict`` and ``--key=value`` on the command line override all of them, as in RecBole.
"""

import os

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


class Config(RecBoleConfig):
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
