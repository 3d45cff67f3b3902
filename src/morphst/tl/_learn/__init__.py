"""Learned morphology features (Box 1 of Chelebian, Avenel & Wählby, Nat. Commun. 2025).

Modules: ``_api`` (:func:`learn_features`), ``_integration`` (the integration objective), ``_torch`` (training
options, seeding, device, the inner early-stopping split). The translation head itself is
:class:`morphst.tl._translation._head.FeatureHead`.
"""

from ._api import learn_features
from ._torch import TrainOptions

__all__ = ["TrainOptions", "learn_features"]
