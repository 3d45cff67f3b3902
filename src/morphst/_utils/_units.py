"""How many µm one unit of a coordinate system is: resolved from what the object says, never assumed.

SpatialData transformations carry no unit. Readers differ: ``spatialdata_io.visium`` / ``visium_hd`` write
coordinate systems in full-resolution image pixels, ``spatialdata_io.xenium`` / ``merscope`` keep the cell shapes in
µm but map them into a ``"global"`` system in morphology-image pixels, and morphst's own datasets write µm. Every
morphst function that turns µm into pixels goes through :func:`resolve_um_per_unit`, which returns the scale and a
sentence saying how it was found (recorded in ``uns[...]["params"]``), or raises an error that lists the options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._constants import VISIUM_SPOT_DIAMETER_UM, Key

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

#: Readers of spatialdata-io whose shapes are in µm in their own (intrinsic) coordinates.
_UM_SHAPES_READERS = ("xenium", "merscope")
#: Values of ``uns["morphst_dataset"]["coordinate_systems"][cs]`` that declare a coordinate system in µm.
_UM_NAMES = ("micrometres", "micrometers", "micrometre", "micrometer", "um", "µm")
#: ``sdata.attrs`` key where morphst reads (and :func:`morphst.pp.set_um_per_unit` writes) declared units.
ATTRS_KEY = "morphst"
#: Relative disagreement tolerated between two estimates of the same scale (e.g. scale factors vs shape radius).
_RTOL = 0.05
#: Shapes-name pattern of Visium HD bins written by spatialdata-io (``<dataset>_square_008um``).
_HD_BIN = re.compile(r"square_(\d{3})um$")


def check_positive_um(name: str, value, *, unit: str = "µm") -> float | None:
    """``value`` as a float if it is a finite positive number, ``None`` if ``None``; else a ValueError naming it.

    The one check of every physical size and scale parameter (``patch_size``, ``um_per_px``, ``um_per_unit``,
    ``spot_diameter_um``, context and tile sizes).
    """
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if isinstance(value, bool) or not (np.isfinite(v) and v > 0):
        msg = f"`{name}` must be a positive number ({unit}), got {value!r}."
        raise ValueError(msg)
    return v


@dataclass(frozen=True)
class Units:
    """µm per unit of a coordinate system, and how that was found."""

    um_per_unit: float
    source: str


def linear_scale(affine: np.ndarray) -> float:
    """Isotropic scale of a 3 × 3 (x, y) affine: the geometric mean of its axis scales (units out per unit in)."""
    lin = np.asarray(affine, dtype=float)[:2, :2]
    return float(np.sqrt(np.hypot(*lin[:, 0]) * np.hypot(*lin[:, 1])))


def _shape_diameter(shapes) -> float | None:
    """Median diameter of the shapes in their intrinsic units: circles ``2 r``, polygons ``sqrt(area)`` (squares)."""
    if "radius" in shapes.columns:
        r = np.asarray(shapes["radius"], dtype=float)
        r = r[np.isfinite(r) & (r > 0)]
        return float(2 * np.median(r)) if len(r) else None
    geom = shapes.geometry
    if len(geom) and (geom.geom_type.isin(["Polygon", "MultiPolygon"])).all():
        a = np.asarray(geom.area, dtype=float)
        a = a[a > 0]
        return float(np.sqrt(np.median(a))) if len(a) else None
    return None


def shape_diameter_um(shapes, affine: np.ndarray, um_per_unit: float) -> float | None:
    """Median spot/cell diameter in µm: :func:`_shape_diameter` mapped by ``affine`` (shapes -> coordinate system
    of ``um_per_unit`` µm per unit); None for points or shapes without a size."""
    d = _shape_diameter(shapes)
    return None if d is None else float(d * linear_scale(affine) * um_per_unit)


def _visium_library(adata: AnnData, region: str) -> tuple[str, dict] | None:
    spatial = adata.uns.get("spatial")
    if not isinstance(spatial, dict) or not spatial:
        return None
    libs = {
        k: v for k, v in spatial.items() if isinstance(v, dict) and "spot_diameter_fullres" in v.get("scalefactors", {})
    }
    if not libs:
        return None
    if region in libs:
        return region, libs[region]
    if len(libs) == 1:
        return next(iter(libs.items()))
    cands = [k for k in libs if region.startswith(k)]
    return (cands[0], libs[cands[0]]) if len(cands) == 1 else None


def _declared(where: dict, cs: str) -> float | None:
    table = where.get("coordinate_systems", {}) if isinstance(where, dict) else {}
    v = table.get(cs) if isinstance(table, dict) else None
    if v is None:
        return None
    if isinstance(v, str):
        return 1.0 if v.lower() in _UM_NAMES else None
    v = float(v)
    return v if np.isfinite(v) and v > 0 else None


def declared_um_per_unit(sdata: SpatialData | None, adata: AnnData | None, cs: str) -> Units | None:
    """The scale declared for ``cs``, if any: ``sdata.attrs["morphst"]`` or the table's ``uns["morphst_dataset"]``.

    Both hold ``{"coordinate_systems": {cs: "micrometres" | <µm per unit>}}``; morphst's datasets write both, and
    :func:`morphst.pp.set_um_per_unit` writes the first.
    """
    if sdata is not None:
        v = _declared(getattr(sdata, "attrs", {}).get(ATTRS_KEY, {}), cs)
        if v is not None:
            return Units(v, f"declared in sdata.attrs['{ATTRS_KEY}']['coordinate_systems'][{cs!r}]")
    if adata is not None:
        v = _declared(adata.uns.get(Key.DATASET, {}), cs)
        if v is not None:
            return Units(v, f"declared in uns['{Key.DATASET}']['coordinate_systems'][{cs!r}]")
    return None


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def options_text(*, spots: bool = True) -> str:
    """The ways a user can state the scale, for error messages (``spots``: mention ``spot_diameter_um``)."""
    text = (
        "pass `um_per_unit=` (µm per coordinate-system unit, e.g. `um_per_unit=1.0` if the coordinates are already "
        "in µm; or declare it once with `mst.pp.set_um_per_unit(sdata, coordinate_system, um_per_unit)`), or "
        "`um_per_px=` (µm per pixel of the image's finest level)"
    )
    if spots:
        text += (
            ", or `spot_diameter_um=` (the physical diameter of the spots: 10x Visium 55, legacy ST 100; the shapes' "
            "radius gives the rest)"
        )
    return text


def resolve_um_per_unit(
    sdata: SpatialData,
    adata: AnnData,
    region: str,
    cs: str,
    *,
    um_per_unit: float | None = None,
    spot_diameter_um: float | None = None,
) -> Units:
    """µm per unit of coordinate system ``cs``, for the shapes ``region`` that ``adata`` annotates.

    In order, the first that applies:

    1. ``um_per_unit`` given.
    2. A declaration (:func:`declared_um_per_unit`): ``sdata.attrs["morphst"]["coordinate_systems"][cs]`` (written
       by :func:`morphst.pp.set_um_per_unit`) or the table's ``uns["morphst_dataset"]["coordinate_systems"][cs]``
       (morphst's datasets), ``"micrometres"`` or a number of µm per unit.
    3. ``spot_diameter_um`` given: against the median diameter of the shapes (circles ``2 r``; polygons
       ``sqrt(area)``).
    4. 10x Visium: scale factors in ``uns["spatial"][library]["scalefactors"]`` (as scanpy/squidpy keep them:
       ``microns_per_pixel``, else the 55 µm spot over ``spot_diameter_fullres`` px, checked against the shapes'
       radius); or an object read by ``spatialdata_io.visium`` (``sdata.attrs["spatialdata_io_reader"]``), whose
       circles have the spot's full-resolution diameter: 55 µm over it.
    5. Visium HD bins (``spatialdata_io.visium_hd``, shapes named ``..._square_<NNN>um``): the bin size over the
       bin's side.
    6. ``spatialdata_io.xenium`` / ``merscope`` (``sdata.attrs["spatialdata_io_reader"]``): the shapes are in µm in
       their own coordinates.

    In 3–6 the scale found for the shapes' own coordinates is carried into ``cs`` through the shapes' transformation.

    Raises
    ------
    ValueError
        If ``um_per_unit`` / ``spot_diameter_um`` is not a positive number, if two sources disagree by more than
        5 %, or if nothing determines the scale (the message lists the options).
    """
    from spatialdata.transformations import get_transformation

    um_per_unit = check_positive_um("um_per_unit", um_per_unit, unit="µm per coordinate-system unit")
    spot_diameter_um = check_positive_um("spot_diameter_um", spot_diameter_um)
    if um_per_unit is not None:
        return Units(um_per_unit, f"given: um_per_unit={um_per_unit:g}")
    found = declared_um_per_unit(sdata, adata, cs)
    if found is not None:
        return found

    shapes = sdata.shapes[region]
    # scale of the shapes' intrinsic coordinates into cs: units of cs per intrinsic unit
    to_cs = linear_scale(
        get_transformation(shapes, to_coordinate_system=cs).to_affine_matrix(
            input_axes=("x", "y"), output_axes=("x", "y")
        )
    )
    diameter = _shape_diameter(shapes)

    def carried(um_per_intrinsic: float, how: str) -> Units:
        u = um_per_intrinsic / to_cs
        via = "" if np.isclose(to_cs, 1.0) else f"; shapes -> {cs!r} scale {to_cs:.6g}"
        return Units(float(u), how + via)

    if spot_diameter_um is not None:
        if diameter is None:
            msg = (
                f"`spot_diameter_um` needs circles (with a radius) or square polygons, but shapes {region!r} are "
                f"{sorted(set(shapes.geometry.geom_type))}; pass `um_per_unit=` or `um_per_px=` instead."
            )
            raise ValueError(msg)
        return carried(
            spot_diameter_um / diameter,
            f"spot_diameter_um={spot_diameter_um:g} over the shapes' median diameter ({diameter:.6g} units)",
        )
    lib = _visium_library(adata, region)
    if lib is not None:
        name, info = lib
        sf = info["scalefactors"]
        d_full = float(sf["spot_diameter_fullres"])
        if "microns_per_pixel" in sf:  # Visium HD
            um_px = float(sf["microns_per_pixel"])
            how = f"Visium HD: scalefactors microns_per_pixel = {um_px:.6g} (library {name!r})"
        else:
            um_px = VISIUM_SPOT_DIAMETER_UM / d_full
            how = (
                f"10x Visium: {VISIUM_SPOT_DIAMETER_UM:g} µm spot / spot_diameter_fullres {d_full:.6g} px "
                f"(library {name!r})"
            )
        if diameter is not None and not np.isclose(diameter, d_full, rtol=_RTOL):
            msg = (
                f"Shapes {region!r} have a median diameter of {diameter:.6g} units, but the table's scale factors "
                f"(library {name!r}) give spot_diameter_fullres = {d_full:.6g} px: the shapes are not in "
                f"full-resolution pixels, so the scale cannot be read from the scale factors. "
                f"{_cap(options_text())}."
            )
            raise ValueError(msg)
        return carried(um_px, how)
    reader = str(getattr(sdata, "attrs", {}).get("spatialdata_io_reader", ""))
    if reader == "visium" and diameter is not None:
        return carried(
            VISIUM_SPOT_DIAMETER_UM / diameter,
            f"spatialdata_io.visium: {VISIUM_SPOT_DIAMETER_UM:g} µm Visium spot over the shapes' median diameter "
            f"({diameter:.6g} full-resolution px)",
        )
    m = _HD_BIN.search(region)
    if m is not None and diameter is not None:
        bin_um = float(m.group(1))
        return carried(bin_um / diameter, f"Visium HD bins: {bin_um:g} µm bin / bin side {diameter:.6g} units")
    if reader in _UM_SHAPES_READERS:
        return carried(1.0, f"spatialdata_io.{reader}: shapes {region!r} are in µm in their own coordinates")
    msg = (
        f"Cannot tell how many µm one unit of coordinate system {cs!r} is (shapes {region!r}): SpatialData "
        f"transformations carry no unit, and nothing in the object states it (no Visium scale factors in "
        f"`uns['spatial']`, no spatialdata-io reader that writes µm, no "
        f"`uns['{Key.DATASET}']['coordinate_systems']` declaration). {_cap(options_text())}."
    )
    raise ValueError(msg)


def resolve_image_scale(
    sdata: SpatialData,
    image_key: str,
    *,
    um_per_unit: float | None = None,
    um_per_px: float | None = None,
) -> tuple[str, float, Units]:
    """Coordinate system, µm per pixel of the image's finest level, and µm per coordinate unit, for an image.

    For an image without spots (an H&E-only slide). In order: ``um_per_px``; ``um_per_unit``; a declaration of one
    of the image's coordinate systems (:func:`declared_um_per_unit`); shapes that share a coordinate system with the
    image and a table that annotates them (:func:`resolve_um_per_unit`).

    Raises
    ------
    ValueError
        If nothing determines the scale (the message lists the options), or a given value is not positive.
    """
    from spatialdata.models import get_table_keys
    from spatialdata.transformations import get_transformation

    image = sdata.images[image_key]
    tfs = get_transformation(image, get_all=True)
    systems = list(tfs)

    def px_scale(cs: str) -> float:  # coordinate units per level-0 pixel
        return linear_scale(tfs[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")))

    um_per_px = check_positive_um("um_per_px", um_per_px, unit="µm per pixel")
    um_per_unit = check_positive_um("um_per_unit", um_per_unit, unit="µm per coordinate-system unit")
    cs = systems[0]
    if um_per_px is not None:
        u = Units(float(um_per_px) / px_scale(cs), f"given: um_per_px={float(um_per_px):g}")
        return cs, float(um_per_px), u
    if um_per_unit is not None:
        return cs, float(um_per_unit) * px_scale(cs), Units(float(um_per_unit), f"given: um_per_unit={um_per_unit:g}")
    for c in systems:
        found = declared_um_per_unit(sdata, None, c)
        if found is not None:
            return c, found.um_per_unit * px_scale(c), found
    for c in systems:
        for table in sdata.tables.values():
            if "spatialdata_attrs" not in table.uns:
                continue
            region = get_table_keys(table)[0]
            for r in [region] if isinstance(region, str) else list(region):
                if r in sdata.shapes and c in get_transformation(sdata.shapes[r], get_all=True):
                    try:
                        found = resolve_um_per_unit(sdata, table, r, c)
                    except ValueError:
                        continue
                    return c, found.um_per_unit * px_scale(c), found
    msg = (
        f"Cannot tell the pixel size of image {image_key!r} in µm (coordinate systems {systems}): nothing in the "
        f"object states it. {_cap(options_text(spots=False))}."
    )
    raise ValueError(msg)
