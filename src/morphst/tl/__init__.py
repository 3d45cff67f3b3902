"""morphst.tl."""

from ._quadrants import gene_quadrants, quadrants, select_features

__all__: list[str] = ["gene_quadrants", "quadrants", "select_features"]
