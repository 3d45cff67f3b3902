"""Hugging Face ``transformers`` vision backbones behind the timm-like interface that :class:`TorchEncoder` uses."""

from __future__ import annotations

import torch


class TokenModel(torch.nn.Module):
    """A ``transformers`` vision model (ViT, DINOv2) seen as timm sees a ViT.

    ``forward_features(x)`` is ``last_hidden_state``, shape ``(B, n_tokens, hidden_size)`` (class token first);
    ``forward(x)`` is the class token ``last_hidden_state[:, 0]``, shape ``(B, hidden_size)``: the embedding of the
    Phikon / Phikon-v2 model cards. ``num_features`` is ``hidden_size``; ``num_prefix_tokens`` the class token plus
    any register tokens.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        self.num_features = int(cfg.hidden_size)
        self.num_prefix_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).last_hidden_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[:, 0]
