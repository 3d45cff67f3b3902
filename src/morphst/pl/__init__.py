"""morphst.pl."""

from ._applicability import applicability
from ._domains import domains
from ._gene_metrics import gene_metrics
from ._patches import patches
from ._predicted import predicted_expression
from ._quadrants import quadrants
from ._translation import predicted_vs_observed

__all__: list[str] = [
    "applicability",
    "domains",
    "gene_metrics",
    "patches",
    "predicted_expression",
    "predicted_vs_observed",
    "quadrants",
]
