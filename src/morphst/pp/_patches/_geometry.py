"""Patch geometry: centres in image pixels, pyramid level and window per patch size, units and channels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..._constants import Key
from ..._utils import affine_xy, get_adata, image_levels, list_keys, shape_centroids
from ..._utils._units import Units, linear_scale, resolve_um_per_unit

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


#: ``obs`` columns written by :func:`extract_patches`.
OBS_X = "patch_x_px"
OBS_Y = "patch_y_px"
OBS_VALID = "patch_valid_fraction"


def _valid_col(size_um: float, main: bool) -> str:
    return OBS_VALID if main else f"{OBS_VALID}_{size_um:g}um"


# --------------------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------------------
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


#: Pixels per channel read from the finest level to set a default intensity range (a strided sample beyond).
MAX_SAMPLE_PX = 4_000_000


def _pixel_sample(level, channels: list[int]) -> np.ndarray:
    """``(n_channels, h', w')`` float64 pixels of ``level`` taken every ``s``-th row and column (no averaging)."""
    h, w = level.shape[-2:]
    step = max(1, int(np.ceil(np.sqrt(h * w / MAX_SAMPLE_PX))))
    arr = level.data[channels, ::step, ::step]
    return np.asarray(arr.compute() if hasattr(arr, "compute") else arr, dtype=np.float64)


def _intensity_range(levels, idx: list[int], mode: str, dtype, intensity_range) -> np.ndarray | None:
    """``None`` for uint8, else per colour channel read ``[[low, high], ...]`` mapped onto 0..255.

    Given (one pair for all channels, or one per channel), or the 0.1/99.9 percentiles of the full-resolution
    pixels (a strided sample of at most ``MAX_SAMPLE_PX`` of them, never a downsampled level, whose averaging
    narrows the range and clips the patches), ignoring NaN: per channel (e.g. named fluorescence markers), except
    for an RGB(A) image read as it is with unnamed channels (0, 1, 2) or three channels named r, g, b, where one
    range over the colour channels keeps the colour balance of brightfield stains.
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
    small = _pixel_sample(levels[0], colour)
    names = [str(c).lower() for c in levels[0].coords["c"].to_numpy()[colour]] if "c" in levels[0].coords else []
    # an RGB(A) image read as it is, with unnamed channels (spatialdata's default 0, 1, 2): brightfield colour
    unnamed_rgb = levels[0].shape[0] in (3, 4) and list(colour) == [0, 1, 2] and names[:3] in ([], ["0", "1", "2"])
    joint = mode in ("rgb", "rgba") and n == 3 and (unnamed_rgb or set(names) <= _COLOUR_NAMES)
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
        a_shapes = affine_xy(shapes, cs)
        a_image = affine_xy(image, cs)
        m = np.linalg.inv(a_image) @ a_shapes
        pos = match_instance_ids(adata.obs[instance_key].to_numpy()[rows], shapes.index, region)
        xy = shape_centroids(shapes)[pos]
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
