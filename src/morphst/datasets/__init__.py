"""Real sample datasets as :class:`~spatialdata.SpatialData`, and a synthetic Xenium-like section of any size."""

from ._dlpfc import dlpfc
from ._her2st import her2st
from ._synthetic import xenium_like
from ._visium import visium_mouse_brain_crop

__all__ = ["dlpfc", "her2st", "visium_mouse_brain_crop", "xenium_like"]
