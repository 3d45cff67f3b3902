"""The section column (``library_key``): one rule for which ``obs`` column holds the sections, and its labels.

Every function that groups spots by section (translation folds, fusion and evaluation graphs, the noise ceiling,
the maps of ``mst.pl``) resolves ``library_key`` here:

- ``None``: one section (all spots together);
- the default :attr:`~morphst._constants.Key.LIBRARY` (``"section"``) when it is not a column: the first of the
  caller's ``fallbacks`` that is one (e.g. the ``"region"`` column of a translator table), else one section;
- any other name must be an ``obs`` column (a misspelt key must not silently pool several sections into one);
- labels of mixed types (``1`` and ``"1"``) are refused, and so are missing labels (NaN) where groups are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import Key
from ._labels import check_section_labels
from ._noun import obs_noun
from ._sdata import did_you_mean, list_keys

if TYPE_CHECKING:
    from anndata import AnnData


def resolve_library_key(
    adata: AnnData, library_key: str | None, *, fallbacks: Sequence[str | None] = (), name: str = "library_key"
) -> str | None:
    """The ``obs`` column that holds the sections, or ``None`` (one section), by the rule of this module.

    ``name`` is the parameter named in the message (e.g. ``"patient_key"``).

    Raises
    ------
    KeyError
        If ``library_key`` is not ``None``, not the default, and not an ``obs`` column (the message lists them).
    ValueError
        If the column mixes label types (:func:`~morphst._utils._labels.check_section_labels`).
    """
    if library_key is None:
        return None
    if library_key == Key.LIBRARY and library_key not in adata.obs.columns:
        return next((k for k in fallbacks if k is not None and k in adata.obs.columns), None)
    if library_key not in adata.obs.columns:
        msg = (
            f"`{name}`={library_key!r} is not an obs column ({library_key!r} not found in `adata.obs`). Available "
            f"columns: {list_keys(adata.obs.columns)}.{did_you_mean(library_key, adata.obs.columns)} Pass "
            f"`{name}=None` to treat all {obs_noun(adata)} as one section."
        )
        raise KeyError(msg)
    check_section_labels(adata, library_key)
    return library_key


def section_groups(
    adata: AnnData, library_key: str | None, *, fallbacks: Sequence[str | None] = (), name: str = "library_key"
) -> np.ndarray | None:
    """The section of each spot as an object array ``(n_obs,)``, or ``None`` (one section).

    The column is resolved by :func:`resolve_library_key`. A spot without a section would silently be in no
    leave-one-section-out fold, no neighbourhood and no per-section statistic, so missing labels are an error that
    says how to drop or fill them.

    Raises
    ------
    KeyError, ValueError
        From :func:`resolve_library_key`; ``ValueError`` if a label is missing (NaN).
    """
    key = resolve_library_key(adata, library_key, fallbacks=fallbacks, name=name)
    if key is None:
        return None
    col = adata.obs[key]
    na = col.isna().to_numpy()
    if na.any():
        fill = (
            f"adata.obs[{key!r}] = adata.obs[{key!r}].cat.add_categories('unknown').fillna('unknown')"
            if isinstance(col.dtype, pd.CategoricalDtype)
            else f"adata.obs[{key!r}] = adata.obs[{key!r}].fillna('unknown')"
        )
        msg = (
            f"`adata.obs[{key!r}]` is missing (NaN) for {int(na.sum())} of {adata.n_obs} {obs_noun(adata)}; they "
            "would belong to no section (never predicted, no spatial neighbours). Drop them "
            f"(`adata = adata[adata.obs[{key!r}].notna()].copy()`) or give them a group of their own "
            f"(`{fill}`), or pass another `{name}`."
        )
        raise ValueError(msg)
    return col.to_numpy(object)


__all__ = ["resolve_library_key", "section_groups"]
