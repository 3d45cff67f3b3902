"""morphst.tl."""

from . import _metrics as metrics
from ._domains import domains, evaluate_domains
from ._fuse import fuse
from ._quadrants import gene_quadrants, quadrants, select_features
from ._translation import Translator, fit_translator, predict_expression

__all__: list[str] = [
    "Translator",
    "domains",
    "evaluate_domains",
    "fit_translator",
    "fuse",
    "gene_quadrants",
    "metrics",
    "predict_expression",
    "quadrants",
    "select_features",
]
