"""morphst.pp."""

from ._genes import select_genes
from ._normalize import normalize

__all__: list[str] = [
    "normalize",
    "select_genes",
]
