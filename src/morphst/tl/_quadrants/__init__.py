"""The translation–integration quadrant framework (Chelebian, Avenel & Wählby, *Nat. Commun.* 2025, Box 1 and 2).

Every morphological feature is placed on two axes: its *relevance* to a task (mutual information with an
annotation) and the information it *shares* with expression (largest |Pearson r| with any of a set of genes).
Thresholds on both axes give four quadrants:

- I ``"translation"``: relevant and shared (use to predict expression);
- II ``"integration"``: relevant, not shared (adds to expression when finding domains);
- III ``"noise"``: neither;
- IV ``"overestimation"``: shared but not relevant (a high prediction score that says nothing about the task).

Modules: ``_common`` (validation, relevance on a seeded subsample, the permutation null, the writer),
``_features`` (:func:`quadrants`), ``_select`` (:func:`select_features`), ``_genes`` (:func:`gene_quadrants`).
"""

from ..._utils._stats import abs_pearson
from ._common import QUADRANTS
from ._features import quadrants
from ._genes import gene_quadrants
from ._select import select_features

__all__ = ["QUADRANTS", "abs_pearson", "gene_quadrants", "quadrants", "select_features"]
