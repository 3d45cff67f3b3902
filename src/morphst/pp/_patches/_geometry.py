"""Patch geometry: centres in image pixels, pyramid level and window per patch size, units and channels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..._constants import Key
from ..._utils import affine_xy, get_adata, image_levels, list_keys, shape_centroids
from ..._utils._checks import check_sdata
from ..._utils._match import match_image
from ..._utils._units import Units, linear_scale, resolve_um_per_unit, shape_diameter_um
from ._channels import channel_plan, resolve_intensity_range
from ._table import match_instance_ids, table_regions

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def valid_col(patch_size_um: float, main: bool) -> str:
    """``obs`` column of the valid fraction of the main patch (``main``) or of a ``patch_size_um`` µm context."""
    return Key.PATCH_VALID if main else f"{Key.PATCH_VALID}_{patch_size_um:g}um"


# --------------------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------------------
def _level_factors(levels) -> list[tuple[float, float]]:
    """Downscale factor (x, y) of every level relative to level 0, from the array shapes (as spatialdata does)."""
    h0, w0 = levels[0].shape[-2:]
    return [(w0 / lv.shape[-1], h0 / lv.shape[-2]) for lv in levels]


@dataclass
class RegionGeometry:
    region: str
    image_key: str
    cs: str
    rows: np.ndarray  # positions in the table
    centres: np.ndarray  # (n, 2) level-0 image px (x, y), continuous coordinates
    um_per_px: tuple[float, float]  # level 0, (x, y)
    channels: list[int]
    mode: str
    intensity_range: np.ndarray | None  # (n colour channels, 2)
    fill_value: int
    levels: list[int]  # per size
    level_um_per_px: list[float]  # per size
    window_px: list[tuple[int, int]]  # per size, (wx, wy) at the chosen level
    factors: list[tuple[float, float]]  # per size, level downscale factor (x, y)
    valid: list[np.ndarray]  # per size, (n,)
    transform: np.ndarray  # 3x3 shapes -> image px
    units: Units  # µm per unit of cs, and how it was found
    diameter_um: float | None = None  # median spot/cell diameter, µm (None for points)


def window_corners(centres: np.ndarray, f: tuple[float, float], w: tuple[int, int]) -> np.ndarray:
    """Top-left corners (x0, y0) at the level of downscale ``f`` of windows of ``w`` px centred on ``centres``."""
    cx = centres[:, 0] / f[0]
    cy = centres[:, 1] / f[1]
    return np.column_stack([np.round(cx - w[0] / 2.0), np.round(cy - w[1] / 2.0)]).astype(np.int64)


def _valid_fraction(xy0: np.ndarray, w: tuple[int, int], shape_hw: tuple[int, int]) -> np.ndarray:
    h, wd = shape_hw
    ix = np.clip(xy0[:, 0] + w[0], 0, wd) - np.clip(xy0[:, 0], 0, wd)
    iy = np.clip(xy0[:, 1] + w[1], 0, h) - np.clip(xy0[:, 1], 0, h)
    return (ix * iy) / float(w[0] * w[1])


def compute_geometry(
    sdata: SpatialData,
    adata: AnnData,
    *,
    image_key: str | None,
    shapes_key: str | None,
    patch_sizes_um: list[float],
    target_px: int,
    um_per_px: float | None,
    channels,
    intensity_range,
    fill_value: int | None,
    um_per_unit: float | None = None,
    spot_diameter_um: float | None = None,
) -> list[RegionGeometry]:
    """The geometry of the patches of every shapes element the table annotates (one per region with rows).

    Validates first (keys, shared coordinate systems, units, channels); writes nothing. Raises what
    :func:`extract_patches` documents.
    """
    regions, region_key, instance_key = _regions_to_read(sdata, adata, image_key, shapes_key)
    region_col = adata.obs[region_key].astype(str).to_numpy()
    out = []
    for region in regions:
        rows = np.flatnonzero(region_col == region)
        if len(rows) == 0:
            continue
        g = _region_geometry(
            sdata,
            adata,
            region,
            rows,
            instance_key,
            image_key=image_key,
            um_per_px=um_per_px,
            um_per_unit=um_per_unit,
            spot_diameter_um=spot_diameter_um,
            channels=channels,
            intensity_range=intensity_range,
            fill_value=fill_value,
            patch_sizes_um=patch_sizes_um,
            target_px=target_px,
        )
        out.append(g)
    if not out:
        msg = f"The table has no rows annotating {list_keys(regions)}."
        raise ValueError(msg)
    valid_main = np.concatenate([g.valid[0] for g in out])
    if not np.any(valid_main > 0):
        msg = (
            "Every patch lies off the image: the shapes do not overlap the image in the shared coordinate system. "
            "Check the transformations (`spatialdata.transformations.get_transformation`) and `um_per_px`."
        )
        raise ValueError(msg)
    return out


def _regions_to_read(
    sdata: SpatialData, adata: AnnData, image_key: str | None, shapes_key: str | None
) -> tuple[list[str], str, str]:
    """The shapes elements to cut patches around (``shapes_key``, else all the table annotates) and the table keys."""
    regions, region_key, instance_key = table_regions(adata)
    if image_key is not None and image_key not in sdata.images:
        msg = f"Image {image_key!r} not found. Available images: {list_keys(sdata.images)}."
        raise KeyError(msg)
    if shapes_key is not None:
        if shapes_key not in sdata.shapes:
            msg = f"Shapes {shapes_key!r} not found. Available shapes: {list_keys(sdata.shapes)}."
            raise KeyError(msg)
        if shapes_key not in regions:
            msg = (
                f"The table does not annotate shapes {shapes_key!r}; it annotates {list_keys(regions)}. Pick one of "
                "those, or use the table that annotates these shapes (`table_key=`)."
            )
            raise ValueError(msg)
        regions = [shapes_key]
    if len(sdata.images) == 0:
        msg = "The SpatialData has no images; add the H&E (or DAPI) image first."
        raise ValueError(msg)
    return regions, region_key, instance_key


def _level0_um_per_px(
    sdata: SpatialData,
    adata: AnnData,
    region: str,
    cs: str,
    a_image: np.ndarray,
    *,
    um_per_px: float | None,
    um_per_unit: float | None,
    spot_diameter_um: float | None,
) -> tuple[tuple[float, float], Units]:
    """µm per pixel (x, y) of the image's finest level, and the µm per unit of ``cs`` with how it was found."""
    if um_per_px is not None:
        units = Units(float(um_per_px) / linear_scale(a_image), f"given: um_per_px={float(um_per_px):g}")
        return (float(um_per_px), float(um_per_px)), units
    units = resolve_um_per_unit(sdata, adata, region, cs, um_per_unit=um_per_unit, spot_diameter_um=spot_diameter_um)
    u = units.um_per_unit
    lin = a_image[:2, :2]
    return (u * float(np.hypot(*lin[:, 0])), u * float(np.hypot(*lin[:, 1]))), units


def _region_geometry(
    sdata: SpatialData,
    adata: AnnData,
    region: str,
    rows: np.ndarray,
    instance_key: str,
    *,
    image_key: str | None,
    um_per_px: float | None,
    um_per_unit: float | None,
    spot_diameter_um: float | None,
    channels,
    intensity_range,
    fill_value: int | None,
    patch_sizes_um: list[float],
    target_px: int,
) -> RegionGeometry:
    """Image, coordinate system, patch centres (level-0 px), units and channels of the ``rows`` of one region.

    Then, per patch size, its pyramid level, window and valid fraction (:func:`_add_patch_size`).
    """
    if region not in sdata.shapes:
        msg = (
            f"The table annotates {region!r}, which is not a shapes element of the SpatialData "
            f"(available shapes: {list_keys(sdata.shapes)}); patches need spot/cell shapes."
        )
        raise ValueError(msg)
    shapes = sdata.shapes[region]
    img_key, cs = match_image(sdata, shapes, region, image_key)
    image = sdata.images[img_key]
    levels = image_levels(image)
    a_shapes = affine_xy(shapes, cs)
    a_image = affine_xy(image, cs)
    m = np.linalg.inv(a_image) @ a_shapes
    pos = match_instance_ids(adata.obs[instance_key].to_numpy()[rows], shapes.index, region)
    xy = shape_centroids(shapes)[pos]
    centres = (m @ np.column_stack([xy, np.ones(len(xy))]).T).T[:, :2]
    s0, units = _level0_um_per_px(
        sdata,
        adata,
        region,
        cs,
        a_image,
        um_per_px=um_per_px,
        um_per_unit=um_per_unit,
        spot_diameter_um=spot_diameter_um,
    )
    idx, mode = channel_plan(levels[0], channels)
    irange = resolve_intensity_range(levels, idx, mode, levels[0].dtype, intensity_range)
    fill = fill_value if fill_value is not None else (255 if mode in ("rgb", "rgba") else 0)
    g = RegionGeometry(
        region=region,
        image_key=img_key,
        cs=cs,
        rows=rows,
        centres=centres,
        um_per_px=s0,
        channels=idx,
        mode=mode,
        intensity_range=irange,
        fill_value=int(fill),
        levels=[],
        level_um_per_px=[],
        window_px=[],
        factors=[],
        valid=[],
        transform=m,
        units=units,
        diameter_um=shape_diameter_um(shapes, a_shapes, units.um_per_unit),
    )
    for patch_size_um in patch_sizes_um:
        _add_patch_size(g, levels, patch_size_um, target_px)
    return g


def _add_patch_size(g: RegionGeometry, levels: list, patch_size_um: float, target_px: int) -> None:
    """Append to ``g`` the pyramid level, window and valid fraction of a ``patch_size_um`` µm patch.

    The level is the coarsest whose µm/px is at most ``patch_size_um / target_px`` (level 0 when none is).
    """
    s0 = g.um_per_px
    factors = _level_factors(levels)
    need = patch_size_um / target_px
    res = [max(s0[0] * fx, s0[1] * fy) for fx, fy in factors]
    ok = [i for i, r in enumerate(res) if r <= need * (1 + 1e-3)]
    lvl = max(ok, key=lambda i: res[i]) if ok else 0
    fx, fy = factors[lvl]
    w = (round(patch_size_um / (s0[0] * fx)), round(patch_size_um / (s0[1] * fy)))
    if min(w) < 1:
        msg = (
            f"A {patch_size_um:g} µm patch is smaller than one pixel of image {g.image_key!r} ({s0[0]:.4g} µm/px) "
            "at every pyramid level; increase `patch_size`."
        )
        raise ValueError(msg)
    xy0 = window_corners(g.centres, (fx, fy), w)
    g.levels.append(lvl)
    g.level_um_per_px.append(res[lvl])
    g.window_px.append(w)
    g.factors.append((fx, fy))
    g.valid.append(_valid_fraction(xy0, w, levels[lvl].shape[-2:]))


#: Defaults of :func:`extract_patches` (HEST-Benchmark: 112 µm at 224 px, 0.5 µm/px).
DEFAULT_PATCH_SIZE_UM = 112.0
DEFAULT_TARGET_PX = 224


def check_default_geometry(sdata: SpatialData, table_key: str = Key.TABLE) -> None:
    """Raise what :func:`extract_patches` with its defaults would raise, writing and logging nothing."""
    check_sdata(sdata, "extract_patches", patches=True)
    compute_geometry(
        sdata,
        get_adata(sdata, table_key),
        image_key=None,
        shapes_key=None,
        patch_sizes_um=[DEFAULT_PATCH_SIZE_UM],
        target_px=DEFAULT_TARGET_PX,
        um_per_px=None,
        channels=None,
        intensity_range=None,
        fill_value=None,
    )
