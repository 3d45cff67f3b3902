"""morphst.tl."""

from . import _metrics as metrics
from . import models
from ._ceiling import noise_ceiling
from ._embed import embed_patches
from ._finetune import cache_activations
from ._integration import domains, evaluate_domains, fuse, graph_encoder
from ._learn import learn_features, learn_integration_features, learn_translation_features
from ._nn import FeatureHead, LastBlockFinetune, TrainOptions
from ._quadrants import gene_quadrants, quadrants, select_features
from ._translation import Translator, fit_translator, predict_expression

__all__: list[str] = [
    "FeatureHead",
    "LastBlockFinetune",
    "TrainOptions",
    "Translator",
    "cache_activations",
    "domains",
    "embed_patches",
    "evaluate_domains",
    "fit_translator",
    "fuse",
    "gene_quadrants",
    "graph_encoder",
    "learn_features",
    "learn_integration_features",
    "learn_translation_features",
    "metrics",
    "models",
    "noise_ceiling",
    "predict_expression",
    "quadrants",
    "select_features",
]
