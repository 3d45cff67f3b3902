"""What the learned-feature functions share: the width and penalty checks, the training spots and the one writer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ... import _logging as logg
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
    if train_mask.sum() < 4:
        msg = f"`train` selects {int(train_mask.sum())} spots; at least 4 are needed to learn features."
        raise ValueError(msg)
    return train_mask


def write_learned(adata: AnnData, key_added: str, z: np.ndarray, record: dict, params: dict, start) -> None:
    """Write ``obsm[key_added]`` and ``uns[key_added]`` (``curve``, ``chosen_epoch``, ``params``) and log them."""
    adata.obsm[key_added] = np.asarray(z, dtype=np.float32)
    curve = record.get("curve")
    adata.uns[key_added] = {
        "curve": curve if isinstance(curve, pd.DataFrame) else pd.DataFrame(curve if curve is not None else {}),
        "chosen_epoch": int(record.get("chosen_epoch", 0)),
        "params": params,
    }
    logg.info(
        f"    finished: {record.get('description', '')}; added .obsm[{key_added!r}] {z.shape}, .uns[{key_added!r}]",
        time=start,
    )
