"""Declare the physical unit of a coordinate system once, for every morphst function that works in µm."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._utils import list_keys
from .._utils._units import ATTRS_KEY, check_positive_um

if TYPE_CHECKING:
    from spatialdata import SpatialData


def set_um_per_unit(sdata: SpatialData, coordinate_system: str, um_per_unit: float) -> None:
    """Declare how many µm one unit of ``coordinate_system`` is.

    SpatialData transformations carry no unit, and morphst never assumes one: functions that turn µm into pixels
    (:func:`morphst.pp.extract_patches`, :meth:`morphst.tl.Translator.predict_grid`, ...) read the scale from the
    object (10x Visium scale factors, spatialdata-io readers) or from this declaration, else raise. Use it when
    you built the SpatialData yourself, e.g. ``set_um_per_unit(sdata, "global", 1.0)`` for coordinates in µm, or
    ``set_um_per_unit(sdata, "global", 0.2125)`` for a system in pixels of a 0.2125 µm/px image.

    Parameters
    ----------
    sdata
        The SpatialData.
    coordinate_system
        A coordinate system of ``sdata`` (``sdata.coordinate_systems``).
    um_per_unit
        µm per unit of that coordinate system.

    Returns
    -------
    Nothing; sets ``sdata.attrs['morphst']['coordinate_systems'][coordinate_system] = um_per_unit`` (kept when the
    SpatialData is written to zarr).

    Raises
    ------
    KeyError
        If ``coordinate_system`` is not one of ``sdata``'s (the message lists them).
    ValueError
        If ``um_per_unit`` is not a positive finite number.
    """
    if coordinate_system not in sdata.coordinate_systems:
        msg = f"Coordinate system {coordinate_system!r} not found. Available: {list_keys(sdata.coordinate_systems)}."
        raise KeyError(msg)
    v = check_positive_um("um_per_unit", um_per_unit, unit="µm per coordinate-system unit")
    if v is None:
        msg = "`um_per_unit` must be a positive number (µm per coordinate-system unit), got None."
        raise ValueError(msg)
    attrs = sdata.attrs.setdefault(ATTRS_KEY, {})
    attrs.setdefault("coordinate_systems", {})[str(coordinate_system)] = v
