"""Dataset creation and dataloader routing that work for any model class, whatever its name.

RecBole picks the training dataloader from a table keyed on model names (``DiffRec`` and ``LDiffRec`` get the
user-wise loader); an external model of another name would silently get the interaction-wise loader. Here a
model asks for the user-wise loader by declaring ``input_type = InputType.LISTWISE`` as a general model, and
RecBole's own models keep RecBole's routing.
"""

import os

from recbole.data import create_dataset as recbole_create_dataset
from recbole.data.dataloader import FullSortEvalDataLoader, NegSampleEvalDataLoader
from recbole.data.utils import (
    _get_AE_dataloader,
    create_samplers,
    data_preparation as recbole_data_preparation,
    get_dataloader as recbole_get_dataloader,
    load_split_dataloaders,
    save_split_dataloaders,
)
from recbole.utils import InputType, ModelType

from recbole_diffusion.utils import RecBoleDiffusionError


def check_dataset_exists(config):
    """Fail with one clear line when the atomic files are not there (RecBole would try a download)."""
    if config["dataset"] == "ml-100k" or config["allow_download"]:
        return
    path = config["data_path"]
    dataset = config["dataset"]
    files = os.listdir(path) if os.path.isdir(path) else []
    if not any(f.startswith(dataset + ".") and f.endswith(".inter") for f in files):
        raise RecBoleDiffusionError(
            f"Dataset '{dataset}' not found: no {dataset}.inter in {os.path.abspath(path)}. "
            f"Put its RecBole atomic files there, or pass --data_path=<folder that contains {dataset}/> "
            f"(e.g. --data_path=../shared/datasets); --allow_download=True lets RecBole download known names."
        )


def check_dataset(config, say=None):
    """The dataset's files are there and well formed (see ``validation.check_interaction_file``); notes such as
    users too short for leave-one-out go to ``say`` (default: stderr)."""
    import sys

    from recbole_diffusion.validation import check_interaction_file

    check_dataset_exists(config)
    for note in check_interaction_file(config):
        (say or (lambda text: print(text, file=sys.stderr)))(note)


def create_dataset(config):
    check_dataset_exists(config)
    return recbole_create_dataset(config)


def get_dataloader(config, phase):
    """RecBole's routing, plus: general models with ``LISTWISE`` input get RecBole's user-wise loaders."""
    model_class = getattr(config, "model_class", None)
    if (
        model_class is not None
        and config["MODEL_TYPE"] == ModelType.GENERAL
        and getattr(model_class, "input_type", None) == InputType.LISTWISE
    ):
        return _get_AE_dataloader(config, phase)
    return recbole_get_dataloader(config, phase)


def data_preparation(config, dataset):
    """Split ``dataset`` and build train/valid/test dataloaders (RecBole's ``data_preparation`` with our routing)."""
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        # Knowledge-aware models need RecBole's KG sampler; no model of ours is one, so RecBole's path serves.
        return recbole_data_preparation(config, dataset)
    dataloaders = load_split_dataloaders(config)
    if dataloaders is not None:
        dataset._change_feat_format()
        return dataloaders
    built = dataset.build()
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    train_data = get_dataloader(config, "train")(config, built[0], train_sampler, shuffle=config["shuffle"])
    valid_data = get_dataloader(config, "valid")(config, built[1], valid_sampler, shuffle=False)
    test_data = get_dataloader(config, "test")(config, built[2], test_sampler, shuffle=False)
    if config["save_dataloaders"]:
        save_split_dataloaders(config, dataloaders=(train_data, valid_data, test_data))
    return train_data, valid_data, test_data


__all__ = [
    "create_dataset",
    "data_preparation",
    "get_dataloader",
    "FullSortEvalDataLoader",
    "NegSampleEvalDataLoader",
]
