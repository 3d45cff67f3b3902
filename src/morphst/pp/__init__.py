"""morphst.pp."""

from ._genes import GeneSelection, select_genes
from ._normalize import normalize
from ._patches import extract_patches, get_patches
from ._tiles import tile_tissue
from ._units import set_um_per_unit

__all__: list[str] = [
    "GeneSelection",
    "extract_patches",
    "get_patches",
    "normalize",
    "select_genes",
    "set_um_per_unit",
    "tile_tissue",
]
