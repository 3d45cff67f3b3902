"""Integration: fuse morphology with expression, find spatial domains, evaluate them.

The "integration" direction of Chelebian, Avenel & Wählby (Nat. Commun. 2025). Modules: ``_fuse``
(:func:`fuse`, with its modality blocks in ``_fuse_blocks`` and its spatial graphs in ``_fuse_graph``), ``_domains``
(:func:`domains`), ``_encoder`` (:func:`graph_encoder`, a trained graph encoder, with ``_encoder_graph`` and
``_encoder_models``), ``_evaluate`` (:func:`evaluate_domains`). Sections and hints come from ``morphst._utils``.
"""

from ._domains import domains
from ._encoder import graph_encoder
from ._evaluate import evaluate_domains
from ._fuse import fuse

__all__ = ["domains", "evaluate_domains", "fuse", "graph_encoder"]
