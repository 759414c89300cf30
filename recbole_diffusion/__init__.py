"""recbole_diffusion: diffusion recommenders as RecBole models, one CLI, RecBole's pipeline and evaluator."""

__version__ = "0.1.0"

_QUICK_START = ("run_recbole_diffusion", "objective_function", "load_data_and_model", "run")


def __getattr__(name):
    # Lazy, so that ``recbole_diffusion.diffusion`` (torch only) can be imported without RecBole.
    if name in _QUICK_START:
        from recbole_diffusion import quick_start

        return getattr(quick_start, name)
    raise AttributeError(f"module 'recbole_diffusion' has no attribute '{name}'")


__all__ = list(_QUICK_START) + ["__version__"]
