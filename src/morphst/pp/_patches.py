"""Spot/cell-centred patches at a physical size (µm), read lazily from the right pyramid level.

The geometry (centre in image pixels, pyramid level, window size) is recorded in the table by
:func:`extract_patches`; pixels are read on demand, chunk by chunk, by :class:`PatchReader` (used by
:func:`get_patches` and :func:`morphst.tl.embed_patches`).
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._constants import Key
from .._settings import settings
from .._utils import get_adata, image_levels, list_keys, records_params
from .._utils._units import Units, linear_scale, resolve_um_per_unit

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

#: ``obs`` columns written by :func:`extract_patches`.
OBS_X = "patch_x_px"
OBS_Y = "patch_y_px"
OBS_VALID = "patch_valid_fraction"
#: Chunks larger than this are not cached whole: windows are sliced from them directly.
_MAX_CHUNK_BYTES = 64 * 2**20
#: Batches ahead of the one being assembled whose chunks are decoded meanwhile (evicted last).
_LOOKAHEAD = 3
#: Default bytes of decoded chunks kept per reader (bounded memory, independent of the image size).
_CACHE_BYTES = 128 * 2**20


def _valid_col(size_um: float, main: bool) -> str:
    return OBS_VALID if main else f"{OBS_VALID}_{size_um:g}um"


# --------------------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------------------
def _affine_xy(element, cs: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    t = get_transformation(element, to_coordinate_system=cs)
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def _coordinate_systems(element) -> list[str]:
    from spatialdata.transformations import get_transformation

    return list(get_transformation(element, get_all=True).keys())


def _pick_coordinate_system(shapes, shared: list[str]) -> str:
    """Among the coordinate systems that shapes and image share, the shapes' own (identity), else the first.

    spatialdata-io writes three for Visium (``<id>``, ``<id>_downscaled_hires``, ``<id>_downscaled_lowres``); any
    of them maps shapes onto the image pixels alike, and the one where the shapes are untransformed is where the
    reader's scale information (full-resolution px) applies most directly.
    """
    from spatialdata.transformations import Identity, get_transformation

    for c in shared:
        if isinstance(get_transformation(shapes, to_coordinate_system=c), Identity):
            return c
    return shared[0]


def match_instance_ids(ids: np.ndarray, index: pd.Index, region: str) -> np.ndarray:
    """Positions in the shapes ``index`` of the table's instance ``ids``, after a safe cast between str and int.

    Raises
    ------
    ValueError
        If ids are missing from the shapes (after casting), naming both dtypes and examples.
    """
    idx = pd.Index(index)
    pos = idx.get_indexer(ids) if idx.is_unique else None
    if pos is None:
        msg = f"The index of shapes {region!r} has duplicated values; spots/cells must have unique ids."
        raise ValueError(msg)
    if (pos < 0).any():
        # str vs int ids ("12" vs 12) are common after CSV/zarr round trips: compare both as strings
        as_str = pd.Index(idx.astype(str))
        if as_str.is_unique:
            pos2 = as_str.get_indexer(pd.Index(ids).astype(str))
            if not (pos2 < 0).any():
                return pos2
        missing = pd.Index(ids)[pos < 0]
        msg = (
            f"{len(missing)} of {len(ids)} instance ids of the table (e.g. {list(missing[:3])}, dtype "
            f"{pd.Index(ids).dtype}) are not in the index of shapes {region!r} (e.g. {list(idx[:3])}, dtype "
            f"{idx.dtype}), even compared as strings. The table's instance_key column must hold the shapes' index "
            "values (see `spatialdata.models.TableModel.parse(..., instance_key=...)`)."
        )
        raise ValueError(msg)
    return pos


def _centroids(gdf) -> pd.DataFrame:
    geom = gdf.geometry
    if (geom.geom_type == "Point").all():
        return pd.DataFrame({"x": geom.x.to_numpy(), "y": geom.y.to_numpy()}, index=gdf.index)
    c = geom.centroid
    return pd.DataFrame({"x": c.x.to_numpy(), "y": c.y.to_numpy()}, index=gdf.index)


def _level_factors(levels) -> list[tuple[float, float]]:
    """Downscale factor (x, y) of every level relative to level 0, from the array shapes (as spatialdata does)."""
    h0, w0 = levels[0].shape[-2:]
    return [(w0 / lv.shape[-1], h0 / lv.shape[-2]) for lv in levels]


def _channel_plan(image, channels) -> tuple[list[int], str]:
    """Which channels to read and how to turn them into RGB: ``("rgb" | "grey")``."""
    c_coords = [str(c) for c in image.coords["c"].to_numpy()] if "c" in image.coords else None
    n_c = image.shape[0]
    if channels is not None:
        idx = []
        for ch in channels:
            if isinstance(ch, str):
                if c_coords is None or ch not in c_coords:
                    msg = f"Channel {ch!r} not in the image; available channels: {c_coords}."
                    raise ValueError(msg)
                idx.append(c_coords.index(ch))
            else:
                if not 0 <= int(ch) < n_c:
                    msg = f"Channel index {ch} out of range for an image with {n_c} channels."
                    raise ValueError(msg)
                idx.append(int(ch))
        if len(idx) not in (1, 3):
            msg = f"`channels` must select 1 (greyscale) or 3 (RGB) channels, got {len(idx)}."
            raise ValueError(msg)
        return idx, "grey" if len(idx) == 1 else "rgb"
    if n_c == 3:
        return [0, 1, 2], "rgb"
    if n_c == 4:  # RGBA: composited over white when read
        return [0, 1, 2, 3], "rgba"
    if n_c == 1:
        return [0], "grey"
    msg = (
        f"The image has {n_c} channels ({c_coords}); pass `channels=` with 1 (greyscale) or 3 (RGB) of them, "
        "e.g. `channels=['DAPI']`."
    )
    raise ValueError(msg)


#: Channel names of a colour (brightfield) image: one intensity range over them keeps the colour balance.
_COLOUR_NAMES = {"r", "g", "b", "red", "green", "blue"}


def _intensity_range(levels, idx: list[int], mode: str, dtype, intensity_range) -> np.ndarray | None:
    """``None`` for uint8, else per colour channel read ``[[low, high], ...]`` mapped onto 0..255.

    Given (one pair for all channels, or one per channel), or the 0.1/99.9 percentiles of the coarsest level,
    ignoring NaN: per channel, except for an RGB(A) image with channels named r, g, b, where one range over the
    colour channels keeps the colour balance of brightfield stains.
    """
    if np.dtype(dtype) == np.uint8:
        return None
    colour = idx[:3] if mode == "rgba" else idx
    n = len(colour)
    if intensity_range is not None:
        r = np.asarray(intensity_range, dtype=float)
        if r.shape == (2,):
            r = np.tile(r, (n, 1))
        if r.shape != (n, 2) or not np.isfinite(r).all():
            msg = (
                f"`intensity_range` must be one finite (low, high) pair or one per channel read ({n}), got "
                f"{intensity_range!r}."
            )
            raise ValueError(msg)
        if np.any(r[:, 1] <= r[:, 0]):
            msg = f"`intensity_range` needs low < high for every channel, got {r.tolist()}."
            raise ValueError(msg)
        return r
    lv = levels[-1].data
    small = np.asarray(lv[colour].compute() if hasattr(lv, "compute") else lv[colour], dtype=np.float64)
    names = [str(c).lower() for c in levels[-1].coords["c"].to_numpy()[colour]] if "c" in levels[-1].coords else []
    joint = mode in ("rgb", "rgba") and len(names) == 3 and set(names) <= _COLOUR_NAMES
    with np.errstate(all="ignore"):
        if joint:
            lo_hi = np.nanpercentile(small, [0.1, 99.9]) if np.isfinite(small).any() else np.array([0.0, 1.0])
            r = np.tile(lo_hi, (n, 1))
        else:
            r = np.array(
                [
                    np.nanpercentile(small[c], [0.1, 99.9]) if np.isfinite(small[c]).any() else [0.0, 1.0]
                    for c in range(n)
                ],
                dtype=float,
            )
    flat = ~(r[:, 1] > r[:, 0])
    r[flat, 1] = r[flat, 0] + 1.0
    return r


@dataclass
class _RegionGeometry:
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


def _windows(centres: np.ndarray, f: tuple[float, float], w: tuple[int, int]) -> np.ndarray:
    """Top-left corners (x0, y0) at the level of downscale ``f`` of windows of ``w`` px centred on ``centres``."""
    cx = centres[:, 0] / f[0]
    cy = centres[:, 1] / f[1]
    return np.column_stack([np.round(cx - w[0] / 2.0), np.round(cy - w[1] / 2.0)]).astype(np.int64)


def _valid_fraction(xy0: np.ndarray, w: tuple[int, int], shape_hw: tuple[int, int]) -> np.ndarray:
    h, wd = shape_hw
    ix = np.clip(xy0[:, 0] + w[0], 0, wd) - np.clip(xy0[:, 0], 0, wd)
    iy = np.clip(xy0[:, 1] + w[1], 0, h) - np.clip(xy0[:, 1], 0, h)
    return (ix * iy) / float(w[0] * w[1])


def require_sdata(sdata, fn: str) -> None:
    """Raise a ``TypeError`` unless ``sdata`` is a SpatialData: patches need the image, the shapes and the table."""
    from spatialdata import SpatialData

    if isinstance(sdata, SpatialData):
        return
    from anndata import AnnData

    got = "an AnnData" if isinstance(sdata, AnnData) else f"a {type(sdata).__name__}"
    msg = (
        f"`{fn}` needs the SpatialData (images + shapes + the table that annotates them), got {got}: patches are "
        "cut from the image around the spot/cell shapes, which an AnnData table does not hold. Pass the SpatialData, "
        "e.g. `sdata = mst.datasets.her2st()` rather than `sdata.tables['table']`."
    )
    raise TypeError(msg)


def _table_regions(adata: AnnData) -> tuple[list[str], str, str]:
    from spatialdata.models import get_table_keys

    if "spatialdata_attrs" not in adata.uns:
        msg = (
            "The table does not annotate any shapes (no `uns['spatialdata_attrs']`); parse it with "
            "`spatialdata.models.TableModel.parse(adata, region=..., region_key=..., instance_key=...)`."
        )
        raise ValueError(msg)
    region, region_key, instance_key = get_table_keys(adata)
    regions = [region] if isinstance(region, str) else list(region)
    return regions, region_key, instance_key


def _compute_geometry(
    sdata: SpatialData,
    adata: AnnData,
    *,
    image_key: str | None,
    shapes_key: str | None,
    sizes_um: list[float],
    target_px: int,
    um_per_px: float | None,
    channels,
    intensity_range,
    fill_value: int | None,
    um_per_unit: float | None = None,
    spot_diameter_um: float | None = None,
) -> list[_RegionGeometry]:
    regions, region_key, instance_key = _table_regions(adata)
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
    region_col = adata.obs[region_key].astype(str).to_numpy()
    out = []
    for region in regions:
        rows = np.flatnonzero(region_col == region)
        if len(rows) == 0:
            continue
        if region not in sdata.shapes:
            msg = (
                f"The table annotates {region!r}, which is not a shapes element of the SpatialData "
                f"(available shapes: {list_keys(sdata.shapes)}); patches need spot/cell shapes."
            )
            raise ValueError(msg)
        shapes = sdata.shapes[region]
        cs_shapes = _coordinate_systems(shapes)
        if image_key is not None:
            img_key = image_key
            shared = [c for c in _coordinate_systems(sdata.images[img_key]) if c in cs_shapes]
            if not shared:
                msg = (
                    f"No transformation path between shapes {region!r} (coordinate systems {cs_shapes}) and image "
                    f"{img_key!r} (coordinate systems {_coordinate_systems(sdata.images[img_key])}): they share no "
                    "coordinate system. Set one with `spatialdata.transformations.set_transformation`."
                )
                raise ValueError(msg)
        else:
            cands = [k for k in sdata.images if set(_coordinate_systems(sdata.images[k])) & set(cs_shapes)]
            if not cands:
                msg = (
                    f"No image shares a coordinate system with shapes {region!r} (coordinate systems {cs_shapes}); "
                    f"images: {list_keys(sdata.images)}. Pass `image_key=` and make sure a transformation path exists."
                )
                raise ValueError(msg)
            if len(cands) > 1:
                msg = (
                    f"Several images share a coordinate system with shapes {region!r}: {list_keys(cands)}; "
                    "pass `image_key=`."
                )
                raise ValueError(msg)
            img_key = cands[0]
            shared = [c for c in _coordinate_systems(sdata.images[img_key]) if c in cs_shapes]
        cs = _pick_coordinate_system(shapes, shared)
        image = sdata.images[img_key]
        levels = image_levels(image)
        a_shapes = _affine_xy(shapes, cs)
        a_image = _affine_xy(image, cs)
        m = np.linalg.inv(a_image) @ a_shapes
        cent = _centroids(shapes)
        pos = match_instance_ids(adata.obs[instance_key].to_numpy()[rows], cent.index, region)
        xy = cent[["x", "y"]].to_numpy(float)[pos]
        centres = (m @ np.column_stack([xy, np.ones(len(xy))]).T).T[:, :2]
        lin = a_image[:2, :2]
        if um_per_px is not None:
            s0 = (float(um_per_px), float(um_per_px))
            units = Units(float(um_per_px) / linear_scale(a_image), f"given: um_per_px={float(um_per_px):g}")
        else:
            units = resolve_um_per_unit(
                sdata, adata, region, cs, um_per_unit=um_per_unit, spot_diameter_um=spot_diameter_um
            )
            u = units.um_per_unit
            s0 = (u * float(np.hypot(*lin[:, 0])), u * float(np.hypot(*lin[:, 1])))
        idx, mode = _channel_plan(levels[0], channels)
        irange = _intensity_range(levels, idx, mode, levels[0].dtype, intensity_range)
        fill = fill_value if fill_value is not None else (255 if mode in ("rgb", "rgba") else 0)
        factors = _level_factors(levels)
        g = _RegionGeometry(
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
        )
        for size in sizes_um:
            need = size / target_px
            res = [max(s0[0] * fx, s0[1] * fy) for fx, fy in factors]
            ok = [i for i, r in enumerate(res) if r <= need * (1 + 1e-3)]
            lvl = max(ok, key=lambda i: res[i]) if ok else 0
            fx, fy = factors[lvl]
            w = (round(size / (s0[0] * fx)), round(size / (s0[1] * fy)))
            if min(w) < 1:
                msg = (
                    f"A {size:g} µm patch is smaller than one pixel of image {img_key!r} ({s0[0]:.4g} µm/px) at every "
                    "pyramid level; increase `patch_size`."
                )
                raise ValueError(msg)
            xy0 = _windows(centres, (fx, fy), w)
            valid = _valid_fraction(xy0, w, levels[lvl].shape[-2:])
            g.levels.append(lvl)
            g.level_um_per_px.append(res[lvl])
            g.window_px.append(w)
            g.factors.append((fx, fy))
            g.valid.append(valid)
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


#: Defaults of :func:`extract_patches` (HEST-Benchmark: 112 µm at 224 px, 0.5 µm/px).
DEFAULT_PATCH_SIZE_UM = 112.0
DEFAULT_TARGET_PX = 224


def check_default_geometry(sdata: SpatialData, table_key: str = Key.TABLE) -> None:
    """Raise what :func:`extract_patches` with its defaults would raise, writing and logging nothing."""
    require_sdata(sdata, "extract_patches")
    _compute_geometry(
        sdata,
        get_adata(sdata, table_key),
        image_key=None,
        shapes_key=None,
        sizes_um=[DEFAULT_PATCH_SIZE_UM],
        target_px=DEFAULT_TARGET_PX,
        um_per_px=None,
        channels=None,
        intensity_range=None,
        fill_value=None,
    )


#: Warn when more than this fraction of the patches overhang the image edge.
_EDGE_WARN_FRACTION = 0.10


def _report_geometry(geoms: list[_RegionGeometry], sizes: list[float], target_px: int) -> None:
    """Log the pyramid level, its µm/px and the window per region; warn on upsampling and on many edge patches.

    Upsampling is told in one warning per patch size (the first region's figures, and how many regions share it),
    so a multi-section dataset does not repeat the same warning per section.
    """
    upsampled: dict[float, list[str]] = {}
    for g in geoms:
        logg.info(
            f"    {g.region}: coordinate system {g.cs!r}, {g.units.um_per_unit:.6g} µm per unit ({g.units.source})"
        )
        for k, size in enumerate(sizes):
            w = g.window_px[k]
            logg.info(
                f"    {g.region} ({g.image_key}): {size:g} µm patch from pyramid level {g.levels[k]} "
                f"({g.level_um_per_px[k]:.4g} µm/px), window {w[0]} × {w[1]} px -> {target_px} px "
                f"({size / target_px:.4g} µm/px)"
            )
            if min(w) < target_px:
                upsampled.setdefault(size, []).append(
                    f"{g.region} ({g.image_key}): the {size:g} µm patch is upsampled {target_px / min(w):.2f}× "
                    f"({min(w)} native px -> {target_px} px): the image ({g.level_um_per_px[k]:.4g} µm/px at its "
                    f"finest level) is coarser than the requested {size / target_px:.4g} µm/px."
                )
    for msgs in upsampled.values():
        more = f" The same holds for {len(msgs) - 1} more region(s)." if len(msgs) > 1 else ""
        logg.warning(f"{msgs[0]}{more} Lower `target_px` or increase `patch_size` to avoid interpolated detail.")
    valid = np.concatenate([g.valid[0] for g in geoms])
    n_edge = int((valid < 1).sum())
    if n_edge > _EDGE_WARN_FRACTION * len(valid):
        logg.warning(
            f"{n_edge} of {len(valid)} patches ({100 * n_edge / len(valid):.0f}%) touch the image edge "
            f"({int((valid == 0).sum())} lie entirely off it) and are padded: check the shapes' transformation and "
            f"`patch_size` ({sizes[0]:g} µm); see obs['{OBS_VALID}']."
        )


def extract_patches(
    sdata: SpatialData,
    *,
    image_key: str | None = None,
    shapes_key: str | None = None,
    table_key: str = Key.TABLE,
    patch_size: float = DEFAULT_PATCH_SIZE_UM,
    target_px: int = DEFAULT_TARGET_PX,
    context: Sequence[float] | float | None = None,
    um_per_unit: float | None = None,
    um_per_px: float | None = None,
    spot_diameter_um: float | None = None,
    channels: Sequence[int | str] | None = None,
    intensity_range: tuple[float, float] | Sequence[tuple[float, float]] | None = None,
    fill_value: int | None = None,
) -> None:
    """Work out a square patch of ``patch_size`` µm centred on every spot/cell of the table.

    Each patch is centred on the centroid of the spot's shape, mapped into the image's pixel space through the
    SpatialData transformations (shapes and image need only share a coordinate system), read from the
    coarsest pyramid level that is still at least as fine as the needed resolution ``patch_size / target_px``
    µm/px, and resampled to ``target_px`` pixels (bilinear with antialiasing) when read. Window corners snap to the
    pixel grid of that level, so the centre is exact to half a level pixel (at most half an output pixel).
    Nothing is read here: this records the geometry; :func:`get_patches` and :func:`morphst.tl.embed_patches`
    read the pixels. Multi-scale context fields of view (the TRIPLEX / M2ORT idea: Chung et al., CVPR 2024;
    Wang et al., 2024) share the centre. Patches that overhang the image edge are padded (H&E: white) and the
    fraction inside the image is recorded. RGBA is composited over white (transparent background reads as
    glass, not as dense tissue); single-channel images are replicated to grey RGB; images that are not uint8 (e.g.
    uint16 DAPI, float) are mapped linearly onto 0–255 using ``intensity_range``; NaN pixels (registration margins)
    count as padding.

    **Units.** SpatialData transformations carry no unit, so the µm size of one coordinate unit is resolved from
    what the object says and recorded (``uns['patches']['regions'][...]['um_per_unit']`` and
    ``['units_source']``): an explicit ``um_per_px`` or ``um_per_unit`` wins; else morphst's datasets declare µm
    coordinate systems; else ``spot_diameter_um`` against the shapes' radius; else the 10x Visium scale factors
    that ``spatialdata_io.visium`` / scanpy keep in ``uns['spatial']`` (55 µm spot over ``spot_diameter_fullres``
    px), Visium HD bin sizes, or the µm shapes of ``spatialdata_io.xenium`` / ``merscope``. When nothing
    determines it, a ``ValueError`` lists these options: there is no silent assumption.

    Parameters
    ----------
    sdata
        SpatialData with an image, shapes (circles or polygons) and a table that annotates the shapes. Not an
        AnnData: the patches are cut from the image around the shapes, which the table alone does not hold.
    image_key
        Image to read. Default: per shapes element, the one image that shares a coordinate system with it
        (e.g. HER2ST ``"C2_spots"`` -> ``"C2_he"``).
    shapes_key
        Only the spots of this shapes element. Default: every shapes element the table annotates.
    table_key
        Table of the spots.
    patch_size
        Side of the patch, µm.
    target_px
        Side of the resampled patch, px; the patch resolution is ``patch_size / target_px`` µm/px.
    context
        Sides of larger fields of view around the same centre, µm, e.g. ``(336.0,)``; each is also resampled to
        ``target_px`` px.
    um_per_unit
        µm per unit of the coordinate system shared by shapes and image (e.g. ``1.0`` when it is in µm). Overrides
        what is read from the object (see Units above).
    um_per_px
        µm per pixel of the image's finest pyramid level. Overrides everything else.
    spot_diameter_um
        Physical diameter of the spots, µm (10x Visium 55, legacy ST 100): with the shapes' radius, it gives the
        scale when the object does not state it.
    channels
        Channel indices or names to read (1 or 3). Default: RGB as is, RGBA composited over white, single channel
        as grey.
    intensity_range
        For non-uint8 images, intensities mapped onto 0 and 255: one ``(low, high)`` for every channel, or one pair
        per channel read. Default: the 0.1 and 99.9 percentiles (NaN ignored) of the coarsest pyramid level, per
        channel; for a 3- or 4-channel image read as RGB (brightfield) one range over the three colour channels,
        which keeps the colour balance.
    fill_value
        Padding value (0–255) outside the image and for NaN pixels. Default: 255 (white) for RGB, else 0.

    Returns
    -------
    Nothing; sets in ``sdata.tables[table_key]``:

    - ``.obs['patch_x_px']``, ``.obs['patch_y_px']``: float, patch centre in level-0 pixels of its image
      (continuous coordinates: pixel ``i`` covers ``[i, i + 1)``); NaN for rows outside ``shapes_key``.
    - ``.obs['patch_valid_fraction']``: float in [0, 1], fraction of the patch inside the image;
      ``.obs['patch_valid_fraction_<size>um']`` for every context size.
    - ``.uns['patches']``: ``'sizes_um'`` (patch then context sides, µm), ``'target_px'``, ``'regions'``
      (per shapes element: ``'image'``, ``'coordinate_system'``, ``'um_per_unit'`` (µm per coordinate unit)
      and ``'units_source'`` (how it was found), ``'um_per_px'`` (level 0, x and y), ``'level'``,
      ``'level_um_per_px'``, ``'window_px'`` (per size), ``'channels'``, ``'channel_mode'``,
      ``'intensity_range'`` (per channel, ``[[low, high], ...]``, or ``'None'`` for uint8), ``'fill_value'``,
      ``'transform'`` (3 × 3 affine, shapes -> image px)) and ``'params'``.

    Raises
    ------
    TypeError
        ``sdata`` is not a SpatialData (e.g. an AnnData table).
    KeyError
        Unknown ``image_key`` / ``shapes_key`` (lists what exists).
    ValueError
        Unknown table, a table that does not annotate the shapes, no coordinate system shared by shapes and image,
        a scale (µm per unit) that nothing determines, every patch off the image, a patch smaller than one pixel
        at every level, bad ``channels``, ``um_per_px`` / ``um_per_unit`` / ``spot_diameter_um`` not positive,
        ``fill_value`` outside 0–255, table instance ids missing from the shapes.
    """
    require_sdata(sdata, "extract_patches")
    start = logg.info("extracting patch geometry")
    adata = get_adata(sdata, table_key)
    if not patch_size > 0:
        msg = f"`patch_size` must be positive (µm), got {patch_size}."
        raise ValueError(msg)
    if int(target_px) < 1:
        msg = f"`target_px` must be a positive number of pixels, got {target_px}."
        raise ValueError(msg)
    if context is None:
        ctx: list[float] = []
    elif np.isscalar(context):
        ctx = [float(context)]
    else:
        ctx = [float(c) for c in context]
    if any(not c > 0 for c in ctx):
        msg = f"`context` sizes must be positive (µm), got {ctx}."
        raise ValueError(msg)
    for name, v in (("um_per_px", um_per_px), ("um_per_unit", um_per_unit), ("spot_diameter_um", spot_diameter_um)):
        if v is not None and not (np.isfinite(v) and v > 0):
            msg = f"`{name}` must be a positive number (µm), got {v}."
            raise ValueError(msg)
    if fill_value is not None and not 0 <= fill_value <= 255:
        msg = f"`fill_value` is a padding intensity of the 8-bit patches and must lie in 0–255, got {fill_value}."
        raise ValueError(msg)
    sizes = [float(patch_size), *ctx]
    geoms = _compute_geometry(
        sdata,
        adata,
        image_key=image_key,
        shapes_key=shapes_key,
        sizes_um=sizes,
        target_px=int(target_px),
        um_per_px=um_per_px,
        channels=channels,
        intensity_range=intensity_range,
        fill_value=fill_value,
        um_per_unit=um_per_unit,
        spot_diameter_um=spot_diameter_um,
    )
    _report_geometry(geoms, sizes, int(target_px))
    # everything validated: write
    n = adata.n_obs
    cx = np.full(n, np.nan)
    cy = np.full(n, np.nan)
    valid = [np.full(n, np.nan) for _ in sizes]
    regions = {}
    for g in geoms:
        cx[g.rows] = g.centres[:, 0]
        cy[g.rows] = g.centres[:, 1]
        for k in range(len(sizes)):
            valid[k][g.rows] = g.valid[k]
        regions[g.region] = {
            "image": g.image_key,
            "coordinate_system": g.cs,
            "um_per_unit": float(g.units.um_per_unit),
            "units_source": g.units.source,
            "um_per_px": list(g.um_per_px),
            "level": [int(v) for v in g.levels],
            "level_um_per_px": [float(v) for v in g.level_um_per_px],
            "level_factor": [list(f) for f in g.factors],
            "window_px": [list(map(int, w)) for w in g.window_px],
            "channels": list(g.channels),
            "channel_mode": g.mode,
            "intensity_range": "None" if g.intensity_range is None else np.asarray(g.intensity_range, dtype=float),
            "fill_value": int(g.fill_value),
            "transform": np.asarray(g.transform, dtype=float),
        }
    for col in [c for c in adata.obs.columns if c.startswith(OBS_VALID)]:
        del adata.obs[col]
    adata.obs[OBS_X] = cx
    adata.obs[OBS_Y] = cy
    for k, s in enumerate(sizes):
        adata.obs[_valid_col(s, k == 0)] = valid[k]
    adata.uns[Key.PATCHES] = {
        "sizes_um": sizes,
        "target_px": int(target_px),
        "regions": regions,
        "params": records_params(
            image_key=image_key,
            shapes_key=shapes_key,
            table_key=table_key,
            patch_size=float(patch_size),
            target_px=int(target_px),
            context=ctx,
            um_per_unit=um_per_unit,
            um_per_px=um_per_px,
            spot_diameter_um=spot_diameter_um,
            channels=None if channels is None else list(channels),
            intensity_range=intensity_range,
            fill_value=fill_value,
            resampling="bilinear, antialias (torch.nn.functional.interpolate)",
        ),
    }
    v = valid[0][np.isfinite(valid[0])]
    logg.info(
        f"    finished: {len(v)} patches of {patch_size:g} µm -> {target_px} px in {len(geoms)} region(s), "
        f"{int((v < 1).sum())} at the image edge, {int((v == 0).sum())} off the image; added "
        f"obs {[OBS_X, OBS_Y] + [_valid_col(s, k == 0) for k, s in enumerate(sizes)]}, uns['{Key.PATCHES}']",
        time=start,
    )


# --------------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------------
def _zarr_source(data):
    """The zarr array behind a dask array made by ``dask.array.from_zarr`` with nothing on top, else ``None``."""
    try:
        layers = data.dask.layers
    except AttributeError:  # pragma: no cover
        return None
    if len(layers) != 2:
        return None
    for name, layer in layers.items():
        if name.startswith("original-from-zarr") and hasattr(layer, "values"):
            vals = list(layer.values())
            if len(vals) == 1:
                z = vals[0]
                if (
                    type(z).__module__.startswith("zarr")
                    and tuple(z.shape) == tuple(data.shape)
                    and z.dtype == data.dtype
                ):
                    return z
    return None


class _LevelReader:
    """Windows of one pyramid level, assembled from decoded chunks kept in a bounded LRU cache."""

    def __init__(self, arr, channels: list[int], mode: str, irange, fill: int, cache_bytes: int = _CACHE_BYTES):
        data = arr.data if hasattr(arr, "dims") else arr
        self.data = data
        self.channels = channels
        self.mode = mode
        self.irange = irange
        self.fill = fill
        self.h, self.w = data.shape[-2:]
        self.is_dask = hasattr(data, "dask")
        # a level that is a plain `from_zarr` dask array is read from the zarr array itself (half the overhead)
        self.zarr = _zarr_source(data) if self.is_dask else None
        if self.is_dask:
            ch = data.chunks
            self.yb = np.cumsum((0, *ch[-2]))
            self.xb = np.cumsum((0, *ch[-1]))
            chunk_bytes = max(ch[-2]) * max(ch[-1]) * 3
            self.direct = chunk_bytes > _MAX_CHUNK_BYTES
        else:
            self.direct = True
        self.cache: OrderedDict = OrderedDict()
        self.cache_bytes = cache_bytes
        self.nbytes = 0
        self.lock = threading.Lock()

    def _convert(self, block: np.ndarray) -> np.ndarray:
        """(C, h, w) of the selected channels -> (h, w, 3) uint8.

        Intensities map per channel through ``irange``; NaN pixels become ``fill``; RGBA is composited over white.
        """
        block = np.asarray(block)
        alpha = None
        if self.mode == "rgba":
            a = block[3].astype(np.float32)
            if block.dtype.kind in "iu":
                a /= float(np.iinfo(block.dtype).max)
            alpha = np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0)
            block = block[:3]
        nan = np.isnan(block).any(axis=0) if block.dtype.kind == "f" else None
        if self.irange is not None or alpha is not None or nan is not None:
            v = block.astype(np.float32)
            if self.irange is not None:
                lo = self.irange[:, 0, None, None].astype(np.float32)
                v = (v - lo) * (255.0 / (self.irange[:, 1, None, None] - self.irange[:, 0, None, None])).astype(
                    np.float32
                )
            v = np.clip(v, 0, 255)
            if alpha is not None:
                v = v * alpha + 255.0 * (1.0 - alpha)
            if nan is not None and nan.any():
                v[:, nan] = self.fill
            block = (v + 0.5).astype(np.uint8)
        elif block.dtype != np.uint8:
            block = block.astype(np.uint8)
        # (C, h, w) -> (h, w, 3) one channel at a time: ~3x faster than a moveaxis copy of the whole block
        out = np.empty((*block.shape[-2:], 3), np.uint8)
        for c in range(3):
            out[:, :, c] = block[0 if self.mode == "grey" else c]
        return out

    def _read(self, y0, y1, x0, x1) -> np.ndarray:
        if self.zarr is not None:
            if len(self.channels) == self.data.shape[0]:
                return self._convert(self.zarr[:, y0:y1, x0:x1])
            return self._convert(self.zarr.get_orthogonal_selection((self.channels, slice(y0, y1), slice(x0, x1))))
        sub = (
            self.data[self.channels, y0:y1, x0:x1]
            if len(self.channels) != self.data.shape[0]
            else self.data[:, y0:y1, x0:x1]
        )
        if self.is_dask:
            sub = sub.compute(scheduler="synchronous")
        return self._convert(sub)

    def chunk_keys(self, x0: int, y0: int, wx: int, wy: int) -> list[tuple[int, int]]:
        xa, xb_ = max(x0, 0), min(x0 + wx, self.w)
        ya, yb_ = max(y0, 0), min(y0 + wy, self.h)
        if xa >= xb_ or ya >= yb_:
            return []
        i0 = np.searchsorted(self.yb, ya, side="right") - 1
        i1 = np.searchsorted(self.yb, yb_ - 1, side="right") - 1
        j0 = np.searchsorted(self.xb, xa, side="right") - 1
        j1 = np.searchsorted(self.xb, xb_ - 1, side="right") - 1
        return [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]

    def load(self, key: tuple[int, int]) -> None:
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return
        i, j = key
        block = self._read(int(self.yb[i]), int(self.yb[i + 1]), int(self.xb[j]), int(self.xb[j + 1]))
        with self.lock:
            if key not in self.cache:
                self.cache[key] = block
                self.nbytes += block.nbytes

    def evict(self, keep: set) -> None:
        with self.lock:
            while self.nbytes > self.cache_bytes and len(self.cache) > len(keep):
                for k in self.cache:
                    if k not in keep:
                        self.nbytes -= self.cache.pop(k).nbytes
                        break
                else:  # pragma: no cover
                    break

    def window(self, x0: int, y0: int, wx: int, wy: int, out: np.ndarray) -> None:
        """Fill ``out`` (wy, wx, 3) with the window at (x0, y0), padding outside the image."""
        xa, xb_ = max(x0, 0), min(x0 + wx, self.w)
        ya, yb_ = max(y0, 0), min(y0 + wy, self.h)
        if xa >= xb_ or ya >= yb_:
            out[:] = self.fill
            return
        if xa > x0 or ya > y0 or xb_ < x0 + wx or yb_ < y0 + wy:
            out[:] = self.fill
        if self.direct:
            out[ya - y0 : yb_ - y0, xa - x0 : xb_ - x0] = self._read(ya, yb_, xa, xb_)
            return
        for i, j in self.chunk_keys(x0, y0, wx, wy):
            cy0, cy1, cx0, cx1 = int(self.yb[i]), int(self.yb[i + 1]), int(self.xb[j]), int(self.xb[j + 1])
            block = self.cache[(i, j)]
            sy0, sy1 = max(ya, cy0), min(yb_, cy1)
            sx0, sx1 = max(xa, cx0), min(xb_, cx1)
            out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[sy0 - cy0 : sy1 - cy0, sx0 - cx0 : sx1 - cx0]

    def plan(self, xy0: np.ndarray, w: tuple[int, int]) -> np.ndarray:
        """Per window (rows of ``xy0``), vectorised: ``[x0, y0, xa, xb, ya, yb, i0, i1, j0, j1]``.

        ``xa:xb, ya:yb`` is the part inside the image (empty when ``xa >= xb`` or ``ya >= yb``) and
        ``i0..i1, j0..j1`` (inclusive) the chunk rows and columns it touches.
        """
        x0, y0 = xy0[:, 0].astype(np.int64), xy0[:, 1].astype(np.int64)
        xa, xb_ = np.maximum(x0, 0), np.minimum(x0 + w[0], self.w)
        ya, yb_ = np.maximum(y0, 0), np.minimum(y0 + w[1], self.h)
        i0 = np.searchsorted(self.yb, ya, side="right") - 1
        i1 = np.searchsorted(self.yb, yb_ - 1, side="right") - 1
        j0 = np.searchsorted(self.xb, xa, side="right") - 1
        j1 = np.searchsorted(self.xb, xb_ - 1, side="right") - 1
        return np.column_stack([x0, y0, xa, xb_, ya, yb_, i0, i1, j0, j1])

    @staticmethod
    def plan_keys(plan: np.ndarray) -> list[tuple[int, int]]:
        """Sorted chunk keys ``(i, j)`` touched by the windows of ``plan``."""
        keys = set()
        for _x0, _y0, xa, xb_, ya, yb_, i0, i1, j0, j1 in plan.tolist():
            if xa < xb_ and ya < yb_:
                keys.update((i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1))
        return sorted(keys)

    def fill_cached(self, plan: np.ndarray, w: tuple[int, int], buf: np.ndarray) -> None:
        """Fill ``buf[k]`` (wy, wx, 3) with window ``k`` of ``plan`` from cached chunks, padding outside the image."""
        wx, wy = w
        yb, xb = self.yb.tolist(), self.xb.tolist()
        cache = self.cache
        for k, (x0, y0, xa, xb_, ya, yb_, i0, i1, j0, j1) in enumerate(plan.tolist()):
            out = buf[k]
            if xa >= xb_ or ya >= yb_:
                out[:] = self.fill
                continue
            if xa > x0 or ya > y0 or xb_ < x0 + wx or yb_ < y0 + wy:
                out[:] = self.fill
            for i in range(i0, i1 + 1):
                cy0, cy1 = yb[i], yb[i + 1]
                sy0, sy1 = max(ya, cy0), min(yb_, cy1)
                for j in range(j0, j1 + 1):
                    cx0, cx1 = xb[j], xb[j + 1]
                    sx0, sx1 = max(xa, cx0), min(xb_, cx1)
                    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = cache[(i, j)][
                        sy0 - cy0 : sy1 - cy0, sx0 - cx0 : sx1 - cx0
                    ]


def _resample(batch: np.ndarray, target_px: int):
    """(B, h, w, 3) uint8 -> torch uint8 (B, 3, T, T), channels_last, bilinear with antialias."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(batch).permute(0, 3, 1, 2)
    if batch.shape[1] == target_px and batch.shape[2] == target_px:
        return t
    return F.interpolate(t, size=(target_px, target_px), mode="bilinear", antialias=True, align_corners=False)


@dataclass
class _Group:
    reader: _LevelReader
    rows: np.ndarray
    xy0: np.ndarray
    w: tuple[int, int]


class PatchReader:
    """Stream patches recorded by :func:`extract_patches` in batches, reading only the chunks they touch.

    Batches come from a background thread (chunk decoding in a thread pool), so reading overlaps whatever the
    consumer does with the previous batch. Memory is bounded by the chunk cache, not by the image size.
    """

    def __init__(
        self,
        sdata: SpatialData,
        *,
        table_key: str = Key.TABLE,
        size_index: int = 0,
        n_workers: int | None = None,
        cache_bytes: int = _CACHE_BYTES,
    ):
        adata = get_adata(sdata, table_key)
        info = adata.uns.get(Key.PATCHES)
        if not isinstance(info, dict) or "regions" not in info or OBS_X not in adata.obs:
            msg = f"No patch geometry in table {table_key!r}; run `mst.pp.extract_patches` first."
            raise KeyError(msg)
        sizes = list(np.atleast_1d(info["sizes_um"]).astype(float))
        if not 0 <= size_index < len(sizes):
            msg = (
                f"Context index {size_index - 1} out of range; the patches have context sizes {sizes[1:]} µm "
                "(run `mst.pp.extract_patches(sdata, context=(...))` to add some)."
            )
            raise ValueError(msg)
        self.size_um = sizes[size_index]
        self.target_px = int(info["target_px"])
        self.n_obs = adata.n_obs
        self.n_workers = n_workers or settings.n_workers
        _, region_key, _ = _table_regions(adata)
        region_col = adata.obs[region_key].astype(str).to_numpy()
        centres = adata.obs[[OBS_X, OBS_Y]].to_numpy(float)
        self.groups: dict[str, _Group] = {}
        self.row_group = np.full(self.n_obs, "", dtype=object)
        for region, r in info["regions"].items():
            if r["image"] not in sdata.images:
                msg = f"Image {r['image']!r} of the patch geometry is gone; run `mst.pp.extract_patches` again."
                raise KeyError(msg)
            levels = image_levels(sdata.images[r["image"]])
            lvl = int(np.atleast_1d(r["level"])[size_index])
            f = tuple(np.asarray(r["level_factor"], float)[size_index])
            w = tuple(int(v) for v in np.asarray(r["window_px"])[size_index])
            irange = r["intensity_range"]
            irange = None if isinstance(irange, str) else np.asarray(irange, dtype=float).reshape(-1, 2)
            reader = _LevelReader(
                levels[lvl],
                [int(c) for c in np.atleast_1d(r["channels"])],
                str(r["channel_mode"]),
                irange,
                int(r["fill_value"]),
                cache_bytes,
            )
            rows = np.flatnonzero((region_col == region) & np.isfinite(centres[:, 0]))
            xy0 = _windows(centres[rows], f, w)
            self.groups[region] = _Group(reader, rows, xy0, w)
            self.row_group[rows] = region

    @property
    def rows(self) -> np.ndarray:
        """Table rows that have a patch."""
        return np.flatnonzero(self.row_group != "")

    def _plan(self, rows: np.ndarray | None, sort: bool) -> list[tuple[_Group, np.ndarray]]:
        """Per group, positions (into group arrays) to read, in the order to read them."""
        plan = []
        if rows is None:
            for g in self.groups.values():
                pos = np.arange(len(g.rows))
                if sort and g.reader.is_dask and not g.reader.direct:
                    cy = np.searchsorted(g.reader.yb, g.xy0[:, 1] + g.w[1] // 2, side="right")
                    cx = np.searchsorted(g.reader.xb, g.xy0[:, 0] + g.w[0] // 2, side="right")
                    pos = np.lexsort((cx, cy))
                plan.append((g, pos))
            return plan
        # keep the requested order: consecutive runs of the same group
        rows = np.asarray(rows)
        bad = rows[self.row_group[rows] == ""]
        if len(bad):
            msg = (
                f"{len(bad)} requested rows have no patch geometry (rows outside the shapes given to extract_patches)."
            )
            raise ValueError(msg)
        lookup = {name: pd.Series(np.arange(len(g.rows)), index=g.rows) for name, g in self.groups.items()}
        names = self.row_group[rows]
        start = 0
        for k in range(1, len(rows) + 1):
            if k == len(rows) or names[k] != names[start]:
                g = self.groups[names[start]]
                plan.append((g, lookup[names[start]].loc[rows[start:k]].to_numpy()))
                start = k
        return plan

    def _batches(
        self, plan, batch_size: int, pool: ThreadPoolExecutor, resampler: ThreadPoolExecutor | None = None
    ) -> Iterator[tuple[np.ndarray, Any]]:
        batches = [(g, pos[b : b + batch_size]) for g, pos in plan for b in range(0, len(pos), batch_size)]
        # window bounds and chunk ranges of every batch, vectorised (chunked levels only)
        plans = [None if g.reader.direct else g.reader.plan(g.xy0[p], g.w) for g, p in batches]
        keys_all = [[] if pl is None else _LevelReader.plan_keys(pl) for pl in plans]

        inflight: dict = {}
        out: deque = deque()

        def submit(k: int) -> None:
            # decode the chunks of batch k in the pool, while earlier batches are assembled and resampled
            if k >= len(batches):
                return
            rd = batches[k][0].reader
            for key in keys_all[k]:
                if (id(rd), key) not in inflight and key not in rd.cache:
                    inflight[(id(rd), key)] = pool.submit(rd.load, key)

        def protected(k: int) -> set:
            return {key for kk in range(k, min(k + _LOOKAHEAD + 1, len(batches))) for key in keys_all[kk]}

        for k in range(min(_LOOKAHEAD, len(batches))):
            submit(k)
        for k, (g, p) in enumerate(batches):
            rd = g.reader
            submit(k + _LOOKAHEAD)
            keys = keys_all[k]
            for key in keys:
                f = inflight.pop((id(rd), key), None)
                if f is not None:
                    f.result()
                if key not in rd.cache:  # pragma: no cover  (evicted meanwhile: protected keys are not)
                    rd.load(key)
            buf = np.empty((len(p), g.w[1], g.w[0], 3), np.uint8)
            if rd.direct:

                def fill(i, p=p, buf=buf, g=g, rd=rd):
                    rd.window(int(g.xy0[p[i], 0]), int(g.xy0[p[i], 1]), g.w[0], g.w[1], buf[i])

                list(pool.map(fill, range(len(p))))
            else:
                with rd.lock:
                    for key in keys:
                        rd.cache.move_to_end(key)
                rd.fill_cached(plans[k], g.w, buf)
                rd.evict(protected(k))
            if resampler is None:
                yield g.rows[p], _resample(buf, self.target_px)
                continue
            # resample batch k in its own thread while batch k + 1 is assembled
            out.append((g.rows[p], resampler.submit(_resample, buf, self.target_px)))
            if len(out) > 1:
                r, f = out.popleft()
                yield r, f.result()
        while out:
            r, f = out.popleft()
            yield r, f.result()

    def iter_batches(
        self, rows: Sequence[int] | np.ndarray | None = None, *, batch_size: int = 64, prefetch: int = 2
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Yield ``(table_rows, patches)`` with ``patches`` a torch uint8 tensor ``(B, 3, T, T)`` (channels_last).

        With ``rows=None`` every row with a patch is read, in an order that follows the image chunks; otherwise
        the given rows, in that order.
        """
        plan = self._plan(None if rows is None else np.asarray(rows, dtype=np.int64), sort=rows is None)
        q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        stop = threading.Event()
        done = object()

        def produce():
            try:
                with (
                    ThreadPoolExecutor(max_workers=self.n_workers) as pool,
                    ThreadPoolExecutor(max_workers=1) as resampler,
                ):
                    for item in self._batches(plan, batch_size, pool, resampler):
                        while not stop.is_set():
                            try:
                                q.put(item, timeout=0.1)
                                break
                            except queue.Full:
                                continue
                        if stop.is_set():
                            return
                q.put(done)
            except BaseException as e:
                q.put(e)

        th = threading.Thread(target=produce, daemon=True, name="morphst-patch-reader")
        th.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            th.join(timeout=5)


def context_index(context) -> int:
    """Size index for ``context``: ``False`` -> 0 (the main patch), an integer ``k >= 0`` -> ``k + 1``.

    Raises
    ------
    ValueError
        For ``True`` (ambiguous: it would read as index 1), negative or non-integer values.
    """
    if context is False or context is None:
        return 0
    if isinstance(context, bool | np.bool_) or not isinstance(context, int | np.integer) or context < 0:
        msg = (
            f"`context` must be False (the main patch) or the 0-based index of a context size recorded by "
            f"`mst.pp.extract_patches(context=...)`, got {context!r}."
        )
        raise ValueError(msg)
    return int(context) + 1


def _resolve_rows(adata: AnnData, sel, default: np.ndarray) -> np.ndarray:
    n = adata.n_obs
    if sel is None:
        return default
    if isinstance(sel, str | int | np.integer):
        sel = [sel]
    arr = np.asarray(sel)
    if arr.dtype == bool:
        if arr.shape != (n,):
            msg = f"A boolean mask must have length n_obs = {n}, got {arr.shape}."
            raise ValueError(msg)
        return np.flatnonzero(arr)
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < -n or arr.max() >= n):
            msg = f"Row indices out of range for {n} observations."
            raise IndexError(msg)
        return np.where(arr < 0, arr + n, arr).astype(np.int64)
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        msg = (
            f"`obs_names` are not unique ({len(dup)} repeated, e.g. {list(dup[:3])}: Visium barcodes repeat across "
            "sections), so rows cannot be selected by name. Call `adata.obs_names_make_unique()` on the table, or "
            "select by integer positions or a boolean mask."
        )
        raise ValueError(msg)
    idx = adata.obs_names.get_indexer(arr.astype(str))
    if (idx < 0).any():
        msg = f"Observation names not found: {list(arr[idx < 0][:5])}."
        raise KeyError(msg)
    return idx.astype(np.int64)


def get_patches(
    sdata: SpatialData,
    obs_indices_or_names: Sequence[int] | Sequence[str] | np.ndarray | None = None,
    *,
    table_key: str = Key.TABLE,
    context: bool | int = False,
    batch_size: int = 64,
) -> np.ndarray:
    """Read patches recorded by :func:`extract_patches` into memory, for inspection and plotting.

    Parameters
    ----------
    sdata
        SpatialData (images + shapes + table, not an AnnData) on which :func:`extract_patches` was run.
    obs_indices_or_names
        Rows of the table: integer positions, ``obs_names`` (unique ones) or a boolean mask. Default: every row
        that has a patch (after ``extract_patches(shapes_key=...)``, the rows of that shapes element).
    table_key
        Table of the spots.
    context
        ``False``: the main patch; an integer ``k``: the ``k``-th context field of view (0-based), resampled to
        the same ``target_px``.
    batch_size
        Patches read per batch.

    Returns
    -------
    Array of shape ``(n, target_px, target_px, 3)``, uint8 RGB, in the order requested.

    Raises
    ------
    TypeError
        If ``sdata`` is not a SpatialData (e.g. an AnnData table).
    KeyError
        If the table has no patch geometry (run :func:`extract_patches` first) or a name is not in ``obs_names``.
    ValueError
        If a row has no patch geometry, ``context`` is out of range, ``batch_size < 1``, or rows are selected by
        name while ``obs_names`` are not unique.
    """
    require_sdata(sdata, "get_patches")
    adata = get_adata(sdata, table_key)
    if int(batch_size) < 1:
        msg = f"`batch_size` must be a positive integer, got {batch_size}."
        raise ValueError(msg)
    size_index = context_index(context)
    reader = PatchReader(sdata, table_key=table_key, size_index=size_index)
    rows = _resolve_rows(adata, obs_indices_or_names, reader.rows)
    t = reader.target_px
    out = np.empty((len(rows), t, t, 3), np.uint8)
    k = 0
    for _, patches in reader.iter_batches(rows, batch_size=batch_size):
        out[k : k + len(patches)] = patches.permute(0, 2, 3, 1).numpy()
        k += len(patches)
    return out
