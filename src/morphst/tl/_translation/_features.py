"""Model input: the embedding, optionally with the mean embedding of the k nearest spots (spatial context)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from ... import _logging as logg
from ..._constants import Key
from ..._utils._stats import zscore

if TYPE_CHECKING:
    from anndata import AnnData


def neighbour_mean(
    x: np.ndarray, coords: np.ndarray, k: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, sparse.csr_matrix]:
    """Mean of ``x`` over each spot's ``k`` nearest spatial neighbours within its group (sparse kNN only).

    Returns ``(context, W)``: ``context = W @ x`` with ``W`` a CSR ``(n, n)`` matrix holding ``1/k`` at each
    spot's neighbours (itself excluded). Neighbours never cross groups (sections). A spot alone in its group gets
    its own features. Nearest-neighbour ranks do not depend on the unit of ``coords``.
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    coords = np.asarray(coords, dtype=np.float64)
    if groups is None:
        groups = np.zeros(n, dtype=np.int64)
    rows, cols, vals = [], [], []
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 2:
            rows.append(idx)
            cols.append(idx)
            vals.append(np.ones(len(idx)))
            continue
        kk = min(k, len(idx) - 1)
        nn = NearestNeighbors(n_neighbors=kk + 1).fit(coords[idx])
        _, nbr = nn.kneighbors(coords[idx])
        for i in range(len(idx)):
            row = nbr[i][nbr[i] != i][:kk]
            rows.append(np.full(len(row), idx[i]))
            cols.append(idx[row])
            vals.append(np.full(len(row), 1.0 / len(row)))
    w = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return np.asarray(w @ x, dtype=np.float32), w


def _features(
    x: np.ndarray, coords: np.ndarray | None, spatial_context: int | None, groups: np.ndarray | None
) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if not spatial_context:
        return x
    ctx, _ = neighbour_mean(x, coords, int(spatial_context), groups)
    return np.hstack([x, ctx])


def section_mean(x: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Each row replaced by the mean of ``x`` over its group (section): the section-level (global) token."""
    x = np.asarray(x, dtype=np.float32)
    if groups is None:
        return np.broadcast_to(x.mean(axis=0, dtype=np.float64).astype(np.float32), x.shape).copy()
    codes, _ = pd.factorize(np.asarray(groups))
    out = np.empty_like(x)
    for g in np.unique(codes):
        idx = np.flatnonzero(codes == g)
        out[idx] = x[idx].mean(axis=0, dtype=np.float64).astype(np.float32)
    return out


def model_inputs(
    x: np.ndarray,
    coords: np.ndarray | None,
    spatial_context: int | None,
    groups: np.ndarray | None,
    *,
    context: Sequence[tuple[str, np.ndarray]] = (),
    global_context: bool = False,
) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """The model input and its column blocks: own patch, context patches, neighbour mean, section mean.

    Returns ``(features, blocks)``: ``features`` ``(n, n_features)`` float32 is the concatenation, in this order,
    of ``x`` (the spot's own patch), each ``context`` array (larger fields of view around the same spot), the mean
    of ``x`` over the ``spatial_context`` nearest spots of the same section (:func:`neighbour_mean`), and the mean
    of ``x`` over the spot's section (``global_context``); ``blocks`` lists ``(name, width)`` of each part.
    """
    x = np.asarray(x, dtype=np.float32)
    parts, blocks = [x], [("patch", x.shape[1])]
    for name, c in context:
        parts.append(np.asarray(c, dtype=np.float32))
        blocks.append((name, parts[-1].shape[1]))
    if spatial_context:
        parts.append(neighbour_mean(x, coords, int(spatial_context), groups)[0])
        blocks.append(("neighbours", x.shape[1]))
    if global_context:
        parts.append(section_mean(x, groups))
        blocks.append(("section", x.shape[1]))
    return (np.hstack(parts) if len(parts) > 1 else x), blocks


def scale_per_group(feats: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Features z-scored within each group (section): mean 0, standard deviation 1 per feature and group.

    A constant feature of a group (e.g. a one-spot group) becomes 0 there. ``groups=None``: all rows as one group.
    """
    x = np.array(feats, dtype=np.float32, copy=True)
    if groups is None:
        groups = np.zeros(len(x), dtype=np.int64)
    codes = pd.factorize(np.asarray(groups))[0]
    for g in np.unique(codes):
        idx = np.flatnonzero(codes == g)
        x[idx] = zscore(x[idx].astype(np.float64))[0].astype(np.float32)
    return x


def feature_text(n_own: int, spatial_context: int | None) -> str:
    """How many features the model sees, e.g. ``"1280 own + 1280 neighbour-mean (k=8) features"``."""
    if not spatial_context:
        return f"{n_own} features"
    return f"{n_own} own + {n_own} neighbour-mean (k={spatial_context}) features"


def context_caps(k: int | None, groups: np.ndarray | None, n: int, *, strict: bool = True) -> dict[str, int]:
    """Sections too small for ``k`` neighbours: ``{section: neighbours used}`` (``k`` capped at its spots - 1).

    With ``strict``, raises when no section has ``k + 1`` spots: then ``k`` is never honoured and is surely a
    mistake (when fitting; a fitted translator applied to a small section can only cap).
    """
    if not k:
        return {}
    if groups is None:
        sizes = {"all spots": n}
    else:
        names, counts = np.unique(groups.astype(str), return_counts=True)
        sizes = dict(zip(names.tolist(), counts.tolist(), strict=True))
    if strict and max(sizes.values()) <= k:
        msg = (
            f"`spatial_context`={k} neighbours, but the largest section has {max(sizes.values())} spots (so at most "
            f"{max(sizes.values()) - 1} neighbours); choose a smaller `spatial_context` (4 or 8 on a spot grid)."
        )
        raise ValueError(msg)
    return {g: max(c - 1, 0) for g, c in sizes.items() if c <= k}


def warn_caps(caps: dict[str, int], k: int | None) -> None:
    """Warn (``UserWarning``) naming the sections where ``k`` neighbours were capped (see :func:`context_caps`)."""
    if caps:
        shown = dict(list(caps.items())[:5])
        more = f" and {len(caps) - 5} more" if len(caps) > 5 else ""
        logg.warning(
            f"{len(caps)} section(s) have too few spots for `spatial_context`={k}: their neighbour mean uses all other "
            f"spots of the section instead ({shown}{more}: neighbours used; 0 = a spot alone uses its own features)"
        )


def check_spatial_context(spatial_context) -> int | None:
    """``spatial_context`` as a positive int or ``None``; raises a ValueError otherwise."""
    if spatial_context is None or spatial_context is False:
        return None
    if isinstance(spatial_context, bool) or int(spatial_context) != spatial_context or int(spatial_context) < 1:
        msg = f"`spatial_context` must be None or a positive number of neighbours (int), got {spatial_context!r}."
        raise ValueError(msg)
    return int(spatial_context)


def context_coords(adata: AnnData, spatial_context: int | None) -> np.ndarray | None:
    """Spot coordinates ``(n_obs, 2)`` for the neighbours of ``spatial_context`` (``None`` without it)."""
    if not spatial_context:
        return None
    if Key.SPATIAL not in adata.obsm:
        msg = "`spatial_context` needs spot coordinates in `adata.obsm['spatial']`."
        raise KeyError(msg)
    return np.asarray(adata.obsm[Key.SPATIAL], dtype=np.float64)[:, :2]
