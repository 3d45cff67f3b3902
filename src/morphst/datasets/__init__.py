"""Real sample datasets as :class:`~spatialdata.SpatialData`."""

from ._her2st import her2st
from ._visium import visium_mouse_brain_crop

__all__ = ["her2st", "visium_mouse_brain_crop"]
