"""The training plumbing of the learned-feature objectives, from the torch floor :mod:`morphst.tl._nn`."""

from .._nn import TrainOptions, inner_validation_split, resolve_train_device, seeded_generator

__all__ = ["TrainOptions", "inner_validation_split", "resolve_train_device", "seeded_generator"]
