"""Stain normalisation of the images a translator reads: the image choice checked first, errors that name the image."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._utils import image_levels, list_keys
from ..._utils._match import match_image
from ..._utils._quiet import import_squidpy, quiet_third_party

if TYPE_CHECKING:
    from spatialdata import SpatialData
    from xarray import DataArray


def stain_images(sdata: SpatialData, shapes_keys: list[str], image_key: str | None) -> list[str]:
    """The images whose stains are normalised for the patches of ``shapes_keys``: the ones :func:`extract_patches`
    would read (``image_key``, else per shapes element the one image sharing its coordinate system).

    Raises
    ------
    KeyError
        Unknown ``image_key``.
    ValueError
        Several images share a coordinate system with the shapes (pass ``image_key=``), or one of the images is not
        a 3-channel RGB image (e.g. a DAPI or an RGBA image), which stain normalisation cannot read.
    """
    if image_key is not None and image_key not in sdata.images:
        msg = f"Image {image_key!r} not found. Available images: {list_keys(sdata.images)}."
        raise KeyError(msg)
    names: list[str] = []
    for k in shapes_keys:
        name, _ = match_image(sdata, sdata.shapes[k], k, image_key)
        if name not in names:
            names.append(name)
    for name in names:
        n_channels = int(image_levels(sdata.images[name])[0].shape[0])
        if n_channels != 3:
            msg = (
                f"The translator normalises the stains of its images to its H&E reference, but image {name!r} has "
                f"{n_channels} channel(s), not RGB. Pass `image_key=` naming the H&E image"
                + (" (or drop the alpha channel)." if n_channels == 4 else ".")
            )
            raise ValueError(msg)
    return names


def normalize_stains_checked(sdata: SpatialData, name: str, reference) -> DataArray:
    """``squidpy.experimental.im.normalize_stains(sdata, name, reference, inplace=False)`` after its tissue mask
    (``detect_tissue`` when ``labels[f"{name}_tissue"]`` is absent), with squidpy's fitting errors re-raised as a
    ``ValueError`` that names the image and what to do."""
    with quiet_third_party():
        sqe = import_squidpy().experimental.im
        try:
            if f"{name}_tissue" not in sdata.labels:
                sqe.detect_tissue(sdata, name)
            return sqe.normalize_stains(sdata, name, reference, inplace=False)
        except (ValueError, RuntimeError) as e:
            msg = (
                f"Stain normalisation of image {name!r} to the translator's {reference.method} reference failed "
                f"(squidpy: {e}). The image holds too little tissue, or not an H&E stain, to fit its stain vectors: "
                "check that it is the H&E of these shapes (pass `image_key=`), or predict without normalisation "
                "(fit the translator without `stain_reference`)."
            )
            raise ValueError(msg) from e
