"""Grids of maps over the H&E, one column per section, shared by the plots of translator tables.

:func:`morphst.pl.predicted_expression` and :func:`morphst.pl.applicability` read the table a fitted translator
wrote (:meth:`morphst.tl.Translator.predict_sdata`, ``predict_grid``, ``predict_adata``); they check its section
column and lay out their panels in the same way, through :func:`section_grid`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._utils import get_adata, list_keys
from ._spatial import Panel, build_panels, new_figure, resolve_sections
from ._utils import make_axes

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

#: What to run when a table holds no translator output (the end of a ``KeyError`` message).
APPLY_TRANSLATOR = (
    "apply a fitted translator first (`tr.predict_sdata(sdata)`, `tr.predict_grid(sdata)` or `tr.predict_adata(adata)`)"
)


def translator_table(data: SpatialData | AnnData, table_key: str) -> AnnData:
    """The table a translator wrote: ``data`` itself (AnnData) or ``data.tables[table_key]``.

    Raises
    ------
    KeyError
        If a SpatialData has no table ``table_key``: says what to run (:data:`APPLY_TRANSLATOR`) and lists the tables.
    TypeError
        If ``data`` is neither an AnnData nor a SpatialData.
    """
    import sys

    sd = sys.modules.get("spatialdata")
    if sd is not None and isinstance(data, sd.SpatialData) and table_key not in data.tables:
        msg = (
            f"No table {table_key!r} of translator predictions: {APPLY_TRANSLATOR}; or pass `table_key=` naming the "
            f"table it wrote. Available tables: {list_keys(data.tables)}."
        )
        raise KeyError(msg)
    return get_adata(data, table_key)


def panel_grid(
    ax: Axes | Sequence[Axes] | None,
    nrows: int,
    ncols: int,
    *,
    figsize: tuple[float, float] | None,
    panel_size: tuple[float, float],
) -> tuple[Figure, np.ndarray]:
    """``(figure, axes)`` with axes an ``(nrows, ncols)`` object array: ``ax`` (row-major) or a new figure.

    Raises
    ------
    ValueError
        If ``ax`` does not hold ``nrows * ncols`` axes.
    """
    if ax is None:
        return new_figure(nrows, ncols, figsize=figsize, panel_size=panel_size)
    fig, flat = make_axes(ax, nrows * ncols)
    return fig, np.asarray(flat, dtype=object).reshape(nrows, ncols)


def section_grid(
    data: SpatialData | AnnData,
    adata: AnnData,
    nrows: int,
    *,
    library_id: str | Sequence[str] | None,
    library_key: str | None,
    fallbacks: Sequence[str | None] = (),
    table_key: str,
    image_key: str | None,
    image_px: int,
    ax: Axes | Sequence[Axes] | None,
    figsize: tuple[float, float] | None,
    panel_size: tuple[float, float] = (3.8, 3.6),
) -> tuple[Figure, np.ndarray, list[Panel]]:
    """``(figure, axes, panels)``: a :class:`Panel` per section of ``library_id`` and ``nrows`` × ``n_sections`` axes.

    The section column is ``library_key``, resolved with ``fallbacks`` by :func:`~morphst._utils.resolve_library_key`.

    Raises
    ------
    KeyError, ValueError
        From :func:`resolve_sections` (unknown section) and :func:`panel_grid` (wrong number of axes).
    """
    library_key, sections = resolve_sections(adata, library_id, library_key, fallbacks=fallbacks)
    panels = build_panels(
        data, sections, table_key=table_key, library_key=library_key, image_key=image_key, image_px=image_px
    )
    fig, axes = panel_grid(ax, nrows, len(panels), figsize=figsize, panel_size=panel_size)
    return fig, axes, panels


__all__ = ["APPLY_TRANSLATOR", "panel_grid", "section_grid", "translator_table"]
