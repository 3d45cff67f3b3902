"""Raw counts to the translation target (log1p of counts per 10,000) and the checks of the functions that do it.

A room below :mod:`morphst.pp` and :mod:`morphst.tl`: used by :func:`morphst.pp.normalize`,
:func:`morphst.pp.select_genes`, the ``"log1p_cp10k"`` target of the translation functions and
:func:`morphst.tl.noise_ceiling`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from ._checks import check_expression
from ._sdata import get_adata

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = ["check_target_sum", "counts_inputs", "log1p_cp10k"]


def check_target_sum(target_sum) -> float:
    """``target_sum`` as a positive float; ``ValueError`` otherwise."""
    try:
        t = float("nan") if isinstance(target_sum, str | bool) else float(target_sum)
    except (TypeError, ValueError):
        t = float("nan")
    if not (np.isfinite(t) and t > 0):
        msg = f"`target_sum` must be a positive number of counts per spot (e.g. 1e4), got {target_sum!r}."
        raise ValueError(msg)
    return t


def counts_inputs(
    data: AnnData | SpatialData, table_key: str, fn: str, target_sum, key_added, what: str = ""
) -> tuple[AnnData, float]:
    """The table and ``target_sum`` of a function ``fn`` that normalises raw counts, after the checks it shares.

    Raises
    ------
    ValueError
        If the table holds no usable expression (:func:`~morphst._utils._checks.check_expression`), ``target_sum``
        is not a positive number, or ``key_added`` (described by ``what`` in the message) is not a non-empty string.
    """
    adata = get_adata(data, table_key)
    check_expression(adata, fn)
    target_sum = check_target_sum(target_sum)
    if not isinstance(key_added, str) or not key_added:
        msg = f"`key_added` must be a non-empty string{what}, got {key_added!r}."
        raise ValueError(msg)
    return adata, target_sum


def log1p_cp10k(x, target_sum: float = 1e4):
    """``log1p(x / total_per_row * target_sum)`` for a counts matrix (dense or sparse), as float32.

    Computed with :func:`scanpy.pp.normalize_total` and :func:`scanpy.pp.log1p` on a throw-away AnnData, so the
    values equal scanpy's. Each row is normalised on its own, so the result of a row never depends on other rows.
    """
    import anndata as ad
    import scanpy as sc

    target_sum = check_target_sum(target_sum)
    # one float32 copy of the input, normalised in place (the input is never modified)
    x = x.astype(np.float32, copy=True) if sparse.issparse(x) else np.array(x, dtype=np.float32, copy=True)
    tmp = ad.AnnData(x)
    sc.pp.normalize_total(tmp, target_sum=target_sum)
    sc.pp.log1p(tmp)
    out = tmp.X
    return out.astype(np.float32, copy=False) if sparse.issparse(out) else np.asarray(out, dtype=np.float32)
