"""Model registry for :func:`morphst.tl.embed_patches`: names, metadata, weights, the encoder protocol."""

from ._base import CallableEncoder, Encoder, ModelSpec, TorchEncoder
from ._handcrafted import HandcraftedEncoder, feature_names, handcrafted_features, handcrafted_features_batch
from ._registry import get_model
from ._specs import REGISTRY, bundled_efficientnet_lite0, list_models, register_model, swiglu_silu
from ._weights import cached_repo_id, find_weights_file, map_by_position

__all__ = [
    "REGISTRY",
    "CallableEncoder",
    "Encoder",
    "HandcraftedEncoder",
    "ModelSpec",
    "TorchEncoder",
    "bundled_efficientnet_lite0",
    "cached_repo_id",
    "feature_names",
    "find_weights_file",
    "get_model",
    "handcrafted_features",
    "handcrafted_features_batch",
    "list_models",
    "map_by_position",
    "register_model",
    "swiglu_silu",
]
