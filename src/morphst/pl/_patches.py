"""A gallery of the patches that :func:`morphst.pp.extract_patches` defines: what the encoder sees."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import Key
from .._docs import doc_table_key, plot_docs
from .._utils import check_obs_column, get_adata, obs_noun, run_first
from ._spatial import new_figure
from ._utils import finish, make_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@plot_docs(
    ax=", one per panel (``n × (1 + n_context)``, spot by spot)",
    figsize="about 1.9 inches per panel",
    table_key=doc_table_key,
)
def patches(
    sdata: SpatialData,
    *,
    n: int = 16,
    spots: Sequence[int] | Sequence[str] | None = None,
    show_context: bool = True,
    color_by: str | None = None,
    table_key: str = Key.TABLE,
    ncols: int | None = None,
    random_state: int = 0,
    ax: Axes | Sequence[Axes] | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """A gallery of extracted patches, each next to its context fields of view when there are any.

    Reads the patch geometry that :func:`morphst.pp.extract_patches` recorded (``uns["patches"]``,
    ``obs["patch_x_px"]``, …) and the pixels through :func:`morphst.pp.get_patches`, i.e. exactly what
    :func:`morphst.tl.embed_patches` feeds the model, at its resolution (``target_px``). A context panel outlines the
    main patch in its centre. Titles give the observation name, the optional ``color_by`` label, and the fraction of
    the patch inside the image when it is below 1 (edge patches are padded).

    Parameters
    ----------
    sdata
        SpatialData on which :func:`morphst.pp.extract_patches` was run.
    n
        Number of spots, drawn at random among those with a patch (seeded by ``random_state``), shown in table order.
    spots
        Spots to show instead (integer positions or ``obs_names``); overrides ``n``.
    show_context
        Also show the context fields of view (``extract_patches(context_sizes_um=...)``), one panel each.
    color_by
        ``obs`` column shown in each title (e.g. ``"section"`` or ``"cluster"``).
    {table_key}
    ncols
        Spots per row; ``None``: about the square root of the number of spots.
    random_state
        Seed of the random choice of spots.
    {plot_params}

    Returns
    -------
    {returns_fig} Panels: one per spot and field of view.

    Raises
    ------
    KeyError
        If no patch geometry is recorded (run :func:`morphst.pp.extract_patches` first), or ``color_by`` / a spot
        name is missing.
    ValueError
        If ``n`` is not positive or no spot has a patch.
    """
    from spatialdata import SpatialData

    from ..pp import get_patches

    if not isinstance(sdata, SpatialData):
        msg = f"`mst.pl.patches` reads pixels from the images, so it needs a SpatialData, got {type(sdata).__name__}."
        raise TypeError(msg)
    adata = get_adata(sdata, table_key)
    info = adata.uns.get(Key.PATCHES)
    if not isinstance(info, dict) or Key.PATCH_X not in adata.obs.columns:
        msg = (
            f"No patch geometry in the table (`uns[{Key.PATCHES!r}]`, `obs[{Key.PATCH_X!r}]`): "
            f"{run_first('pp.extract_patches', 'sdata, patch_size=..., target_px=...')}."
        )
        raise KeyError(msg)
    if color_by is not None:
        check_obs_column(adata, color_by)
    rows = _rows(adata, spots, n, random_state)
    sizes = [float(s) for s in np.atleast_1d(info.get("sizes_um", [np.nan]))]
    n_ctx = len(sizes) - 1 if show_context else 0
    per_spot = 1 + n_ctx
    images = [get_patches(sdata, rows, table_key=table_key)]
    images += [get_patches(sdata, rows, table_key=table_key, context_index=k) for k in range(n_ctx)]

    n_spots = len(rows)
    n_panels = n_spots * per_spot
    if ax is None:
        spots_per_row = ncols or max(1, math.ceil(math.sqrt(n_spots / per_spot)))
        spots_per_row = min(spots_per_row, n_spots)
        nrows = math.ceil(n_spots / spots_per_row)
        fig, grid = new_figure(nrows, spots_per_row * per_spot, figsize=figsize, panel_size=(1.9, 2.05))
        axes = list(grid.ravel())
        for extra in axes[n_panels:]:
            fig.delaxes(extra)
        axes = axes[:n_panels]
    else:
        fig, axes = make_axes(ax, n_panels)

    valid = adata.obs[Key.PATCH_VALID].to_numpy(dtype=float) if Key.PATCH_VALID in adata.obs else None
    for i, r in enumerate(rows):
        title = str(adata.obs_names[r])
        if color_by is not None:
            title += f"\n{color_by}: {adata.obs[color_by].iloc[r]}"
        if valid is not None and np.isfinite(valid[r]) and valid[r] < 1:
            title += f" ({valid[r]:.0%} in image)"
        _draw_spot(axes[i * per_spot : (i + 1) * per_spot], [im[i] for im in images], sizes, title)
    return finish(fig, show=show, return_fig=return_fig)


def _rows(adata, spots, n: int, random_state: int) -> np.ndarray:
    """Row positions of the spots to show: ``spots`` (positions or ``obs_names``), else ``n`` drawn with a patch."""
    if spots is not None:
        sel = [spots] if isinstance(spots, str | int) else list(spots)
        if not all(isinstance(s, str) for s in sel):
            return np.asarray(sel, dtype=np.int64)
        idx = adata.obs_names.get_indexer(sel)
        if (idx < 0).any():
            bad = [s for s, i in zip(sel, idx, strict=True) if i < 0]
            msg = f"{obs_noun(adata).capitalize()} not in `obs_names`: {bad[:5]}."
            raise KeyError(msg)
        return idx
    if n < 1:
        msg = f"`n` must be at least 1, got {n}."
        raise ValueError(msg)
    candidates = np.flatnonzero(np.isfinite(adata.obs[Key.PATCH_X].to_numpy(dtype=float)))
    if not len(candidates):
        msg = (
            f"No {obs_noun(adata, 1)} has a patch (all outside the images); rerun `mst.pp.extract_patches` with "
            "other keys."
        )
        raise ValueError(msg)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))


def _draw_spot(axes, images, sizes: list[float], title: str) -> None:
    """One spot: its patch (titled) and each context field of view with the patch outlined in its centre."""
    from matplotlib.patches import Rectangle

    for k, (a, img) in enumerate(zip(axes, images, strict=True)):
        a.imshow(img, interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
        a.set_xlabel(f"{sizes[k]:g} µm", fontsize="x-small")
        if k == 0:
            a.set_title(title, fontsize="x-small")
            continue
        t = img.shape[0]
        side = t * sizes[0] / sizes[k]
        lo = (t - side) / 2 - 0.5
        a.add_patch(Rectangle((lo, lo), side, side, fill=False, edgecolor="k", linewidth=1.0))
        a.set_title("context", fontsize="x-small")
