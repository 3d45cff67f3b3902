"""Normalisation of counts to the translation target: log1p of counts per 10,000 (``log1p_cp10k``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _logging as logg
from .._constants import Key
from .._docs import doc_copy, doc_data, inject_docs
from .._utils import records_params, save_results
from .._utils._checks import raw_counts
from .._utils._counts import counts_inputs, log1p_cp10k

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = ["normalize"]


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
    record = {
        "params": records_params(
            target_sum=float(target_sum),
            layer=layer,
            method="scanpy.pp.normalize_total + scanpy.pp.log1p",
            inplace_X=inplace_X,
        )
    }
    if inplace_X:
        adata.X = values.copy()
    save_results(
        adata,
        [("layers", key_added, values), ("uns", key_added, record)],
        start=start,
        summary="`.X` replaced by the same values" if inplace_X else "",
    )
    return adata if copy else None
