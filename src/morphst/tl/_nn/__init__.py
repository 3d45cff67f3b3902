"""The torch floor below translation and learned features: training options, seeding, device, the head.

Modules: ``_torch`` (:class:`TrainOptions`, seeded generators, device resolution, the inner early-stopping split),
``_head`` (:class:`FeatureHead`, the translation head on frozen patch features), ``_lastblock`` and ``_finetune``
(:class:`LastBlockFinetune`, the encoder's last block trained with a head on cached activations). Imported by
``tl/_translation`` and ``tl/_learn``; imports neither.
"""

from ._finetune import LastBlockFinetune
from ._head import FeatureHead, column_pcc
from ._lastblock import split_last_block
from ._torch import TrainOptions, inner_validation_split, resolve_train_device, seeded_generator

__all__ = [
    "FeatureHead",
    "LastBlockFinetune",
    "TrainOptions",
    "column_pcc",
    "inner_validation_split",
    "resolve_train_device",
    "seeded_generator",
    "split_last_block",
]
