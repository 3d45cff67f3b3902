"""Fine-tuning the encoder inside each fold: the activations entering its last block, cached once.

The trained part is :class:`~morphst.tl.LastBlockFinetune` (``tl/_nn``), a regressor of
:func:`~morphst.tl.predict_expression`.
"""

from ._activations import cache_activations

__all__ = ["cache_activations"]
