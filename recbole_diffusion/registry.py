"""Model and trainer look-up: recbole_diffusion's models first, RecBole's as fallback.

RecBole's ``get_model`` only searches ``recbole.model``; ours searches our model packages by the same
convention (module = class name in lower case) and then RecBole's, so ``--model=SASRec`` runs through the
same CLI as ``--model=DiffuRec``.
"""

import importlib
import inspect
import pkgutil

from recbole.model.abstract_recommender import AbstractRecommender
from recbole.trainer import Trainer
from recbole.utils import get_model as get_recbole_model
from recbole.utils import get_trainer as get_recbole_trainer

from recbole_diffusion.bucketing import bucketed
from recbole_diffusion.compat import apply_all
from recbole_diffusion.utils import RecBoleDiffusionError, did_you_mean

apply_all()  # numpy 2, pandas 3 and scipy 1.14 repairs of RecBole (compat.py), before any model is built

OUR_SUBMODULES = ("sequential_recommender", "general_recommender")
RECBOLE_SUBMODULES = (
    "general_recommender",
    "sequential_recommender",
    "context_aware_recommender",
    "knowledge_aware_recommender",
)


def _our_model_module(model_name):
    for submodule in OUR_SUBMODULES:
        path = f"recbole_diffusion.model.{submodule}.{model_name.lower()}"
        if importlib.util.find_spec(path) is not None:
            return importlib.import_module(path)
    return None


def our_model_names():
    """Names of the models this package ships (one module per model, named after it in lower case)."""
    names = []
    for submodule in OUR_SUBMODULES:
        package = importlib.import_module(f"recbole_diffusion.model.{submodule}")
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            names += [
                name
                for name, obj in vars(module).items()
                if inspect.isclass(obj) and obj.__module__ == module.__name__ and name.lower() == info.name
            ]
    return sorted(names)


def recbole_model_names():
    """Names of RecBole's models (the optional lightgbm/xgboost ones are left out)."""
    names = set()
    for submodule in RECBOLE_SUBMODULES:
        package = importlib.import_module(f"recbole.model.{submodule}")
        for name, obj in vars(package).items():
            if inspect.isclass(obj) and issubclass(obj, AbstractRecommender) and name.lower() != "abstractrecommender":
                names.add(name)
    return sorted(names)


def get_model(model_name):
    """Return the model class called ``model_name``, ours first, RecBole's otherwise."""
    if not isinstance(model_name, str) or not model_name:
        raise RecBoleDiffusionError("No model given. Pass --model=<Name>, e.g. --model=DiffuRec.")
    module = _our_model_module(model_name)
    if module is not None and hasattr(module, model_name):
        return getattr(module, model_name)
    try:
        return bucketed(get_recbole_model(model_name))
    except (ValueError, ImportError, AttributeError):
        # RecBole's lookup of an unknown name ends in its optional exlib package (ModuleNotFoundError: lightgbm).
        pass
    ours, theirs = our_model_names(), recbole_model_names()
    raise RecBoleDiffusionError(
        f"Unknown model '{model_name}'.{did_you_mean(model_name, ours + theirs)} "
        f"Available here: {', '.join(ours)}; from RecBole: {', '.join(theirs)}."
    )


def get_trainer(model_type, model_name):
    """The trainer for a model: ``recbole_diffusion.trainer.<Model>Trainer`` if we define one, else RecBole's.

    Every trainer derived from RecBole's ``Trainer`` gets our safe checkpoints (see ``trainer.py``).
    """
    from recbole_diffusion import trainer as our_trainers

    cls = getattr(our_trainers, f"{model_name}Trainer", None)
    if cls is None:
        cls = get_recbole_trainer(model_type, model_name)
        if issubclass(cls, Trainer) and not issubclass(cls, our_trainers.SafeCheckpointMixin):
            cls = our_trainers.with_safe_checkpoints(cls)
    return cls
