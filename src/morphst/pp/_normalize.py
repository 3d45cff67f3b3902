"""Normalisation of counts to the translation target: log1p of counts per 10,000 (``log1p_cp10k``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from .. import _logging as logg
from .._utils import get_adata, records_params

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = ["LOG1P_CP10K", "normalize"]

#: Layer name of the default translation target written by :func:`normalize`.
LOG1P_CP10K = "log1p_cp10k"


def _check_counts(x, where: str) -> None:
    """Raise if ``x`` has negative or non-finite values (it must hold counts)."""
    data = x.data if sparse.issparse(x) else np.asarray(x)
    if data.size == 0:
        return
    if not np.all(np.isfinite(data)):
        msg = f"{where} contains NaN or infinite values; normalisation expects raw counts."
        raise ValueError(msg)
    if data.min() < 0:
        msg = (
            f"{where} has negative values, so it does not hold raw counts (is it already log-normalised?). "
            "Pass `layer=` naming a layer of raw counts."
        )
        raise ValueError(msg)


def log1p_cp10k(x, target_sum: float = 1e4):
    """``log1p(x / total_per_row * target_sum)`` for a counts matrix (dense or sparse), as float32.

    Computed with :func:`scanpy.pp.normalize_total` and :func:`scanpy.pp.log1p` on a throw-away AnnData, so the
    values equal scanpy's. Each row is normalised on its own, so the result of a row never depends on other rows.
    """
    import anndata as ad
    import scanpy as sc

    x = x.astype(np.float32) if sparse.issparse(x) else np.asarray(x, dtype=np.float32)
    tmp = ad.AnnData(x.copy())
    sc.pp.normalize_total(tmp, target_sum=target_sum)
    sc.pp.log1p(tmp)
    out = tmp.X
    return out.astype(np.float32) if sparse.issparse(out) else np.asarray(out, dtype=np.float32)


def normalize(
    data: AnnData | SpatialData,
    *,
    target_sum: float = 1e4,
    layer: str | None = None,
    key_added: str = LOG1P_CP10K,
    inplace_X: bool = False,
    table_key: str = "table",
    copy: bool = False,
) -> AnnData | None:
    """Normalise raw counts to log1p of counts per ``target_sum`` (default: per 10,000), into a layer.

    The translation target of the benchmark protocol (HEST-Benchmark, Jaume et al. 2024; ST-Net, He et al. 2020):
    :func:`scanpy.pp.normalize_total` with ``target_sum`` then :func:`scanpy.pp.log1p`. Each spot is normalised on
    its own, so no statistic crosses spots (safe before any train/test split). ``X`` is left untouched unless
    ``inplace_X=True``.

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used.
    target_sum
        Total counts per spot after normalisation (counts; default 10,000).
    layer
        Layer holding the raw counts; ``None`` uses ``X``.
    key_added
        Name of the layer written.
    inplace_X
        Also replace ``X`` by the normalised values.
    table_key
        Table of a SpatialData.
    copy
        Return a normalised copy instead of writing in place (AnnData input only).

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
        If the source has negative or non-finite values (it does not hold raw counts).
    """
    adata = get_adata(data, table_key)
    if copy:
        adata = adata.copy()
    if layer is not None and layer not in adata.layers:
        msg = f"Layer {layer!r} not found. Available layers: {sorted(adata.layers.keys())}; `layer=None` uses X."
        raise KeyError(msg)
    src = adata.X if layer is None else adata.layers[layer]
    where = "`adata.X`" if layer is None else f"`adata.layers[{layer!r}]`"
    if src is None:
        msg = f"{where} is empty; nothing to normalise."
        raise ValueError(msg)
    _check_counts(src, where)
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
