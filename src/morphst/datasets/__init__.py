"""Real sample datasets as :class:`~spatialdata.SpatialData`."""

from ._dlpfc import dlpfc
from ._her2st import her2st
from ._visium import visium_mouse_brain_crop

__all__ = ["dlpfc", "her2st", "visium_mouse_brain_crop"]
