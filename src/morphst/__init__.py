"""morphst: tissue morphology together with spatial transcriptomics, for AnnData / SpatialData.

After the translation–integration framework of Chelebian, Avenel & Wählby, *Nat. Commun.* 2025
("Combining spatial transcriptomics with tissue morphology").
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import datasets, pl, pp, tl
from ._constants import Key
from ._settings import settings

try:
    __version__ = version("morphst")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["Key", "__version__", "datasets", "pl", "pp", "settings", "tl"]
