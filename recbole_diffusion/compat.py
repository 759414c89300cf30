"""Small repairs that let RecBole 1.2.1's own models run on the versions this package pins.

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
