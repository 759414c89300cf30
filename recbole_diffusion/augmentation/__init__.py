"""Data augmenters that write new RecBole atomic files for any sequential model (DiffuASR)."""

from recbole_diffusion.utils import RecBoleDiffusionError, did_you_mean

AUGMENTERS = ("DiffuASR",)


def check_augmenter(name):
    if name not in AUGMENTERS:
        raise RecBoleDiffusionError(
            f"Unknown augmenter '{name}'.{did_you_mean(str(name), list(AUGMENTERS))} "
            f"Available: {', '.join(AUGMENTERS)}."
        )


def run_augmented(augmenter, model, dataset, config_file_list=None, config_dict=None, saved=True):
    """Augment ``dataset`` with ``augmenter``, train and test ``model`` on both datasets (see ``pipeline.py``)."""
    check_augmenter(augmenter)
    from recbole_diffusion.augmentation import pipeline

    return pipeline.run_augmented(model, dataset, config_file_list, config_dict, saved)


def format_report(model, dataset, result):
    from recbole_diffusion.augmentation import pipeline

    return pipeline.format_report(model, dataset, result)
