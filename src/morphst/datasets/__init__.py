"""Real sample datasets as :class:`~spatialdata.SpatialData`, and synthetic sections.

Synthetic: a Xenium-like section of any size (:func:`xenium_like`) and a spot section whose domains are partly
visible only in the image (:func:`morphology_domains`).
"""

from ._dlpfc import dlpfc
from ._her2st import her2st
from ._morphology_domains import morphology_domains
from ._synthetic import xenium_like
from ._visium import visium_mouse_brain_crop

__all__ = ["dlpfc", "her2st", "morphology_domains", "visium_mouse_brain_crop", "xenium_like"]
