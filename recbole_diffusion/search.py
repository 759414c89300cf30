"""How a sweep draws its trials (``--search_alg``): Ray Tune's random draws, or a Tree-structured Parzen Estimator
(TPE, Bergstra et al., NeurIPS 2011) through Ray Tune's own ``OptunaSearch`` or ``HyperOptSearch``.

A TPE search draws its first trials at random (:func:`startup_trials`), then models which values gave good
validation scores and draws where they are likely. It learns from finished trials only, so trials running side by
side draw from what was known when they started. ``--scheduler=asha`` works with every search (a stopped trial
reports its last score), and ``--resume`` continues with the searcher's saved state. Ray is imported inside
functions only.
"""

import importlib

from recbole_diffusion.utils import RecBoleDiffusionError, did_you_mean

# --search_alg -> the library it needs beside Ray, and the pip package that installs it
SEARCH_ALGS = {"random": None, "optuna": "optuna", "hyperopt": "hyperopt"}


def startup_trials(num_samples):
    """Random trials before a TPE search starts modelling: a third of the budget, from 2 to 10 (Optuna's own
    default is 10 and HyperOpt's 20, which would leave a small sweep random)."""
    return max(2, min(10, num_samples // 3))


def check_search_alg(name, space, space_file):
    """One error line, before Ray starts, for an unknown search, a missing library, or a space it cannot draw."""
    if name not in SEARCH_ALGS:
        raise RecBoleDiffusionError(
            f"--search_alg={name}: use one of {', '.join(SEARCH_ALGS)}.{did_you_mean(str(name), list(SEARCH_ALGS))}"
        )
    library = SEARCH_ALGS[name]
    if library is None:
        return
    try:
        importlib.import_module(library)
    except ImportError:
        raise RecBoleDiffusionError(
            f"--search_alg={name} needs the {library} library, which is not installed: pip install {library} "
            f"(or pip install \"recbole_diffusion[search]\")."
        ) from None
    for dim in space.values():
        if dim.kind == "grid":
            raise RecBoleDiffusionError(
                f"Search space {space_file}: {dim} is a grid, which only --search_alg=random runs; with "
                f"--search_alg={name} write it as {dim.name}: {{choice: {dim.args}}}."
            )
        scalar = (type(None), bool, int, float, str)
        if name == "optuna" and dim.kind == "choice" and not all(isinstance(v, scalar) for v in dim.args):
            raise RecBoleDiffusionError(
                f"Search space {space_file}: {dim} has list values, which Optuna cannot draw (numbers, strings and "
                f"booleans only); use --search_alg=hyperopt or random for this space."
            )


def make_search_alg(name, num_samples, seed, max_concurrent_trials=None):
    """The Ray Tune search algorithm for ``--search_alg=name``, seeded with the run's ``seed``."""
    if name == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent_trials or 0)
    if name == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=TPESampler(seed=seed, n_startup_trials=startup_trials(num_samples)))
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(n_initial_points=startup_trials(num_samples), random_state_seed=seed)
