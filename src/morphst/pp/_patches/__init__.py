"""Spot/cell-centred patches at a physical size (µm), read lazily from the right pyramid level.

The geometry (centre in image pixels, pyramid level, window size) is recorded in the table by
:func:`extract_patches` (``_extract``; the spots and their table rows in ``_table``, the geometry in ``_geometry``,
the channels and intensity range in ``_channels``); pixels are read on demand, chunk by chunk, by :class:`PatchReader`
(``_reader``, ``_level``), used by :func:`get_patches` (``_get``) and :func:`morphst.tl.embed_patches`. The names
here other than the public ``extract_patches`` and ``get_patches`` are this package's internal API for ``tl``
(reading patches; the stains of a translator's new sections, ``_stain``): ``tl`` imports them from here only.
"""

from ._extract import extract_patches
from ._geometry import (
    DEFAULT_PATCH_SIZE_UM,
    DEFAULT_TARGET_PX,
    check_default_geometry,
)
from ._get import get_patches
from ._reader import PatchReader, size_index_of
from ._stain import normalize_stains_checked, stain_images
from ._table import match_instance_ids

__all__ = [
    "DEFAULT_PATCH_SIZE_UM",
    "DEFAULT_TARGET_PX",
    "PatchReader",
    "check_default_geometry",
    "extract_patches",
    "get_patches",
    "match_instance_ids",
    "normalize_stains_checked",
    "size_index_of",
    "stain_images",
]
