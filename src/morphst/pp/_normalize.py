"""Normalisation of counts to the translation target: log1p of counts per 10,000 (``log1p_cp10k``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from .. import _logging as logg
from .._constants import Key
from .._docs import doc_copy, doc_data, inject_docs
from .._utils import get_adata, records_params
from .._utils._checks import check_expression, raw_counts

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = ["normalize"]


def _check_target_sum(target_sum) -> float:
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
    target_sum = _check_target_sum(target_sum)
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

    target_sum = _check_target_sum(target_sum)
    # one float32 copy of the input, normalised in place (the input is never modified)
    x = x.astype(np.float32, copy=True) if sparse.issparse(x) else np.array(x, dtype=np.float32, copy=True)
    tmp = ad.AnnData(x)
    sc.pp.normalize_total(tmp, target_sum=target_sum)
    sc.pp.log1p(tmp)
    out = tmp.X
    return out.astype(np.float32, copy=False) if sparse.issparse(out) else np.asarray(out, dtype=np.float32)


@inject_docs(data=doc_data, copy=doc_copy)
def normalize(
    data: AnnData | SpatialData,
    *,
    target_sum: float = 1e4,
    layer: str | None = None,
    key_added: str = Key.TARGET,
    inplace_X: bool = False,
    table_key: str = Key.TABLE,
    copy: bool = False,
) -> AnnData | None:
    """Normalise raw counts to log1p of counts per ``target_sum`` (default: per 10,000), into a layer.

    The translation target of the benchmark protocol (HEST-Benchmark, Jaume et al. 2024; ST-Net, He et al. 2020):
    :func:`scanpy.pp.normalize_total` with ``target_sum`` then :func:`scanpy.pp.log1p`. Each spot is normalised on
    its own, so no statistic crosses spots (safe before any train/test split). ``X`` is left untouched unless
    ``inplace_X=True``.

    Parameters
    ----------
    {data}
    target_sum
        Total counts per spot after normalisation (counts; default 10,000).
    layer
        Layer holding the raw counts (non-negative integers); ``None`` uses ``X``. Already log-normalised values are
        refused, not normalised twice.
    key_added
        Name of the layer written.
    inplace_X
        Also replace ``X`` by the normalised values.
    {copy}

    Returns
    -------
    ``None``, or a copy of the AnnData if ``copy=True``. Writes:

    ``.layers[key_added]`` : ndarray or CSR matrix, shape ``(n_obs, n_vars)``, float32
        log1p of counts per ``target_sum``.
    ``.X`` : same values, only if ``inplace_X=True``.
    ``.uns[key_added]['params']`` : dict
        ``target_sum``, ``layer`` (source) and the method.

    Raises
    ------
    KeyError
        If ``layer`` is not a layer of the AnnData.
    ValueError
        If ``target_sum`` is not a positive number, or the source does not hold raw counts: negative, non-finite or
        non-integer values, or (for ``X``) ``uns['log1p']`` is set (``X`` was log-transformed by
        :func:`scanpy.pp.log1p`). Nothing is written then.
    """
    adata, target_sum = counts_inputs(
        data, table_key, "mst.pp.normalize", target_sum, key_added, " (the layer name to write)"
    )
    fix = (
        "`mst.pp.normalize` needs raw counts: pass `layer=` naming a layer of raw counts (e.g. `layer='counts'`); "
        "if the values are already log-normalised, use them as they are (e.g. `target=` in "
        "`mst.tl.predict_expression`) instead of normalising again."
    )
    src, where = raw_counts(adata, layer, empty="nothing to normalise.", fix=fix)
    if copy:
        adata = adata.copy()
        src = adata.X if layer is None else adata.layers[layer]
    start = logg.info(f"normalizing counts of {where} to log1p per {target_sum:g}")
    values = log1p_cp10k(src, target_sum)
    adata.layers[key_added] = values
    if inplace_X:
        adata.X = values.copy()
    adata.uns[key_added] = {
        "params": records_params(
            target_sum=float(target_sum),
            layer=layer,
            method="scanpy.pp.normalize_total + scanpy.pp.log1p",
            inplace_X=inplace_X,
        )
    }
    logg.info(f"    finished: added `.layers[{key_added!r}]`", time=start)
    return adata if copy else None
