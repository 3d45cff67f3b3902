"""What the learned-feature functions share: the width and penalty checks, the training spots and the one writer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..._utils import obs_noun, save_results
from .._translation import resolve_train

if TYPE_CHECKING:
    from anndata import AnnData


def check_width(n_components, *, allow_none: bool = False) -> int | None:
    """``n_components`` as a positive int (or ``None`` where ``allow_none``), or a ``ValueError``."""
    if n_components is None and allow_none:
        return None
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer) or n_components < 1:
        msg = f"`n_components` must be a positive integer{' or None' if allow_none else ''}, got {n_components!r}."
        raise ValueError(msg)
    return int(n_components)


def check_penalty(penalty_weight) -> float:
    """``penalty_weight`` as a finite float >= 0, or a ``ValueError``."""
    if not (np.isfinite(penalty_weight) and penalty_weight >= 0):
        msg = f"`penalty_weight` must be a finite number >= 0, got {penalty_weight!r}."
        raise ValueError(msg)
    return float(penalty_weight)


def training_spots(adata: AnnData, train, groups: np.ndarray | None, library_key: str | None) -> np.ndarray:
    """Boolean ``(n_obs,)`` mask of the training spots (see ``train`` of the learned-feature functions)."""
    train_mask = resolve_train(adata, train, groups, library_key)
    n = int(train_mask.sum())
    if n < 4:
        msg = f"`train` selects {n} {obs_noun(adata, n)}; at least 4 are needed to learn features."
        raise ValueError(msg)
    return train_mask


def write_learned(adata: AnnData, key_added: str, z: np.ndarray, record: dict, params: dict, start) -> None:
    """Write ``obsm[key_added]`` and ``uns[key_added]`` (``curve``, ``chosen_epoch``, ``params``) and log them."""
    curve = record.get("curve")
    uns = {
        "curve": curve if isinstance(curve, pd.DataFrame) else pd.DataFrame(curve if curve is not None else {}),
        "chosen_epoch": int(record.get("chosen_epoch", 0)),
        "params": params,
    }
    added = [("obsm", key_added, np.asarray(z, dtype=np.float32)), ("uns", key_added, uns)]
    save_results(adata, added, start=start, summary=record.get("description", ""))
