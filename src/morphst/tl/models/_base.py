"""Model metadata and the small encoder protocol: ``transform`` (uint8 patches -> model input), ``encode``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """Metadata of a registered encoder.

    Attributes
    ----------
    name
        Registry name (also the default ``obsm`` key suffix: ``X_<name>``).
    arch
        timm architecture used to build the network (``"handcrafted"`` for the model-free features).
    embedding_dim
        Length of the feature vector per patch.
    input_size
        Side of the model input, px (patches are resized to it when ``target_px`` differs).
    mean, std
        Per-channel normalisation of RGB in [0, 1].
    licence
        Licence of the weights.
    weight_source
        Where the weights come from, in words.
    hub
        timm / Hugging Face hub name (``"hf-hub:org/name"`` or ``"timm/name.tag"``), or ``None``.
    gated
        Whether the hub weights need an accepted licence and a token.
    pooling
        ``"default"`` (timm's pooled features with ``num_classes=0``; the class token of a transformers model) or
        ``"cls+mean"`` (class token concatenated with the mean of the patch tokens, as Virchow).
    n_prefix_tokens
        Tokens before the patch tokens (class + register tokens) skipped by the ``"cls+mean"`` patch mean.
    timm_kwargs
        Extra keyword arguments for ``timm.create_model`` (plain values: they are also the model's recorded
        recipe).
    description
        One line about the model.
    crop_pct
        Centre-crop fraction of the model's preprocessing: patches are resized to
        ``floor(input_size / crop_pct)`` px, then the central ``input_size`` px are kept (``1.0``: no crop;
        ``0.875``: resize to 256, crop 224, as Prov-GigaPath's card).
    interpolation
        ``"bilinear"`` or ``"bicubic"`` (antialiased) for that resize.
    backend
        ``"timm"`` (``timm.create_model``) or ``"transformers"`` (``transformers.AutoModel``, extra
        ``morphst[foundation]``).
    lazy_kwargs
        A function returning more ``timm.create_model`` keyword arguments that need imports (layer classes such as
        ``SwiGLUPacked``), called when the network is built: model quirks live with their spec.
    convert_state_dict
        ``f(state_dict, model_state_dict) -> state_dict`` applied to a local weights file before the strict load
        (e.g. renaming keys by position), or ``None``.
    bundled_weights
        A function returning the path of weights shipped in a Python package (or ``None``), tried after
        ``mst.settings.weights_dir``.
    source
        Where the recipe was checked (model card, code), cited for each entry.
    """

    name: str
    arch: str
    embedding_dim: int
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    licence: str = ""
    weight_source: str = ""
    hub: str | None = None
    gated: bool = False
    pooling: str = "default"
    n_prefix_tokens: int = 1
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    backend: str = "timm"
    lazy_kwargs: Callable[[], dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    convert_state_dict: Callable[[dict, dict], dict] | None = field(default=None, repr=False, compare=False)
    bundled_weights: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    source: str = ""

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``timm.create_model``: ``timm_kwargs`` plus those of ``lazy_kwargs``."""
        kw = dict(self.timm_kwargs)
        if self.lazy_kwargs is not None:
            kw.update(self.lazy_kwargs())
        return kw


@runtime_checkable
class Encoder(Protocol):
    """What :func:`morphst.tl.embed_patches` needs from a model.

    ``transform`` maps a uint8 tensor ``(B, 3, H, W)`` (RGB, 0–255) to the model input, ``encode`` maps that to
    ``(B, D)`` features. ``uses_torch`` says whether autocast / devices apply.
    """

    name: str
    uses_torch: bool
    weights_source: str
    weights_sha256: str | None
    #: The weights file (or transformers folder) loaded, ``None`` when not loaded from a local path.
    weights_path: str | None

    def transform(self, x: Any) -> Any: ...

    def encode(self, x: Any) -> Any: ...


class TorchEncoder:
    """A torch module with its preprocessing: resize to ``input_size`` (optionally centre-crop), scale, normalise."""

    uses_torch = True

    def __init__(
        self,
        module,
        *,
        name: str,
        input_size: int | None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling: str = "default",
        n_prefix_tokens: int = 1,
        weights_source: str = "",
        weights_sha256: str | None = None,
        weights_path: str | None = None,
        spec: ModelSpec | None = None,
        crop_pct: float = 1.0,
        interpolation: str = "bilinear",
    ):
        import torch

        if interpolation not in ("bilinear", "bicubic"):
            msg = f"`interpolation` must be 'bilinear' or 'bicubic', got {interpolation!r}."
            raise ValueError(msg)
        if not 0 < crop_pct <= 1:
            msg = f"`crop_pct` must be in (0, 1], got {crop_pct}."
            raise ValueError(msg)

        self.module = module.eval()
        self.name = name
        self.input_size = input_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.pooling = pooling
        self.n_prefix_tokens = n_prefix_tokens
        self.weights_source = weights_source
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path
        self.spec = spec
        self.crop_pct = float(crop_pct)
        self.interpolation = interpolation

    @property
    def embedding_dim(self) -> int | None:
        return (
            getattr(self.module, "num_features", None) if self.pooling == "default" else (2 * self.module.num_features)
        )

    def to(self, device) -> TorchEncoder:
        self.module.to(device)
        self.mean = self.mean.to(device)
        self.std = self.std.to(device)
        return self

    def channels_last(self) -> None:
        import torch

        self.module.to(memory_format=torch.channels_last)

    def transform(self, x):
        """uint8 ``(B, 3, H, W)`` -> normalised float ``(B, 3, input_size, input_size)``.

        Resize (antialiased ``interpolation``) to ``floor(input_size / crop_pct)`` px, centre-crop ``input_size``
        px (as torchvision ``Resize`` + ``CenterCrop``), scale to [0, 1], subtract ``mean``, divide by ``std``.
        """
        import math

        import torch
        import torch.nn.functional as F

        size = self.input_size
        if size is not None:
            resize = size if self.crop_pct >= 1 else math.floor(size / self.crop_pct)
            if x.shape[-1] != resize or x.shape[-2] != resize:
                if self.interpolation == "bilinear":
                    x = F.interpolate(x, size=(resize, resize), mode="bilinear", antialias=True)
                else:  # bicubic overshoots: interpolate in float, clamp to the uint8 range
                    x = F.interpolate(x.to(torch.float32), size=(resize, resize), mode="bicubic", antialias=True)
                    x = x.clamp_(0, 255)
            if resize != size:
                top = round((resize - size) / 2.0)
                x = x[..., top : top + size, top : top + size]
        x = x.to(torch.float32).div_(255.0)
        return (x - self.mean) / self.std

    def encode(self, x):
        import torch

        if self.pooling == "cls+mean":
            tok = self.module.forward_features(x)
            return torch.cat([tok[:, 0], tok[:, self.n_prefix_tokens :].mean(1)], dim=-1)
        return self.module(x)


class CallableEncoder:
    """Any callable mapping float RGB tensors ``(B, 3, H, W)`` in [0, 1] to ``(B, D)`` (tensor or array)."""

    uses_torch = True
    weights_sha256 = None
    weights_path = None

    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__.lower()
        self.weights_source = f"user callable {self.name!r}"
        if hasattr(fn, "eval") and callable(fn.eval):
            fn.eval()

    def to(self, device) -> CallableEncoder:
        if hasattr(self.fn, "to") and callable(self.fn.to):
            self.fn.to(device)
        return self

    def channels_last(self) -> None:
        return None

    def transform(self, x):
        import torch

        return x.to(torch.float32).div_(255.0)

    def encode(self, x):
        import numpy as np
        import torch

        out = self.fn(x)
        if not isinstance(out, torch.Tensor):
            out = torch.as_tensor(np.asarray(out))
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            msg = f"The model callable must return shape (B, D) = ({x.shape[0]}, D), got {tuple(out.shape)}."
            raise ValueError(msg)
        return out
