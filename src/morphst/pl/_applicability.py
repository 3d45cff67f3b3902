"""Map of a translator's applicability score (:meth:`morphst.tl.Translator.applicability_scores`) on the tissue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import Key
from .._docs import plot_docs
from .._utils import list_keys, obs_noun
from ._maps import APPLY_TRANSLATOR, section_grid, translator_table
from ._spatial import draw_panel
from ._utils import finish

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@plot_docs(ax=", one per section (row-major)", figsize="about 3.8 inches per panel", image=True)
def applicability(
    data: SpatialData | AnnData,
    *,
    score_key: str = Key.APPLICABILITY_SCORE,
    library_id: str | Sequence[str] | None = None,
    library_key: str | None = Key.LIBRARY,
    table_key: str = Key.PREDICTED_TABLE,
    image_key: str | None = None,
    image_px: int = 600,
    vmax: float = 2.0,
    cmap: str = "RdYlBu_r",
    alpha: float = 0.9,
    ax: Axes | Sequence[Axes] | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """How far each spot lies from a translator's training data, on the tissue, one panel per section.

    Draws ``obs[score_key]`` written by :meth:`morphst.tl.Translator.predict_sdata`, ``predict_grid`` or
    ``predict_adata``: each spot's mean distance to its nearest training spots in the translator's feature space,
    divided by the 95th percentile of that distance for held-out training sections. Below 1 (blue) the spot looks
    like the training data; above 1 (red) it lies farther than 95 % of held-out training spots, and its
    predictions are extrapolations. The colour scale is centred on 1 (``vmax`` saturates). Each panel's title
    gives the section's verdict stored in ``uns['morphst_translation']['applicability']`` (out of the training
    domain when more than 10 % of its spots score above 1); for a section without one, the stored rule is applied
    to the scores, and without a stored rule only the share of spots above 1 is given.

    Parameters
    ----------
    data
        SpatialData (spots over the image that shares their coordinate system; its table ``table_key``), or the
        AnnData of ``predict_adata`` / ``predict_sdata(inplace=False)`` (spots at ``obsm['spatial']``).
    score_key
        ``obs`` column of the score.
    library_id
        Section(s) to draw, values of ``obs[library_key]``; ``None``: every section.
    library_key
        ``obs`` column of the sections. When the default column is absent: the one the verdict was computed on
        (``"region"``, one panel per shapes element, for ``predict_sdata``), else ``"region"`` if present, else
        all spots in one panel. ``None``: all spots in one panel.
    table_key
        Table of a SpatialData (default: the table of :meth:`~morphst.tl.Translator.predict_sdata`).
    {image}
    vmax
        Upper end of the colour scale (the lower end is 0, the middle 1).
    cmap
        Colour map (diverging, centred on the threshold 1).
    alpha
        Opacity of the spots.
    {plot_params}

    Returns
    -------
    {returns_fig} Panels: one per section, each with a colour bar marked at 1.

    Raises
    ------
    KeyError
        If the SpatialData has no table ``table_key`` or ``obs[score_key]`` is missing (apply a translator first:
        :meth:`morphst.tl.Translator.predict_sdata`), or ``library_key`` is not an ``obs`` column.
    ValueError
        If ``vmax`` is not above 1, or a section is unknown.
    """
    if not vmax > 1:
        msg = f"`vmax` must be above 1 (the colour scale runs 0 – 1 – vmax), got {vmax!r}."
        raise ValueError(msg)
    adata = translator_table(data, table_key)
    score_key = _score_column(adata, score_key)
    info = adata.uns.get(Key.TRANSLATION, {}).get("applicability", {})
    fig, axes, panels = section_grid(
        data, adata, 1, library_id=library_id, library_key=library_key,
        fallbacks=(info.get("library_key"), "region"), table_key=table_key, image_key=image_key, image_px=image_px,
        ax=ax, figsize=figsize,
    )  # fmt: skip
    from matplotlib.colors import TwoSlopeNorm

    scores = adata.obs[score_key].to_numpy(dtype=float)
    verdicts = info.get("verdict", {})
    for a, panel in zip(axes[0], panels, strict=True):
        vals = scores[panel.rows]
        m = draw_panel(a, panel, values=vals, cmap=cmap, vmin=0.0, vmax=vmax, alpha=alpha)
        if m is not None:
            m.set_norm(TwoSlopeNorm(vcenter=1.0, vmin=0.0, vmax=vmax))
            cb = fig.colorbar(m, ax=a, fraction=0.046, pad=0.02, label=f"{score_key} (1 = threshold)")
            cb.ax.axhline(1.0, color="k", linewidth=1.0)
        title = _title(panel.name, vals, verdicts.get(panel.name), info.get("max_frac_beyond"), obs_noun(adata))
        a.set_title(title, fontsize="medium")
    return finish(fig, show=show, return_fig=return_fig)


def _title(name: str, vals: np.ndarray, stored: dict | None, max_frac: float | None, noun: str = "spots") -> str:
    """``"<section>: in domain (3 % of spots > 1)"`` from the stored verdict, else from the scores and the stored rule.

    Without a stored verdict or rule (a score column written by other means), only the share of spots above 1.
    ``noun`` names the rows (:func:`~morphst._utils.obs_noun`: spots, cells, bins or tiles).
    """
    ok = np.isfinite(vals)
    frac = float((vals[ok] > 1).mean()) if ok.any() else float("nan")
    inside = None if max_frac is None else frac <= max_frac
    if stored is not None:
        frac, inside = float(stored["frac_beyond"]), bool(stored["in_domain"])
    where = f"{name}: " if name else ""
    share = f"({100 * frac:.0f}% of {noun} > 1)"
    if inside is None:
        return f"{where}{share}"
    verdict = "in training domain" if inside else "OUT of training domain"
    return f"{where}{verdict}\n{share}"


#: Former name of the default score column, held by tables that an older morphst wrote.
_FORMER_SCORE_KEY = "translator_distance"


def _score_column(adata: AnnData, score_key: str) -> str:
    """``score_key``, or the former default column with a ``FutureWarning``; ``KeyError`` when neither is there."""
    if score_key in adata.obs.columns:
        return score_key
    if score_key == Key.APPLICABILITY_SCORE and _FORMER_SCORE_KEY in adata.obs.columns:
        import warnings

        warnings.warn(
            f"`obs[{_FORMER_SCORE_KEY!r}]` (a table written by an older morphst) is now `obs[{score_key!r}]`; it is "
            "read under its former name until the next release: rename the column or apply the translator again.",
            FutureWarning,
            stacklevel=3,
        )
        return _FORMER_SCORE_KEY
    available = list_keys(adata.obs.columns)
    msg = f"No applicability score `obs[{score_key!r}]`: {APPLY_TRANSLATOR}. Available columns: {available}."
    raise KeyError(msg)
