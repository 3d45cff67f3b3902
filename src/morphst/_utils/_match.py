"""Which image goes with a shapes element, and in which coordinate system: one rule for patches and plots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ._sdata import list_keys

if TYPE_CHECKING:
    from spatialdata import SpatialData


def coordinate_systems(element) -> list[str]:
    """The coordinate systems an element is mapped to, in the order it declares them."""
    from spatialdata.transformations import get_transformation

    return list(get_transformation(element, get_all=True).keys())


def pick_coordinate_system(shapes, shared: list[str]) -> str:
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


def match_image(
    sdata: SpatialData,
    shapes,
    region: str,
    image_key: str | None = None,
    *,
    recorded: str | None = None,
    section: str | None = None,
    several: Literal["raise", "first"] = "raise",
) -> tuple[str | None, str | None]:
    """``(image key, coordinate system)`` for shapes ``region``: the image to read or draw under them.

    The rule: ``image_key`` when given (it must share a coordinate system with the shapes); else, among the images
    that share one, the image the patches were cut from (``recorded``, from ``uns['patches']``), else the only
    one. Several candidates and nothing recorded: ``several="raise"`` refuses (pass ``image_key=``), ``"first"``
    takes the first by name (one starting with ``section`` or the region's stem, e.g. ``"C2_he"`` for
    ``"C2_spots"``, then alphabetical). The coordinate system is :func:`pick_coordinate_system` of the shared ones.
    ``(None, None)`` when no image shares one and ``several="first"`` (draw the shapes alone).

    Raises
    ------
    KeyError
        If ``image_key`` is not an image (the message lists them).
    ValueError
        If ``image_key`` shares no coordinate system with the shapes; with ``several="raise"``, if no image or
        several images share one.
    """
    cs_shapes = coordinate_systems(shapes)
    if image_key is not None:
        if image_key not in sdata.images:
            msg = f"Image {image_key!r} not found. Available images: {list_keys(sdata.images)}."
            raise KeyError(msg)
        shared = [c for c in coordinate_systems(sdata.images[image_key]) if c in cs_shapes]
        if not shared:
            msg = (
                f"No transformation path between shapes {region!r} (coordinate systems {cs_shapes}) and image "
                f"{image_key!r} (coordinate systems {coordinate_systems(sdata.images[image_key])}): they share no "
                "coordinate system. Set one with `spatialdata.transformations.set_transformation`."
            )
            raise ValueError(msg)
        return image_key, pick_coordinate_system(shapes, shared)
    cands = [k for k in sdata.images if set(coordinate_systems(sdata.images[k])) & set(cs_shapes)]
    if recorded in cands:
        cands = [recorded]
    if not cands and several == "first":
        return None, None
    if not cands:
        msg = (
            f"No image shares a coordinate system with shapes {region!r} (coordinate systems {cs_shapes}); "
            f"images: {list_keys(sdata.images)}. Pass `image_key=` and make sure a transformation path exists."
        )
        raise ValueError(msg)
    if len(cands) > 1 and several == "raise":
        msg = f"Several images share a coordinate system with shapes {region!r}: {list_keys(cands)}; pass `image_key=`."
        raise ValueError(msg)
    stem = region.rsplit("_", 1)[0]
    key = min(cands, key=lambda k: (not k.startswith(section or stem), not k.startswith(stem), k))
    shared = [c for c in coordinate_systems(sdata.images[key]) if c in cs_shapes]
    return key, pick_coordinate_system(shapes, shared)


__all__ = ["coordinate_systems", "match_image", "pick_coordinate_system"]
