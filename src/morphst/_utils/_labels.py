"""Section labels: one type per column, so that ``1`` and ``"1"`` are never two sections (or one) by accident."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData


def _kind(v) -> str:
    if isinstance(v, str):
        return "str"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, numbers.Number):
        return "number"
    return type(v).__name__


def check_section_labels(adata: AnnData, key: str | None) -> None:
    """Refuse an ``obs[key]`` whose labels mix types (e.g. ``1``, ``"1"`` and ``2``).

    Pandas keeps ``1`` and ``"1"`` apart while string conversions (file names, plots, ``astype(str)``) merge them,
    and sorting them fails; the functions that group spots by section would disagree on what a section is. Missing
    values (NaN) are left to the caller. ``key`` ``None`` or not a column: nothing to check.

    Raises
    ------
    ValueError
        Labels of more than one type: the message shows one example of each and the one-line fix.
    """
    if key is None or key not in adata.obs.columns:
        return
    col = adata.obs[key]
    values = col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else col.dropna().unique()
    examples: dict[str, object] = {}
    for v in values:
        examples.setdefault(_kind(v), v)
    if len(examples) > 1:
        shown = ", ".join(f"{v!r} ({k})" for k, v in examples.items())
        msg = (
            f"`adata.obs[{key!r}]` mixes label types: {shown}. Labels such as 1 and '1' would be one section for "
            f"some steps and two for others. Give the column one type, e.g. "
            f"`adata.obs[{key!r}] = adata.obs[{key!r}].astype(str).astype('category')`."
        )
        raise ValueError(msg)
