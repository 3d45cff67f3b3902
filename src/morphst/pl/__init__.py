"""morphst.pl."""

from ._domains import domains
from ._patches import patches
from ._quadrants import quadrants
from ._translation import gene_metrics, predicted_vs_observed

__all__: list[str] = ["domains", "gene_metrics", "patches", "predicted_vs_observed", "quadrants"]
