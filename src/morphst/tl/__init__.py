"""morphst.tl."""

from ._domains import domains, evaluate_domains
from ._fuse import fuse
from ._quadrants import gene_quadrants, quadrants, select_features

__all__: list[str] = ["domains", "evaluate_domains", "fuse", "gene_quadrants", "quadrants", "select_features"]
