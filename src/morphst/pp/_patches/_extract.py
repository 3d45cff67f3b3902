"""`extract_patches`: record the patch geometry of every spot/cell in the table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ... import _logging as logg
from ..._constants import Key
from ..._utils import get_adata, records_params, save_results
from ..._utils._memory import release_freed_memory
from ..._utils._units import check_positive_um

if TYPE_CHECKING:
    from spatialdata import SpatialData
from ..._docs import doc_table_key, inject_docs
from ..._utils._checks import check_sdata
from ._geometry import (
    DEFAULT_PATCH_SIZE_UM,
    DEFAULT_TARGET_PX,
    RegionGeometry,
    compute_geometry,
    valid_col,
)

#: Warn when more than this fraction of the patches overhang the image edge.
_EDGE_WARN_FRACTION = 0.10
#: Upsampling up to this factor (native px -> target_px) is a deliberate choice (224 px at 0.5 µm/px on a
#: ~0.69 µm/px scan is 1.37×): logged, not warned.
_UPSAMPLE_WARN_FACTOR = 1.5
#: Beyond this factor the image is too coarse for a pretrained encoder: advise its own pixels and "handcrafted".
_UPSAMPLE_COARSE_FACTOR = 4.0
#: Warn when the patch side exceeds this many spot/cell diameters (as the shapes give them).
_OVERSIZE_FACTOR = 15.0


def _upsampling_message(g: RegionGeometry, k: int, patch_size_um: float, target_px: int) -> str | None:
    """Why and how much the ``k``-th patch size of region ``g`` is upsampled, with the fix; None below the threshold.

    Up to :data:`_UPSAMPLE_WARN_FACTOR` (e.g. the HEST convention of 224 px at 0.5 µm/px on a 0.69 µm/px scan) the
    upsampling is a deliberate choice and only logged. Beyond :data:`_UPSAMPLE_COARSE_FACTOR` the image is far
    too coarse for a pretrained encoder's input: the advice is the image's own pixels and the handcrafted encoder,
    not a patch of many spot diameters.
    """
    w = min(g.window_px[k])
    factor = target_px / w
    if factor <= _UPSAMPLE_WARN_FACTOR:
        return None
    res = g.level_um_per_px[k]
    head = (
        f"{g.region} ({g.image_key}): the {patch_size_um:g} µm patch is upsampled {factor:.2f}× "
        f"({w} native px -> {target_px} px): the image ({res:.4g} µm/px at its finest level) is coarser than the "
        f"requested {patch_size_um / target_px:.4g} µm/px."
    )
    if factor > _UPSAMPLE_COARSE_FACTOR:
        return (
            f"{head} The image is too coarse for an encoder pretrained on ~0.5 µm/px tissue: use `target_px={w}` "
            '(the image\'s own pixels) and `mst.tl.embed_patches(sdata, model="handcrafted")` (colour and texture '
            "statistics at any scale), or a full-resolution image of the section."
        )
    return (
        f"{head} To avoid interpolated detail, use `target_px={w}` (the image's own resolution; encoders resize "
        f"to their input size themselves) or `patch_size={target_px * res:.0f}` (µm that {target_px} native px cover)."
    )


def _report_geometry(geoms: list[RegionGeometry], patch_sizes_um: list[float], target_px: int) -> None:
    """Log the pyramid level, its µm/px and the window per region; warn on upsampling, oversized and edge patches.

    Upsampling is told in one warning per patch size (the first region's figures, and how many regions share it),
    so a multi-section dataset does not repeat the same warning per section.
    """
    upsampled: dict[float, list[str]] = {}
    for g in geoms:
        logg.info(
            f"    {g.region}: coordinate system {g.cs!r}, {g.units.um_per_unit:.6g} µm per unit ({g.units.source})"
        )
        for k, patch_size_um in enumerate(patch_sizes_um):
            w = g.window_px[k]
            logg.info(
                f"    {g.region} ({g.image_key}): {patch_size_um:g} µm patch from pyramid level {g.levels[k]} "
                f"({g.level_um_per_px[k]:.4g} µm/px), window {w[0]} × {w[1]} px -> {target_px} px "
                f"({patch_size_um / target_px:.4g} µm/px)"
            )
            msg = _upsampling_message(g, k, patch_size_um, target_px)
            if msg is not None:
                upsampled.setdefault(patch_size_um, []).append(msg)
    _warn_oversized(geoms, patch_sizes_um[0])
    for msgs in upsampled.values():
        more = f" The same holds for {len(msgs) - 1} more region(s)." if len(msgs) > 1 else ""
        logg.warning(f"{msgs[0]}{more}")
    valid = np.concatenate([g.valid[0] for g in geoms])
    n_edge = int((valid < 1).sum())
    if n_edge > _EDGE_WARN_FRACTION * len(valid):
        logg.warning(
            f"{n_edge} of {len(valid)} patches ({100 * n_edge / len(valid):.0f}%) touch the image edge "
            f"({int((valid == 0).sum())} lie entirely off it) and are padded: check the shapes' transformation and "
            f"`patch_size` ({patch_sizes_um[0]:g} µm); see obs['{Key.PATCH_VALID}']."
        )


def _warn_oversized(geoms: list[RegionGeometry], patch_size_um: float) -> None:
    """Warn once when the patch side is more than :data:`_OVERSIZE_FACTOR` spot/cell diameters (median, µm)."""
    big = [g for g in geoms if g.diameter_um and patch_size_um > _OVERSIZE_FACTOR * g.diameter_um]
    if big:
        g = big[0]
        more = f" (and {len(big) - 1} more region(s))" if len(big) > 1 else ""
        logg.warning(
            f"{g.region}{more}: the {patch_size_um:g} µm patch is {patch_size_um / g.diameter_um:.0f}× the "
            f"{g.diameter_um:.3g} µm diameter of its spots/cells, so each patch mostly shows their neighbours. "
            f"Check `patch_size` (µm, not px); for a wider view next to a spot-sized patch use `context_sizes_um`."
        )


@inject_docs(table_key=doc_table_key)
def extract_patches(
    sdata: SpatialData,
    *,
    image_key: str | None = None,
    shapes_key: str | None = None,
    table_key: str = Key.TABLE,
    patch_size: float = DEFAULT_PATCH_SIZE_UM,
    target_px: int = DEFAULT_TARGET_PX,
    context_sizes_um: Sequence[float] | float | None = None,
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
    count as padding. A warning names the fix when a patch is upsampled more than 1.5× (a coarse image) or is more
    than 15 spot/cell diameters wide (``patch_size`` is in µm, not px).

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
    {table_key}
    patch_size
        Side of the patch, µm.
    target_px
        Side of the resampled patch, px; the patch resolution is ``patch_size / target_px`` µm/px.
    context_sizes_um
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
        per channel read. Default: the 0.1 and 99.9 percentiles (NaN ignored) of the full-resolution pixels (every
        pixel up to 4 million per channel, else a strided sample; never a downsampled level, whose averaging
        narrows the range), per channel (e.g. named fluorescence markers); for a 3- or 4-channel image read as RGB
        with unnamed channels (0, 1, 2), or three channels named r/g/b (brightfield), one range over the three
        colour channels, which keeps the colour balance.
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
      ``'intensity_range'`` (per channel, ``[[low, high], ...]``; absent for uint8), ``'fill_value'``,
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
    check_sdata(sdata, "extract_patches", patches=True)
    start = logg.info("extracting patch geometry")
    release_freed_memory()  # what earlier steps freed: this step's peak sits on the data alone
    adata = get_adata(sdata, table_key)
    context_sizes = _check_arguments(
        patch_size, target_px, context_sizes_um, um_per_px, um_per_unit, spot_diameter_um, fill_value
    )
    patch_sizes_um = [float(patch_size), *context_sizes]
    geoms = compute_geometry(
        sdata,
        adata,
        image_key=image_key,
        shapes_key=shapes_key,
        patch_sizes_um=patch_sizes_um,
        target_px=int(target_px),
        um_per_px=um_per_px,
        channels=channels,
        intensity_range=intensity_range,
        fill_value=fill_value,
        um_per_unit=um_per_unit,
        spot_diameter_um=spot_diameter_um,
    )
    _report_geometry(geoms, patch_sizes_um, int(target_px))
    # everything validated: write
    params = records_params(
        image_key=image_key,
        shapes_key=shapes_key,
        table_key=table_key,
        patch_size=float(patch_size),
        target_px=int(target_px),
        context_sizes_um=context_sizes,
        um_per_unit=um_per_unit,
        um_per_px=um_per_px,
        spot_diameter_um=spot_diameter_um,
        channels=None if channels is None else list(channels),
        intensity_range=intensity_range,
        fill_value=fill_value,
        resampling="bilinear, antialias (torch.nn.functional.interpolate)",
    )
    added = _results(adata.n_obs, geoms, patch_sizes_um, int(target_px), params)
    v = added[2][2][np.isfinite(added[2][2])]  # valid fraction of the main patch
    summary = (
        f"{len(v)} patches of {patch_size:g} µm -> {target_px} px in {len(geoms)} region(s), "
        f"{int((v < 1).sum())} at the image edge, {int((v == 0).sum())} off the image"
    )
    for col in [c for c in adata.obs.columns if c.startswith(Key.PATCH_VALID)]:  # those of an earlier call
        del adata.obs[col]
    save_results(adata, added, start=start, summary=summary)


def _check_arguments(
    patch_size, target_px, context_sizes_um, um_per_px, um_per_unit, spot_diameter_um, fill_value
) -> list[float]:
    """Raise a ``ValueError`` for a size, scale or fill value out of range; return the context sizes (µm) as a list."""
    if check_positive_um("patch_size", patch_size) is None:
        msg = "`patch_size` must be a positive number (µm), got None."
        raise ValueError(msg)
    if int(target_px) < 1:
        msg = f"`target_px` must be a positive number of pixels, got {target_px}."
        raise ValueError(msg)
    if context_sizes_um is None:
        context_sizes: list[float] = []
    elif np.isscalar(context_sizes_um):
        context_sizes = [float(context_sizes_um)]
    else:
        context_sizes = [float(c) for c in context_sizes_um]
    for c in context_sizes:
        check_positive_um("context_sizes_um", c)
    check_positive_um("um_per_px", um_per_px, unit="µm per pixel")
    check_positive_um("um_per_unit", um_per_unit, unit="µm per coordinate-system unit")
    check_positive_um("spot_diameter_um", spot_diameter_um)
    if fill_value is not None and not 0 <= fill_value <= 255:
        msg = f"`fill_value` is a padding intensity of the 8-bit patches and must lie in 0–255, got {fill_value}."
        raise ValueError(msg)
    return context_sizes


def _region_record(g: RegionGeometry) -> dict:
    """``uns['patches']['regions'][region]``: image, coordinate system, units, levels, windows and channels."""
    record = {
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
        "fill_value": int(g.fill_value),
        "transform": np.asarray(g.transform, dtype=float),
    }
    if g.intensity_range is not None:
        record["intensity_range"] = np.asarray(g.intensity_range, dtype=float)
    return record


def _results(n: int, geoms: list[RegionGeometry], patch_sizes_um: list[float], target_px: int, params: dict) -> list:
    """``(attribute, key, value)`` to write: patch centres and valid fractions (``obs``), ``uns['patches']``.

    Rows without a patch are NaN.
    """
    cx = np.full(n, np.nan)
    cy = np.full(n, np.nan)
    valid = [np.full(n, np.nan) for _ in patch_sizes_um]
    for g in geoms:
        cx[g.rows] = g.centres[:, 0]
        cy[g.rows] = g.centres[:, 1]
        for k in range(len(patch_sizes_um)):
            valid[k][g.rows] = g.valid[k]
    record = {
        "sizes_um": patch_sizes_um,
        "target_px": target_px,
        "regions": {g.region: _region_record(g) for g in geoms},
        "params": params,
    }
    columns = [("obs", valid_col(s, k == 0), valid[k]) for k, s in enumerate(patch_sizes_um)]
    return [("obs", Key.PATCH_X, cx), ("obs", Key.PATCH_Y, cy), *columns, ("uns", Key.PATCHES, record)]
