"""Map of predicted expression on the tissue, for sections without measured expression (an H&E-only slide)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import Key
from .._docs import plot_docs
from .._utils import list_keys
from ._maps import APPLY_TRANSLATOR, section_grid, translator_table
from ._spatial import draw_panel
from ._utils import finish, gene_list

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@plot_docs(ax=", ``n_genes × n_sections`` of them (row-major)", figsize="about 3.8 inches per panel", image=True)
def predicted_expression(
    data: SpatialData | AnnData,
    genes: str | Sequence[str],
    *,
    library_id: str | Sequence[str] | None = None,
    library_key: str | None = Key.LIBRARY,
    table_key: str = Key.PREDICTED_TABLE,
    image_key: str | None = None,
    image_px: int = 600,
    cmap: str = "viridis",
    alpha: float = 0.9,
    ax: Axes | Sequence[Axes] | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Expression predicted from morphology by a translator, as spots over the H&E, one panel per gene and section.

    For sections with no measured expression (an H&E-only slide): draws ``X`` of the table that
    :meth:`morphst.tl.Translator.predict_sdata` / ``predict_grid`` (or ``predict_adata``) wrote. To compare
    predictions with measured expression use :func:`morphst.pl.predicted_vs_observed`; to see where the
    predictions are extrapolations, :func:`morphst.pl.applicability`.

    Parameters
    ----------
    data
        SpatialData (spots over the image that shares their coordinate system; its table ``table_key``), or the
        AnnData of ``predict_adata`` / ``predict_sdata(inplace=False)`` (spots at ``obsm['spatial']``).
    genes
        Predicted gene(s), names in the table's ``var_names``.
    library_id
        Section(s) to draw, values of ``obs[library_key]``; ``None``: every section.
    library_key
        ``obs`` column of the sections. When the default column is absent: ``"region"`` (one panel per shapes
        element, as ``predict_sdata`` writes it) if present, else all spots in one panel. ``None``: all spots in
        one panel.
    table_key
        Table of a SpatialData (default: the table of :meth:`~morphst.tl.Translator.predict_sdata`).
    {image}
    cmap
        Colour map of the predicted values (one colour range per gene, shared by its sections).
    alpha
        Opacity of the spots.
    {plot_params}

    Returns
    -------
    {returns_fig} Panels: ``n_genes`` rows × ``n_sections`` columns, a colour bar per row labelled with the
    translation target (``uns['morphst_translation']['params']['target']``, e.g. ``log1p_cp10k``).

    Raises
    ------
    KeyError
        If there is no table ``table_key`` or it holds no translator predictions (the message says what to run), a
        gene is not predicted, or ``library_key`` is not an ``obs`` column.
    ValueError
        If ``genes`` is empty or a section is unknown.
    """
    adata = translator_table(data, table_key)
    params = adata.uns.get("morphst_translation", {}).get("params") if "morphst_translation" in adata.uns else None
    if params is None:
        msg = (
            f"The table holds no translator predictions (`uns['morphst_translation']`): {APPLY_TRANSLATOR}; for "
            "out-of-fold predictions next to measured expression use `mst.pl.predicted_vs_observed`."
        )
        raise KeyError(msg)
    genes = gene_list(genes)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        msg = f"Genes {missing} were not predicted by this translator. Predicted genes: {list_keys(adata.var_names)}."
        raise KeyError(msg)
    fig, axes, panels = section_grid(
        data, adata, len(genes), library_id=library_id, library_key=library_key, fallbacks=("region",),
        table_key=table_key,
        image_key=image_key, image_px=image_px, ax=ax, figsize=figsize,
    )  # fmt: skip
    target = params.get("target")
    label = f"predicted {target}" if isinstance(target, str) else "predicted"
    x = adata.X
    for i, g in enumerate(genes):
        col = x[:, adata.var_names.get_loc(g)]
        col = np.asarray(col.toarray() if hasattr(col, "toarray") else col, dtype=float).ravel()
        lo, hi = (float(np.nanmin(col)), float(np.nanmax(col))) if np.isfinite(col).any() else (None, None)
        for k, panel in enumerate(panels):
            where = f" ({panel.name})" if panel.name else ""
            m = draw_panel(
                axes[i, k],
                panel,
                values=col[panel.rows],
                cmap=cmap,
                vmin=lo,
                vmax=hi,
                alpha=alpha,
                title=f"{g} predicted{where}",
            )
            if m is not None and k == len(panels) - 1:
                fig.colorbar(m, ax=list(axes[i, :]), fraction=0.046, pad=0.02, label=label)
    return finish(fig, show=show, return_fig=return_fig)
