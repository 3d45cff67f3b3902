""":func:`select_features`: the features of a representation that fall in chosen quadrants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, inject_docs
from ..._utils import check_obsm, get_adata, records_params
from ..._utils._hints import rep_hint, run_first
from . import _common as c

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@inject_docs(data=doc_data, copy=doc_copy)
def select_features(
    data: SpatialData | AnnData,
    use_rep: str,
    quadrant: Literal["translation", "integration", "noise", "overestimation"] | Sequence[str] = "translation",
    *,
    quadrants_key: str = Key.QUADRANTS,
    table_key: str = Key.TABLE,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Keep only the features of ``use_rep`` that fall in the given quadrant(s).

    Reads :func:`morphst.tl.quadrants`'s ``uns[quadrants_key]`` (Chelebian et al. 2025, Box 2) and writes the chosen
    columns to a new ``obsm`` entry, e.g. quadrant-I features for :func:`morphst.tl.predict_expression` and
    quadrant-II features for :func:`morphst.tl.fuse`.

    Parameters
    ----------
    {data}
    use_rep
        ``obsm`` key of the features; must be the one ``uns[quadrants_key]`` was computed on.
    quadrant
        One quadrant name or a list of them.
    quadrants_key
        ``uns`` key written by :func:`morphst.tl.quadrants`.
    key_added
        ``obsm`` key to write; default ``f'{use_rep}_{quadrant}'`` (names joined by ``'_'`` for a list).
    {copy}

    Returns
    -------
    ``None``, or a copy of the AnnData when ``copy=True``. Sets:

    ``.obsm[key_added]`` : ndarray, shape ``(n_obs, n_selected)``
        The selected columns of ``obsm[use_rep]``, in their original order.
    ``.uns[key_added]['params']`` : dict
        Source, quadrants and the selected column numbers (``features``).

    Raises
    ------
    KeyError
        If ``uns[quadrants_key]`` (run :func:`morphst.tl.quadrants` first) or ``obsm[use_rep]`` is missing.
    ValueError
        If ``uns[quadrants_key]`` was computed on another representation, a quadrant name is unknown, or no feature
        is in the chosen quadrant(s).
    """
    adata = get_adata(data, table_key)
    key = quadrants_key
    res = adata.uns.get(key)
    if not isinstance(res, dict) or "features" not in res:
        msg = (
            f"`adata.uns[{key!r}]` with quadrant results not found: "
            f"{run_first('tl.quadrants', f'adata, {use_rep!r}, ...', key=key)}."
        )
        raise KeyError(msg)
    x = check_obsm(adata, use_rep, hint=rep_hint(use_rep))
    src = res.get("params", {}).get("use_rep")
    if src is not None and src != use_rep:
        msg = f"`adata.uns[{key!r}]` was computed on {src!r}, not {use_rep!r}; pass use_rep={src!r} or another key."
        raise ValueError(msg)
    qs = [quadrant] if isinstance(quadrant, str) else [str(q) for q in quadrant]
    bad = [q for q in qs if q not in c.QUADRANTS]
    if bad or not qs:
        msg = f"Unknown quadrant(s) {bad}; choose from {list(c.QUADRANTS)}."
        raise ValueError(msg)
    df = res["features"]
    if len(df) != x.shape[1]:
        msg = f"`adata.uns[{key!r}]` has {len(df)} features but `obsm[{use_rep!r}]` has {x.shape[1]}; rerun quadrants."
        raise ValueError(msg)
    cols = np.flatnonzero(np.isin(np.asarray(df["quadrant"], dtype=object), qs))
    if cols.size == 0:
        msg = f"No feature of {use_rep!r} is in quadrant(s) {qs} (shares: {res.get('shares', {})}); choose another."
        raise ValueError(msg)
    key_added = key_added if key_added is not None else f"{use_rep}_{'_'.join(qs)}"
    src_x = adata.obsm[use_rep]
    out = np.asarray(src_x)[:, cols] if not hasattr(src_x, "toarray") else x[:, cols]
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = np.ascontiguousarray(out)
    adata.uns[key_added] = {
        "params": records_params(use_rep=use_rep, quadrant=qs, quadrants_key=key, features=cols.astype(np.int64))
    }
    logg.info(f"selected {cols.size} of {x.shape[1]} features of {use_rep!r} in {qs}: added .obsm[{key_added!r}]")
    return adata if copy else None
