"""Tiles over the detected tissue of an H&E-only slide: spots for slides that have none."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._constants import Key
from .._utils import affine_xy, image_levels, list_keys, records_params, save_results, shape_centroids
from .._utils._checks import check_sdata
from .._utils._quiet import import_squidpy, quiet_third_party
from .._utils._units import check_positive_um, resolve_image_scale

if TYPE_CHECKING:
    from spatialdata import SpatialData


def tile_tissue(
    sdata: SpatialData,
    image_key: str,
    *,
    tile_size: float = 112.0,
    min_tissue_fraction: float = 0.5,
    method: Literal["otsu", "felzenszwalb", "weka"] = "otsu",
    background: Literal["bright", "corners"] | None = None,
    um_per_unit: float | None = None,
    um_per_px: float | None = None,
    key_added: str | None = None,
    table_key: str | None = None,
    overwrite: bool = False,
) -> None:
    """Cover the tissue of an image with square tiles of ``tile_size`` µm: spots for an H&E-only slide.

    Tissue is detected and the slide tiled by squidpy (``squidpy.experimental.im.detect_tissue`` and
    ``make_tiles``, as sopa and LazySlide tile whole slides); morphst converts the tile size from µm to pixels of
    the image's finest level and keeps the tiles whose tissue fraction is at least ``min_tissue_fraction``. The
    result is a shapes element and a table that annotates it, so the rest of the pipeline runs unchanged:
    :func:`morphst.pp.extract_patches` / :func:`morphst.tl.embed_patches` with ``table_key=``, or
    :meth:`morphst.tl.Translator.predict_sdata` with ``shapes_key=key_added`` to predict expression over the
    tissue.

    Parameters
    ----------
    sdata
        SpatialData holding the image.
    image_key
        The H&E (or DAPI) image to tile.
    tile_size
        Side of a tile, µm (default: the 112 µm patch of :func:`morphst.pp.extract_patches`).
    min_tissue_fraction
        Keep tiles with at least this fraction of tissue pixels, in [0, 1].
    method
        Tissue detection of ``squidpy.experimental.im.detect_tissue``.
    background
        Which side of the threshold is background: ``"bright"`` (glass of a brightfield slide: tissue is darker),
        or ``"corners"`` (whatever the image corners hold, squidpy's own rule: suits fluorescence, but fails when
        tissue touches the corners). Default: ``"bright"`` for an RGB(A) image, ``"corners"`` otherwise;
        ``method="weka"`` needs ``"corners"``. A warning says when most kept tiles look like background.
    um_per_unit
        µm per unit of the image's coordinate system (overrides what the object says). When given (or
        ``um_per_px``), it is declared with :func:`morphst.pp.set_um_per_unit` so later steps use the same scale.
    um_per_px
        µm per pixel of the image's finest level (overrides everything else).
    key_added
        Name of the shapes element. Default: ``"<image_key>_tiles"``.
    table_key
        Name of the table that annotates the tiles (SpatialData names are unique across element types). Default:
        ``"<key_added>_table"``.
    overwrite
        Replace an existing shapes element / table of that name.

    Returns
    -------
    Nothing; sets

    - ``sdata.shapes[key_added]``: square polygons (one per kept tile) in the image's pixel space, with the image's
      transformations; index ``0..n_tiles-1``.
    - ``sdata.tables[table_key]``: AnnData ``(n_tiles, 0)`` annotating them (``obs['region']``,
      ``obs['instance_id']``, ``obs['tile_x']``, ``obs['tile_y']`` grid positions), ``obsm['spatial']`` tile
      centres in the coordinate system's units, ``uns['tiles']`` (``'params'``, ``'coordinate_system'``,
      ``'um_per_unit'``, ``'units_source'``, ``'tile_px'``, ``'n_tiles_total'``).
    - ``sdata.labels['<image_key>_tissue']``: the tissue mask of squidpy, if it was not there.

    Raises
    ------
    TypeError
        ``sdata`` is not a SpatialData.
    KeyError
        Unknown ``image_key`` (lists the images).
    ValueError
        ``tile_size`` not positive, ``min_tissue_fraction`` outside [0, 1], a pixel size that nothing determines
        (lists the options), outputs that exist without ``overwrite``, or no tile with enough tissue.
    """
    from spatialdata.models import TableModel

    from .._utils._units import declared_um_per_unit
    from ._units import set_um_per_unit

    check_sdata(sdata, "tile_tissue", patches=True)
    if image_key not in sdata.images:
        msg = f"Image {image_key!r} not found. Available images: {list_keys(sdata.images)}."
        raise KeyError(msg)
    tile_size = check_positive_um("tile_size", tile_size)
    if tile_size is None:
        msg = "`tile_size` must be a positive number (µm), got None."
        raise ValueError(msg)
    if not 0.0 <= min_tissue_fraction <= 1.0:
        msg = f"`min_tissue_fraction` must lie in [0, 1], got {min_tissue_fraction}."
        raise ValueError(msg)
    background = _check_background(sdata, image_key, background, method)
    key = key_added or f"{image_key}_tiles"
    tkey = table_key or f"{key}_table"
    if not overwrite and (key in sdata.shapes or tkey in sdata.tables):
        msg = f"Shapes {key!r} or table {tkey!r} already exist; pass `overwrite=True` or other names."
        raise ValueError(msg)
    cs, mpp, units = resolve_image_scale(sdata, image_key, um_per_unit=um_per_unit, um_per_px=um_per_px)
    tile_px = round(tile_size / mpp)
    if tile_px < 1:
        msg = f"A {tile_size:g} µm tile is smaller than one pixel ({mpp:.4g} µm/px); increase `tile_size`."
        raise ValueError(msg)
    start = logg.info(
        f"tiling the tissue of {image_key!r}: {tile_size:g} µm tiles ({tile_px} px at {mpp:.4g} µm/px; {units.source})"
    )
    grid, keep = _tissue_grid(sdata, image_key, method, background, tile_px, min_tissue_fraction, key)
    if not keep.any():
        msg = (
            f"No {tile_size:g} µm tile of {image_key!r} has {min_tissue_fraction:g} of its area in detected tissue "
            f"({len(grid)} tiles in all); lower `min_tissue_fraction` or `tile_size`, or check the image."
        )
        raise ValueError(msg)
    _warn_background_tiles(sdata, image_key, grid, keep, background)
    tiles = grid.loc[keep, ["tile_x", "tile_y", "geometry"]].reset_index(drop=True)
    shapes, table = _shapes_and_table(sdata, image_key, tiles, cs, key)
    table.uns["tiles"] = {
        "coordinate_system": cs,
        "um_per_unit": float(units.um_per_unit),
        "units_source": units.source,
        "tile_px": int(tile_px),
        "n_tiles_total": len(grid),
        "params": records_params(
            image_key=image_key,
            tile_size=float(tile_size),
            min_tissue_fraction=float(min_tissue_fraction),
            method=method,
            background=background,
            um_per_unit=um_per_unit,
            um_per_px=um_per_px,
            key_added=key,
            table_key=tkey,
            tissue_detection="squidpy.experimental.im.detect_tissue + make_tiles",
        ),
    }
    table = TableModel.parse(table, region=key, region_key="region", instance_key="instance_id")
    # everything computed: write
    if (um_per_unit is not None or um_per_px is not None) and declared_um_per_unit(sdata, None, cs) is None:
        set_um_per_unit(sdata, cs, units.um_per_unit)
    summary = f"{len(tiles)} of {len(grid)} tiles with ≥ {min_tissue_fraction:g} tissue"
    save_results(sdata, [("shapes", key, shapes), ("tables", tkey, table)], start=start, summary=summary)


def _check_background(sdata, image_key: str, background, method: str) -> str:
    """``background`` resolved (``"bright"`` for RGB(A) images, else ``"corners"``); ``ValueError`` if unusable."""
    if background is None:
        n_channels = image_levels(sdata.images[image_key])[0].shape[0]
        return "bright" if n_channels in (3, 4) else "corners"
    if background not in ("bright", "corners"):
        msg = f"`background` must be 'bright' (glass of a brightfield slide) or 'corners', got {background!r}."
        raise ValueError(msg)
    if background == "bright" and method == "weka":
        msg = "squidpy's weka tissue detection learns the background from the corners: pass `background='corners'`."
        raise ValueError(msg)
    return background


def _tissue_grid(sdata, image_key, method, background, tile_px, min_tissue_fraction, key):
    """The squidpy tile grid of ``tile_px`` tiles over the image and the mask of tiles classified as tissue.

    Writes ``labels[f"{image_key}_tissue"]`` (squidpy's ``detect_tissue``, oriented by ``background``) when it is
    not there; ``make_tiles`` classifies the tiles with it; the grid's temporary shapes element is removed again.
    """
    tmp = f"_morphst_tiles_{key}"
    with quiet_third_party():
        sq = import_squidpy()
        if f"{image_key}_tissue" not in sdata.labels:
            sq.experimental.im.detect_tissue(
                sdata,
                image_key,
                method=method,
                corners_are_background=background == "corners",  # no corner flagged: bright background
                new_labels_key=f"{image_key}_tissue",
            )
        sq.experimental.im.make_tiles(
            sdata,
            image_key,
            tile_size=(tile_px, tile_px),
            min_tissue_fraction=float(min_tissue_fraction),
            new_shapes_key=tmp,
            preview=False,
        )
    grid = sdata.shapes[tmp]
    del sdata.shapes[tmp]
    return grid, grid["tile_classification"].astype(str).to_numpy() == "tissue"


#: Warn when more than this fraction of the kept tiles is mostly background (glass) by the image's own threshold.
_BACKGROUND_TILES_WARN = 0.5


def _warn_background_tiles(sdata, image_key: str, grid, keep: np.ndarray, background: str) -> None:
    """Warn when most kept tiles lie on background: more than half of their pixels on the glass side of an Otsu
    threshold of the grey image (a coarse pyramid level), with glass the bright side for RGB(A) images."""
    from skimage.filters import threshold_otsu

    levels = image_levels(sdata.images[image_key])
    if levels[0].shape[0] not in (3, 4):
        return  # glass is bright only on brightfield (RGB) images
    lvl = next((lv for lv in levels if max(lv.shape[-2:]) <= 2048), levels[-1])
    step = max(1, int(np.ceil(max(lvl.shape[-2:]) / 2048)))  # no level that coarse: every step-th pixel
    grey = np.asarray(lvl.data[:3, ::step, ::step], dtype=float).mean(axis=0)
    if np.ptp(grey) == 0:
        return
    glass = grey > threshold_otsu(grey)
    fy, fx = levels[0].shape[-2] / grey.shape[0], levels[0].shape[-1] / grey.shape[1]
    frac = []
    for geom in grid.geometry[keep]:
        x0, y0, x1, y1 = geom.bounds
        win = glass[int(y0 // fy) : max(int(np.ceil(y1 / fy)), int(y0 // fy) + 1),
                    int(x0 // fx) : max(int(np.ceil(x1 / fx)), int(x0 // fx) + 1)]  # fmt: skip
        frac.append(win.mean() if win.size else 0.0)
    on_glass = int((np.asarray(frac) > 0.5).sum())
    if on_glass > _BACKGROUND_TILES_WARN * int(keep.sum()):
        fix = "pass `background='bright'`" if background == "corners" else "check the image (tissue darker than glass?)"
        logg.warning(
            f"{on_glass} of {int(keep.sum())} tiles kept on {image_key!r} lie mostly on background (brighter than the "
            f"image's Otsu threshold, as glass is on H&E): the tissue mask looks inverted; {fix}, or delete "
            f"`sdata.labels['{image_key}_tissue']` if it came from elsewhere."
        )


def _shapes_and_table(sdata, image_key, tiles, cs, key):
    """The tiles as a shapes element (the image's transformations) and a table of them (centres in ``cs``)."""
    import anndata as ad
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    gdf = tiles[["geometry"]].set_geometry("geometry")
    gdf.attrs = {}  # squidpy's transformations travel on the frame: set them once, from the image
    shapes = ShapesModel.parse(gdf, transformations=get_transformation(sdata.images[image_key], get_all=True))
    c = shape_centroids(shapes)
    xy = (affine_xy(shapes, cs) @ np.column_stack([c, np.ones(len(c))]).T).T[:, :2]
    obs = pd.DataFrame(
        {
            "region": pd.Categorical([key] * len(tiles)),
            "instance_id": np.asarray(shapes.index),
            "tile_x": tiles["tile_x"].to_numpy(),
            "tile_y": tiles["tile_y"].to_numpy(),
        },
        index=[f"tile{i}" for i in range(len(tiles))],
    )
    return shapes, ad.AnnData(obs=obs, obsm={Key.SPATIAL: xy})


__all__ = ["tile_tissue"]
