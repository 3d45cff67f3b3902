"""Spots over the H&E: a coarse pyramid level drawn with ``imshow``, spots mapped into its pixel frame.

Rendering choice: plain matplotlib. A thumbnail (the coarsest pyramid level that is still at least ``image_px`` on
its short side) is read once and cached; spots are mapped into its pixel frame by composing the SpatialData
transformations (shapes -> coordinate system -> image -> pyramid level), so any affine works, and are drawn as circles
of their true radius. On HER2ST this draws a section in well under a second once the thumbnail is cached, with no
dependency on a plotting backend's choice of resolution or on Datashader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import Key
from .._utils import (
    affine_xy,
    get_adata,
    image_levels,
    list_keys,
    obs_noun,
    resolve_library_key,
    shape_centroids,
)
from .._utils._match import match_image

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from spatialdata import SpatialData

#: Cache of thumbnails: (dask name or id, image_px) -> (rgb, scale_x, scale_y). Small: a few MB per image.
_THUMBS: dict[tuple[str, int], tuple[np.ndarray, float, float]] = {}
_THUMBS_MAX = 32


@dataclass
class Panel:
    """One section to draw: which table rows, where their spots are (in the drawing frame), and the image."""

    name: str
    rows: np.ndarray  # integer positions into the table
    xy: np.ndarray  # (n, 2) x, y in the drawing frame
    radius: np.ndarray | None  # (n,) in the drawing frame, or None: fixed-size markers
    image: np.ndarray | None = None  # (h, w, 3) or (h, w) thumbnail in the drawing frame
    meta: dict[str, Any] = field(default_factory=dict)


def _thumbnail(element, image_px: int) -> tuple[np.ndarray, float, float]:
    """Return ``(rgb, scale_x, scale_y)``: an (h, w, 3) thumbnail and full-resolution px per thumbnail px."""
    levels = image_levels(element)
    full = levels[0]
    h0, w0 = int(full.sizes["y"]), int(full.sizes["x"])
    target = min(image_px, h0, w0)
    chosen = levels[0]
    for lv in levels:  # finest first: keep the coarsest level still >= target on its short side
        if min(int(lv.sizes["y"]), int(lv.sizes["x"])) >= target:
            chosen = lv
    name = getattr(chosen.data, "name", None) or str(id(chosen))
    key = (name, int(image_px))
    if key in _THUMBS:
        return _THUMBS[key]
    img, sx, sy = _read_level(levels[0], chosen)
    if img.dtype != np.uint8:
        img = img.astype(np.float32)
        hi = np.nanpercentile(img, 99.5) if img.size else 1.0
        img = np.clip(img / (hi if hi > 0 else 1.0), 0, 1)
    if len(_THUMBS) >= _THUMBS_MAX:
        _THUMBS.pop(next(iter(_THUMBS)))
    _THUMBS[key] = (img, sx, sy)
    return img, sx, sy


def _to_yxc(arr) -> np.ndarray:
    if "c" in arr.dims:
        img = np.asarray(arr.transpose("y", "x", "c").values)
        return img[..., :3] if img.shape[-1] >= 3 else img[..., 0]
    return np.asarray(arr.transpose("y", "x").values)


def _read_level(base, chosen) -> tuple[np.ndarray, float, float]:
    """Pixels of pyramid level ``chosen`` and its scale (``base`` px per pixel, x and y).

    A level computed lazily from ``base`` is approximated faster.

    A level stored on disk is read as is. A level that dask computes from the full resolution (an in-memory pyramid
    made by ``Image2DModel.parse(scale_factors=...)``) costs a full-resolution read plus the averaging; reading every
    4th pixel of the finest level along the nearest integer factor and then averaging 4 × 4 blocks gives the same
    thumbnail size, anti-aliased, at a fraction of the cost.
    """
    derived = chosen is not base and len(chosen.data.dask.layers) > len(base.data.dask.layers)
    factor = round(int(base.sizes["y"]) / int(chosen.sizes["y"]))
    if not derived or factor < 4:
        img = _to_yxc(chosen)
        return img, int(base.sizes["x"]) / img.shape[1], int(base.sizes["y"]) / img.shape[0]
    from skimage.transform import downscale_local_mean

    step = max(1, factor // 4)
    img = _to_yxc(base.isel(y=slice(step // 2, None, step), x=slice(step // 2, None, step)))  # centre samples
    b = factor // step
    h, w = (img.shape[0] // b) * b, (img.shape[1] // b) * b
    out = downscale_local_mean(img[:h, :w], (b, b) + (1,) * (img.ndim - 2))
    out = out.round().astype(np.uint8) if img.dtype == np.uint8 else out
    return out, float(step * b), float(step * b)


def _spot_geometry(gdf) -> tuple[np.ndarray, np.ndarray | None]:
    """Centroids (n, 2) and radii (n,) of a shapes GeoDataFrame (circles, or polygons as equal-area circles)."""
    geom = gdf.geometry
    if (geom.geom_type == "Point").all():
        radius = gdf["radius"].to_numpy(dtype=float) if "radius" in gdf.columns else None
        return shape_centroids(gdf), radius
    return shape_centroids(gdf), np.sqrt(geom.area.to_numpy() / np.pi)


def section_values(adata: AnnData, library_key: str | None) -> list[str] | None:
    """Sections present in the table, in category order, or ``None`` when ``library_key`` is ``None``."""
    if library_key is None:
        return None
    col = adata.obs[library_key]
    if isinstance(col.dtype, pd.CategoricalDtype):
        present = set(col.dropna().astype(str))
        return [str(c) for c in col.cat.categories if str(c) in present]
    return [str(v) for v in pd.unique(col.dropna())]


def resolve_sections(
    adata: AnnData, library_id, library_key: str | None, *, fallbacks: Sequence[str | None] = ()
) -> tuple[str | None, list[str | None]]:
    """The section column and the sections of ``library_id`` (None, a name or a list); ``[None]``: one panel.

    The column is ``library_key`` resolved by :func:`~morphst._utils.resolve_library_key` with ``fallbacks``.

    Raises
    ------
    KeyError
        If ``library_key`` names no ``obs`` column, or ``library_id`` is given without a section column.
    ValueError
        If a section of ``library_id`` is not in the column, or the column mixes label types.
    """
    given = library_key
    library_key = resolve_library_key(adata, library_key, fallbacks=fallbacks)
    available = section_values(adata, library_key)
    if library_id is None:
        return library_key, list(available) if available else [None]
    wanted = [library_id] if isinstance(library_id, str | int) else list(library_id)
    if available is None:
        msg = (
            f"`library_id={library_id!r}` was given but `adata.obs` has no column {given!r} "
            f"(pass `library_key=`). Available columns: {list_keys(adata.obs.columns)}."
        )
        raise KeyError(msg)
    bad = [s for s in wanted if str(s) not in available]
    if bad:
        msg = f"Section(s) {bad} not found in `adata.obs[{library_key!r}]`. Available: {available}."
        raise ValueError(msg)
    return library_key, [str(s) for s in wanted]


def build_panels(
    data: SpatialData | AnnData,
    sections: list[str | None],
    *,
    table_key: str,
    library_key: str,
    image_key: str | None,
    image_px: int,
) -> list[Panel]:
    """One :class:`Panel` per section: spots in the pixel frame of the H&E thumbnail (SpatialData), else ``spatial``."""
    from anndata import AnnData

    adata = get_adata(data, table_key)
    panels = []
    for s in sections:
        mask = np.ones(adata.n_obs, bool) if s is None else (adata.obs[library_key].astype(str) == s).to_numpy()
        rows = np.flatnonzero(mask)
        name = "" if s is None else s
        if isinstance(data, AnnData):
            panels.append(_panel_from_obsm(adata, rows, name))
        else:
            panels.append(_panel_from_sdata(data, adata, rows, name, image_key=image_key, image_px=image_px))
    return panels


def _panel_from_obsm(adata: AnnData, rows: np.ndarray, name: str) -> Panel:
    if Key.SPATIAL not in adata.obsm:
        msg = (
            f"No {obs_noun(adata, 1)} coordinates: pass a SpatialData ({obs_noun(adata)} drawn over its image), or an "
            f"AnnData with `obsm['spatial']`. Available obsm keys: {list_keys(adata.obsm.keys())}."
        )
        raise KeyError(msg)
    xy = np.asarray(adata.obsm[Key.SPATIAL], dtype=float)[rows, :2]
    return Panel(name=name, rows=rows, xy=xy, radius=None)


def _patch_image(adata: AnnData, region: str) -> str | None:
    """The image that :func:`morphst.pp.extract_patches` cut this region's patches from, if recorded."""
    regions = adata.uns.get("patches", {}).get("regions", {}) if isinstance(adata.uns.get("patches"), dict) else {}
    rec = regions.get(region) if isinstance(regions, dict) else None
    return rec.get("image") if isinstance(rec, dict) else None


def _panel_from_sdata(sdata, adata, rows, name, *, image_key, image_px) -> Panel:
    from spatialdata.models import get_table_keys
    from spatialdata.transformations import get_transformation

    _, region_key, instance_key = get_table_keys(adata)
    regions = pd.unique(adata.obs[region_key].iloc[rows].astype(str))
    if len(regions) != 1:
        msg = (
            f"Section {name!r} spans {len(regions)} regions {list(regions)}; plot one region at a time "
            "(pass `library_id=` / `library_key=` so that one panel is one shapes element)."
        )
        raise ValueError(msg)
    region = str(regions[0])
    if region not in sdata.shapes:
        msg = f"Region {region!r} of the table is not a shapes element. Available shapes: {list_keys(sdata.shapes)}."
        raise ValueError(msg)
    shapes = sdata.shapes[region]
    ids = adata.obs[instance_key].iloc[rows].to_numpy()
    xy, radius = _spot_geometry(shapes.loc[ids])
    # the image the patches were cut from (uns["patches"], also written when a translator applies), else by name
    img_key, cs = match_image(
        sdata, shapes, region, image_key, recorded=_patch_image(adata, region), section=name or None, several="first"
    )
    if img_key is None:
        cs = sorted(get_transformation(shapes, get_all=True))[0]
        m = affine_xy(shapes, cs)
        pts = np.c_[xy, np.ones(len(xy))] @ m.T
        scale = np.sqrt(abs(np.linalg.det(m[:2, :2])))
        return Panel(name, rows, pts[:, :2], None if radius is None else radius * scale, meta={"cs": cs})
    image = sdata.images[img_key]
    m = np.linalg.inv(affine_xy(image, cs)) @ affine_xy(shapes, cs)  # shapes -> full-resolution image px
    thumb, sx, sy = _thumbnail(image, image_px)
    m = np.diag([1 / sx, 1 / sy, 1.0]) @ m
    pts = np.c_[xy, np.ones(len(xy))] @ m.T
    scale = np.sqrt(abs(np.linalg.det(m[:2, :2])))
    return Panel(
        name,
        rows,
        pts[:, :2],
        None if radius is None else radius * scale,
        image=thumb,
        meta={
            "cs": cs,
            "image_key": img_key,
            "shapes_key": region,
            "um_per_px": _thumbnail_um_per_px(sdata, adata, region, cs, image, sx),
        },
    )


def _thumbnail_um_per_px(sdata, adata, region: str, cs: str, image, sx: float) -> float | None:
    """µm per thumbnail pixel, when the µm scale of ``cs`` can be resolved (for the scale bar); else ``None``."""
    from .._utils._units import linear_scale, resolve_um_per_unit

    try:
        units = resolve_um_per_unit(sdata, adata, region, cs)
    except (ValueError, KeyError, TypeError):  # no unit declared or derivable: no scale bar
        return None
    value = float(units.um_per_unit) * linear_scale(affine_xy(image, cs)) * float(sx)
    return value if np.isfinite(value) and value > 0 else None


def _nice_length(um: float) -> float:
    """The largest 1, 2 or 5 × 10^k µm not above ``um``."""
    k = 10 ** np.floor(np.log10(um))
    return float(max(f * k for f in (1, 2, 5) if f * k <= um))


def add_scale_bar(ax: Axes, um_per_px: float, width_px: float) -> None:
    """A scale bar of a round µm length, about a fifth of the view wide, in the lower right corner."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = _nice_length(0.2 * width_px * um_per_px)
    label = f"{length / 1000:g} mm" if length >= 1000 else f"{length:g} µm"
    bar = AnchoredSizeBar(
        ax.transData,
        length / um_per_px,
        label,
        loc="lower right",
        frameon=False,
        size_vertical=0,
        color="black",
        pad=0.4,
        borderpad=0.3,
        sep=3,
    )
    bar.set_label("scale bar")
    ax.add_artist(bar)


#: Colour of spots without a value (NaN), e.g. a gene not predicted in the fold that held them out.
MISSING_COLOR = "lightgrey"


def draw_panel(
    ax: Axes,
    panel: Panel,
    *,
    values: np.ndarray | None = None,
    colors: list | np.ndarray | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.9,
    spot_size: float = 12.0,
    title: str | None = None,
    missing_label: str | None = None,
):
    """Draw ``panel`` on ``ax``: the image, then one circle per spot coloured by ``values`` or ``colors``.

    Spots whose value is NaN are drawn light grey; with ``missing_label`` and at least one such spot, a legend entry
    of that grey says what they are (e.g. "not predicted in this fold"). Returns the mappable (for a colour bar)
    when ``values`` is given, else ``None``.
    """
    import matplotlib
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    if panel.image is not None:
        h, w = panel.image.shape[:2]  # extent: thumbnail pixel i covers [i, i + 1), as in SpatialData
        ax.imshow(
            panel.image, cmap="gray" if panel.image.ndim == 2 else None, extent=(0, w, h, 0), interpolation="bilinear"
        )
    xy = panel.xy
    mappable = None
    if panel.radius is not None and len(xy):
        coll = PatchCollection([Circle((x, y), r) for (x, y), r in zip(xy, panel.radius, strict=True)])
        coll.set_alpha(alpha)
        coll.set_linewidth(0)
        if values is not None:
            coll.set_array(np.ma.masked_invalid(np.asarray(values, dtype=float)))
            cm = matplotlib.colormaps[cmap].with_extremes(bad=MISSING_COLOR) if isinstance(cmap, str) else cmap
            coll.set_cmap(cm)
            coll.set_clim(vmin, vmax)
            mappable = coll
        elif colors is not None:
            coll.set_facecolor(colors)
        ax.add_collection(coll)
    elif len(xy):
        kw = {"s": spot_size, "alpha": alpha, "linewidths": 0}
        if values is not None:
            cm = matplotlib.colormaps[cmap].with_extremes(bad=MISSING_COLOR) if isinstance(cmap, str) else cmap
            mappable = ax.scatter(
                xy[:, 0], xy[:, 1], c=np.ma.masked_invalid(values), cmap=cm, vmin=vmin, vmax=vmax,
                plotnonfinite=True, **kw,
            )  # fmt: skip
        else:
            ax.scatter(xy[:, 0], xy[:, 1], c=colors, **kw)
    if len(xy):
        r = float(np.nanmax(panel.radius)) if panel.radius is not None else 0.0
        pad = 2 * r if r > 0 else 0.05 * float(np.ptp(xy, axis=0).max() or 1.0)
        (x0, y0), (x1, y1) = xy.min(axis=0) - pad, xy.max(axis=0) + pad
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)  # image convention: y down
        if panel.meta.get("um_per_px"):
            add_scale_bar(ax, float(panel.meta["um_per_px"]), float(x1 - x0))
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize="medium")
    if missing_label and values is not None and len(xy) and not np.isfinite(np.asarray(values, dtype=float)).all():
        _missing_legend(ax, missing_label)
    return mappable


def _missing_legend(ax: Axes, label: str) -> None:
    """A legend entry (a light grey spot) for the spots without a value."""
    from matplotlib.lines import Line2D

    handle = Line2D([], [], ls="", marker="o", markersize=7, markerfacecolor=MISSING_COLOR, markeredgecolor="0.4")
    ax.legend([handle], [label], loc="lower left", fontsize="x-small", framealpha=0.8, handletextpad=0.3)


#: Macenko's reference stain vectors (optical density per unit of stain, RGB rows): haematoxylin, eosin.
_HE_STAINS = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]])
#: Smallest CIELAB distance (CIE76 ΔE) between a category colour and any typical H&E colour: below it a spot of
#: that colour fades into the stain (matplotlib's Dark2 slate purple is about 13 from haematoxylin).
HE_MIN_CONTRAST = 25.0


def he_colors() -> np.ndarray:
    """Typical H&E colours, RGB in [0, 1], shape ``(11, 3)``: Beer–Lambert ``exp(-(h H + e E))`` of the reference
    stain vectors for haematoxylin ``h`` in {0, 0.5, 1, 1.5} and eosin ``e`` in {0, 0.5, 1} (not both 0)."""
    amounts = [(h, e) for h in (0.0, 0.5, 1.0, 1.5) for e in (0.0, 0.5, 1.0) if h + e > 0]
    return np.array([np.exp(-(h * _HE_STAINS[0] + e * _HE_STAINS[1])) for h, e in amounts])


def he_contrast(colors: Sequence[str]) -> np.ndarray:
    """Per colour, the smallest CIE76 ΔE (CIELAB distance) to the typical H&E colours of :func:`he_colors`."""
    from matplotlib.colors import to_rgb
    from skimage.color import rgb2lab

    tissue = rgb2lab(he_colors()[None])[0]
    lab = rgb2lab(np.array([to_rgb(c) for c in colors], dtype=float)[None])[0]
    return np.linalg.norm(lab[:, None, :] - tissue[None, :, :], axis=-1).min(axis=1)


def visible_on_he(colors: Sequence[str]) -> list[str]:
    """The ``colors`` (order kept) that stay visible over H&E: :func:`he_contrast` at least :data:`HE_MIN_CONTRAST`."""
    colors = list(colors)
    return [c for c, d in zip(colors, he_contrast(colors), strict=True) if d >= HE_MIN_CONTRAST]


def category_colors(adata: AnnData, key: str, categories: list[str]) -> dict[str, str]:
    """Colours of a categorical ``obs`` column: ``uns[f"{key}_colors"]`` when it fits (scanpy), else scanpy's
    palettes (``default_20``, then ``default_102``) without the colours that fade into H&E (:func:`visible_on_he`)."""
    from scanpy.pl import palettes

    stored = adata.uns.get(f"{key}_colors")
    if stored is not None and len(stored) == len(categories):
        return dict(zip(categories, list(stored), strict=True))
    pal = _unique(visible_on_he([*palettes.default_20, *palettes.default_102]))
    return {c: pal[i % len(pal)] for i, c in enumerate(categories)}


def reference_colors(categories: list[str]) -> dict[str, str]:
    """Colours of a reference annotation drawn next to domains: a qualitative palette unlike scanpy's defaults.

    Matplotlib's ``Dark2``, ``Set2`` and ``Set3``, then scanpy's ``default_102`` from its 29th colour, each without
    the colours that fade into H&E (:func:`visible_on_he`); none starts like :func:`category_colors`, so equal
    names do not look matched.
    """
    import matplotlib
    from matplotlib.colors import to_hex
    from scanpy.pl import palettes

    pal = [to_hex(c) for name in ("Dark2", "Set2", "Set3") for c in matplotlib.colormaps[name].colors]
    pal = _unique(visible_on_he([*pal, *palettes.default_102[28:], *palettes.default_102[:28]]))
    return {c: pal[i % len(pal)] for i, c in enumerate(categories)}


def _unique(colors: list[str]) -> list[str]:
    """``colors`` without repeats (case-insensitive), order kept."""
    seen: set[str] = set()
    return [c for c in colors if not (c.lower() in seen or seen.add(c.lower()))]


def new_figure(nrows: int, ncols: int, *, figsize, panel_size: tuple[float, float] = (3.6, 3.6), **kw):
    """A figure with ``nrows x ncols`` axes (always a 2-D array) sized ``panel_size`` inches per panel."""
    import matplotlib.pyplot as plt

    if figsize is None:
        figsize = (panel_size[0] * ncols, panel_size[1] * nrows)
    kw.setdefault("layout", "constrained")
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **kw)
    return fig, axes
