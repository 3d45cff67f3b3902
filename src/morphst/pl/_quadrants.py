"""Box 2 of Chelebian et al. 2025: morphological features on the relevance × shared-information plane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import Key
from .._docs import plot_docs
from .._utils import get_adata
from ._utils import finish, get_tl_result, make_axes

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

#: Default colours of the four quadrants (I translation, II integration, III noise, IV overestimation).
QUADRANT_COLORS: dict[str, str] = {
    "translation": "#1f77b4",
    "integration": "#2ca02c",
    "noise": "#9e9e9e",
    "overestimation": "#d62728",
}
_ROMAN = {"translation": "I", "integration": "II", "noise": "III", "overestimation": "IV"}


@plot_docs(ax=": one, or one per panel (``1 + len(compare)``)", figsize="4.5 × 4 inches per panel")
def quadrants(
    data: SpatialData | AnnData,
    quadrants_key: str = Key.QUADRANTS,
    *,
    compare: str | Sequence[str] | None = None,
    table_key: str = Key.TABLE,
    palette: Mapping[str, str] | None = None,
    size: float = 12.0,
    alpha: float = 0.7,
    title: str | Sequence[str] | None = None,
    legend: bool = True,
    ax: Axes | Sequence[Axes] | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Plot features on the quadrant plane of Chelebian, Avenel & Wählby, *Nat. Commun.* 2025 (Box 2).

    Relevance (mutual information with the annotation, nats) on the y axis, shared information (max |Pearson r|
    with the genes) on the x axis, the two thresholds as lines, and the points coloured by quadrant, with the
    share of features per quadrant written in each corner. Reads only what :func:`morphst.tl.quadrants` wrote.

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used.
    quadrants_key
        ``uns`` key written by :func:`morphst.tl.quadrants`.
    compare
        Other key(s) of :func:`morphst.tl.quadrants` (e.g. another encoder on the same spots) drawn in panels side
        by side, with shared axis limits.
    table_key
        Table of a SpatialData.
    palette
        Colour per quadrant name (default :data:`QUADRANT_COLORS`).
    size
        Marker size (points²).
    alpha
        Marker opacity.
    title
        Panel title(s); default the representation (``params['use_rep']``) of each key, with the key when two
        panels share a representation.
    legend
        Draw a legend of the quadrants (on the last panel).
    {plot_params}

    Returns
    -------
    {returns_fig}

    Raises
    ------
    KeyError
        If ``uns[quadrants_key]`` (or a ``compare`` key) is missing: run :func:`morphst.tl.quadrants` first.
    ValueError
        If ``ax`` does not hold one axes per panel.
    """
    adata = get_adata(data, table_key)
    keys = [quadrants_key] + ([compare] if isinstance(compare, str) else list(compare or []))
    results = [get_tl_result(adata, k, Key.QUADRANTS, required=("features", "thresholds")) for k in keys]
    titles = [title] if isinstance(title, str) else (list(title) if title is not None else None)
    if titles is not None and len(titles) != len(keys):
        msg = f"`title` holds {len(titles)} title(s) for {len(keys)} panel(s)."
        raise ValueError(msg)
    colors = {**QUADRANT_COLORS, **(dict(palette) if palette else {})}
    if titles is None:
        reps = [str(r.get("params", {}).get("use_rep", k)) for k, r in zip(keys, results, strict=True)]
        titles = [f"{rep} ({k})" if reps.count(rep) > 1 else rep for rep, k in zip(reps, keys, strict=True)]

    fig, axs = make_axes(ax, len(keys), figsize=figsize)
    xmax = max(float(np.nanmax(r["features"]["shared"])) for r in results)
    xmax = max(xmax, *(float(r["thresholds"]["shared"]) for r in results))
    ymax = max(float(np.nanmax(r["features"]["relevance"])) for r in results)
    ymax = max(ymax, *(float(r["thresholds"]["relevance"]) for r in results))
    ymax = ymax or 1.0
    # strips above and below the data hold the quadrant labels, so no label covers a point
    xlim, ylim = (0.0, min(1.0, xmax * 1.08) or 1.0), (-0.12 * ymax, ymax * 1.2)

    for i, (res, a) in enumerate(zip(results, axs, strict=True)):
        df = res["features"]
        thr = res["thresholds"]
        quad = np.asarray(df["quadrant"], dtype=object)
        shares = res.get("shares", {})
        for q in QUADRANT_COLORS:
            m = quad == q
            a.scatter(
                df["shared"].to_numpy()[m],
                df["relevance"].to_numpy()[m],
                s=size,
                alpha=alpha,
                c=colors[q],
                edgecolors="none",
                label=f"{_ROMAN[q]} {q}",
                rasterized=len(df) > 5000,
            )
        a.axvline(thr["shared"], color="k", lw=0.8, ls="--")
        a.axhline(thr["relevance"], color="k", lw=0.8, ls="--")
        a.set_xlim(*xlim)
        a.set_ylim(*ylim)
        a.set_yticks([t for t in a.get_yticks() if 0 <= t <= ymax * 1.08])  # no negative relevance ticks
        a.set_ylim(*ylim)
        corners = {
            "translation": (0.98, 0.98, "right", "top"),
            "integration": (0.02, 0.98, "left", "top"),
            "noise": (0.02, 0.02, "left", "bottom"),
            "overestimation": (0.98, 0.02, "right", "bottom"),
        }
        for q, (x, y, ha, va) in corners.items():
            if q in shares:
                a.text(
                    x, y, f"{_ROMAN[q]} {float(shares[q]):.0%}", transform=a.transAxes, ha=ha, va=va,
                    color=colors[q], fontsize=9, fontweight="bold", zorder=5,
                    bbox={"facecolor": "white", "alpha": 1.0, "edgecolor": "none", "pad": 1.0},
                )  # fmt: skip
        params = res.get("params", {})
        a.set_title(titles[i])
        a.set_xlabel("shared with expression (max |Pearson r|)")
        if i == 0:
            a.set_ylabel(f"relevance to {params.get('annotation_key', 'annotation')!s} (MI, nats)")
    if legend:
        axs[-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8, markerscale=1.5)
    if ax is None:
        fig.tight_layout()
    return finish(fig, show=show, return_fig=return_fig)


__all__ = ["QUADRANT_COLORS", "quadrants"]
