"""Small repairs that let RecBole 1.2.1 run on today's numpy, pandas and scipy.

Applied when ``recbole_diffusion.registry`` is imported, i.e. before any RecBole model is built here; each one
only adds what is missing and changes nothing that works.
"""

import scipy.sparse as sp


def _dok_update(self, entries):
    # What scipy's private dok_matrix._update did before it was removed: store {(row, col): value} unchecked.
    self._dict.update(entries)


def add_dok_matrix_update():
    """RecBole's LightGCN, NGCF, NCL, GCMC, SpectralCF, KGIN and MCCLK build their adjacency matrices with
    ``dok_matrix._update``, which scipy 1.14 no longer has (``AttributeError: 'dok_matrix' object has no attribute
    '_update'``). Put it back where it is missing and the matrix keeps its entries in ``_dict``."""
    if not hasattr(sp.dok_matrix, "_update") and hasattr(sp.dok_matrix((1, 1)), "_dict"):
        sp.dok_matrix._update = _dok_update


# ---------------------------------------------------------------------------------------------------------------
# numpy 2 and pandas 3 (RecBole 1.2.1 was written for numpy 1 and pandas 1-2)
# ---------------------------------------------------------------------------------------------------------------
RECBOLE_VERSION = "1.2.1"
# numpy 2.0 removed these aliases; RecBole's Config (configurator.compatibility_settings) reads all three.
_NUMPY_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}

# pandas 3 changed two things RecBole 1.2.1 relies on, both silently:
#   * Series.agg(len) returns len(series) instead of applying len to each element: item_length of every row of a
#     sequential dataset became the row count (SequentialDataset._benchmark_presets), token_seq fields were split
#     at wrong points (Dataset._remap, _normalize, _discretization, KnowledgeBasedDataset._reset_ent_remapID).
#   * copy-on-write: df[col].fillna(..., inplace=True) fills a copy, so missing values stay NaN
#     (Dataset._fill_nan) and empty token_seq cells stay NaN (Dataset._load_feat).
# The methods' sources are rewritten with .map(len) and assignment, text for text; a text not found means another
# RecBole version, and the repair refuses.
_AGG_LEN = ("recbole.data.dataset.dataset:Dataset._remap", "recbole.data.dataset.dataset:Dataset._normalize",
            "recbole.data.dataset.dataset:Dataset._discretization",
            "recbole.data.dataset.sequential_dataset:SequentialDataset._benchmark_presets",
            "recbole.data.dataset.kg_dataset:KnowledgeBasedDataset._reset_ent_remapID")
_FILLNA = {
    "recbole.data.dataset.dataset:Dataset._fill_nan": (
        ("feat[field].fillna(value=0, inplace=True)", "feat[field] = feat[field].fillna(value=0)"),
        ("feat[field].fillna(value=feat[field].mean(), inplace=True)",
         "feat[field] = feat[field].fillna(value=feat[field].mean())"),
    ),
    "recbole.data.dataset.dataset:Dataset._load_feat": (
        ('df[field].fillna(value="", inplace=True)', 'df[field] = df[field].fillna(value="")'),
    ),
}


class CompatibilityError(RuntimeError):
    """A repair of RecBole that does not fit the installed RecBole."""


def add_numpy_aliases():
    """np.float_, np.complex_, np.unicode_ again under numpy >= 2 (removed there; RecBole's Config reads them)."""
    import numpy as np

    for alias, name in _NUMPY_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, getattr(np, name))


def pandas_agg_len_is_scalar():
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 2.2 warns that this use is deprecated: it is the probe
        return not isinstance(pd.Series([[1, 2], [3]]).agg(len), pd.Series)


def pandas_chained_inplace_is_noop():
    import warnings

    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"a": [np.nan, 1.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame["a"].fillna(value=0.0, inplace=True)
    return bool(np.isnan(frame["a"].iloc[0]))


def _rewrite_method(target, replacements):
    """Replace the method ``module:Class.method`` by its own source with ``replacements`` applied."""
    import importlib
    import inspect
    import textwrap

    import recbole

    module_name, qualname = target.split(":")
    class_name, method_name = qualname.split(".")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if recbole.__version__ != RECBOLE_VERSION:
        raise CompatibilityError(
            f"recbole_diffusion repairs RecBole {RECBOLE_VERSION}'s {qualname} for pandas 3, but RecBole "
            f"{recbole.__version__} is installed. Install recbole=={RECBOLE_VERSION}, or pandas<3."
        )
    function = cls.__dict__[method_name]
    source = textwrap.dedent(inspect.getsource(function))
    for old, new in replacements:
        if old not in source:
            raise CompatibilityError(
                f"recbole_diffusion cannot repair {qualname} for pandas 3: '{old}' is not in its source (another "
                f"RecBole build?). Install recbole=={RECBOLE_VERSION}, or pandas<3."
            )
        source = source.replace(old, new)
    namespace = dict(vars(module))
    exec(compile(source, inspect.getsourcefile(function), "exec"), namespace)  # noqa: S102 - RecBole's own code
    repaired = namespace[method_name]
    repaired.__qualname__ = function.__qualname__
    repaired._recbole_diffusion_repaired = True
    setattr(cls, method_name, repaired)


def repair_recbole_for_pandas3():
    """Apply the pandas-3 repairs that the installed pandas needs (detected by behaviour, not version); once."""
    if pandas_agg_len_is_scalar():
        for target in _AGG_LEN:
            _rewrite_once(target, ((".agg(len)", ".map(len)"),))
    if pandas_chained_inplace_is_noop():
        for target, replacements in _FILLNA.items():
            _rewrite_once(target, replacements)


def _rewrite_once(target, replacements):
    import importlib

    module_name, qualname = target.split(":")
    class_name, method_name = qualname.split(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not getattr(cls.__dict__[method_name], "_recbole_diffusion_repaired", False):
        _rewrite_method(target, replacements)


def apply_all():
    """Every repair this environment needs; called once when recbole_diffusion.registry is imported."""
    add_numpy_aliases()
    add_dok_matrix_update()
    repair_recbole_for_pandas3()
