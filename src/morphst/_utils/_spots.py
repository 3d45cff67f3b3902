"""Which spots a function uses: a boolean ``obs`` column, a boolean array or positions, checked once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._sdata import bool_column, list_keys

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["spot_mask"]


def spot_mask(adata: AnnData, spots, *, name: str, purpose: str, at_least: int = 2) -> np.ndarray:
    """Boolean ``(n_obs,)`` mask from ``spots``: ``None`` (all), a boolean ``obs`` column, a boolean array or positions.

    ``name`` is the caller's parameter (``"mask"``, ``"train"``), named in every message; ``purpose`` completes
    "at least ``at_least`` are needed to ...".

    Raises
    ------
    KeyError
        If a column name is not in ``obs`` (the columns are listed).
    ValueError
        A non-boolean column, an array of another dtype or length, positions out of range, or fewer than
        ``at_least`` spots selected.
    """
    n = adata.n_obs
    if spots is None:
        return np.ones(n, bool)
    if isinstance(spots, str):
        m = bool_column(
            adata,
            "obs",
            spots,
            meaning=f"use the spot, as `{name}`",
            missing=f"`{name}` column {spots!r} not found in `adata.obs`. Available columns: "
            f"{list_keys(adata.obs.columns)}.",
        )
    else:
        m = np.asarray(spots)
        if m.dtype != bool:
            if m.size and not np.issubdtype(m.dtype, np.integer):
                msg = f"`{name}` must be boolean or integer positions, got dtype {m.dtype}."
                raise ValueError(msg)
            idx = m.astype(np.int64).ravel()
            if idx.size and (idx.min() < -n or idx.max() >= n):
                msg = f"`{name}` positions must lie in [0, {n}) (spot positions), got {idx.min()} to {idx.max()}."
                raise ValueError(msg)
            m = np.zeros(n, bool)
            m[idx] = True
        elif m.shape != (n,):
            msg = f"Boolean `{name}` must have shape ({n},) (one value per spot), got {m.shape}."
            raise ValueError(msg)
    if m.sum() < at_least:
        msg = f"`{name}` selects {int(m.sum())} spot(s); at least {at_least} are needed to {purpose}."
        raise ValueError(msg)
    return m
