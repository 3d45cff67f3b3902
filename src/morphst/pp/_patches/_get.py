"""`get_patches`: read recorded patches into memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..._constants import Key
from ..._utils import get_adata

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData
from ..._docs import doc_table_key, inject_docs
from ..._utils._checks import check_sdata
from ._reader import PatchReader, empty_patches, size_index_of


def _resolve_rows(adata: AnnData, obs_indices_or_names, default: np.ndarray) -> np.ndarray:
    """Table row positions of ``obs_indices_or_names`` (positions, unique ``obs_names`` or a mask); ``default``."""
    n = adata.n_obs
    if obs_indices_or_names is None:
        return default
    if isinstance(obs_indices_or_names, str | int | np.integer):
        obs_indices_or_names = [obs_indices_or_names]
    arr = np.asarray(obs_indices_or_names)
    if arr.dtype == bool:
        if arr.shape != (n,):
            msg = f"A boolean mask must have length n_obs = {n}, got {arr.shape}."
            raise ValueError(msg)
        return np.flatnonzero(arr)
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < -n or arr.max() >= n):
            msg = f"Row indices out of range for {n} observations."
            raise IndexError(msg)
        return np.where(arr < 0, arr + n, arr).astype(np.int64)
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        msg = (
            f"`obs_names` are not unique ({len(dup)} repeated, e.g. {list(dup[:3])}: Visium barcodes repeat across "
            "sections), so rows cannot be selected by name. Call `adata.obs_names_make_unique()` on the table, or "
            "select by integer positions or a boolean mask."
        )
        raise ValueError(msg)
    idx = adata.obs_names.get_indexer(arr.astype(str))
    if (idx < 0).any():
        msg = f"Observation names not found: {list(arr[idx < 0][:5])}."
        raise KeyError(msg)
    return idx.astype(np.int64)


@inject_docs(table_key=doc_table_key)
def get_patches(
    sdata: SpatialData,
    obs_indices_or_names: Sequence[int] | Sequence[str] | np.ndarray | None = None,
    *,
    table_key: str = Key.TABLE,
    context_index: int | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Read patches recorded by :func:`extract_patches` into memory, for inspection and plotting.

    Parameters
    ----------
    sdata
        SpatialData (images + shapes + table, not an AnnData) on which :func:`extract_patches` was run.
    obs_indices_or_names
        Rows of the table: integer positions, ``obs_names`` (unique ones) or a boolean mask. Default: every row
        that has a patch (after ``extract_patches(shapes_key=...)``, the rows of that shapes element).
    {table_key}
    context_index
        ``None``: the main patch; an integer ``k``: the ``k``-th context field of view (0-based, in the order of
        ``extract_patches(context_sizes_um=...)``), resampled to the same ``target_px``.
    batch_size
        Patches per task of the reader's worker threads (``mst.settings.n_jobs`` of them).

    Returns
    -------
    Array of shape ``(n, target_px, target_px, 3)``, uint8 RGB, in the order requested.

    Raises
    ------
    TypeError
        If ``sdata`` is not a SpatialData (e.g. an AnnData table).
    KeyError
        If the table has no patch geometry (run :func:`extract_patches` first) or a name is not in ``obs_names``.
    ValueError
        If a row has no patch geometry, ``context_index`` is out of range, ``batch_size < 1``, or rows are selected by
        name while ``obs_names`` are not unique.
    """
    check_sdata(sdata, "get_patches", patches=True)
    adata = get_adata(sdata, table_key)
    if int(batch_size) < 1:
        msg = f"`batch_size` must be a positive integer, got {batch_size}."
        raise ValueError(msg)
    size_index = size_index_of(context_index)
    reader = PatchReader(sdata, table_key=table_key, size_index=size_index)
    rows = _resolve_rows(adata, obs_indices_or_names, reader.rows)
    t = reader.target_px
    out = empty_patches(len(rows), t)
    reader.read_into(rows, out, batch_size=int(batch_size))
    return out
