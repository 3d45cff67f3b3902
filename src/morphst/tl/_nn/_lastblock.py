"""The last block of a CNN encoder, split from its trunk: the part :class:`LastBlockFinetune` trains in each fold.

A DenseNet (timm) ends with ``features.denseblock4`` and ``features.norm5`` (batch norm + ReLU); a ResNet (timm) with
``layer4``. :func:`split_last_block` returns the trunk that computes the activations entering that block (cached once
by :func:`morphst.tl.cache_activations`) and a :class:`LastBlock`: the block's units (dense layers or residual
blocks), of which the first ones may stay frozen, then the closing norm and global average pooling.
"""

from __future__ import annotations

import copy
from typing import Any


def split_last_block(module) -> tuple[Any, Any]:
    """``(trunk, block)`` of a timm DenseNet or ResNet: ``block(trunk(x))`` equals the pooled features of ``module``.

    Raises
    ------
    ValueError
        For another architecture (the message names the ones supported).
    """
    from torch import nn

    feats = getattr(module, "features", None)
    if isinstance(feats, nn.Sequential) and hasattr(feats, "denseblock4"):  # timm DenseNet
        children = list(feats.named_children())
        i = [n for n, _ in children].index("denseblock4")
        trunk = nn.Sequential(*[m for _, m in children[:i]])
        norm = feats.norm5 if hasattr(feats, "norm5") else nn.Identity()
        return trunk, LastBlock(list(feats.denseblock4.values()), norm, dense=True)
    if all(hasattr(module, n) for n in ("conv1", "bn1", "layer3", "layer4")):  # timm ResNet
        act = getattr(module, "act1", None) or getattr(module, "relu", nn.ReLU())
        trunk = nn.Sequential(module.conv1, module.bn1, act, module.maxpool, module.layer1, module.layer2, module.layer3)
        return trunk, LastBlock(list(module.layer4), nn.Identity(), dense=False)
    msg = (
        f"Cannot split the last block of a {type(module).__name__}: fine-tuning the last block supports timm "
        "DenseNets ('densenet121', ...) and ResNets ('resnet18', 'resnet50', ...)."
    )
    raise ValueError(msg)


def _block_class():
    from torch import nn

    class _LastBlock(nn.Module):
        """The units of the last block (``n_frozen`` first ones frozen), the closing norm and average pooling."""

        def __init__(self, units, norm, *, dense: bool) -> None:
            super().__init__()
            self.units = nn.ModuleList(copy.deepcopy(list(units)))
            self.norm = copy.deepcopy(norm)
            self.dense = dense
            self.n_frozen = 0

        @property
        def in_channels(self) -> int:
            u = self.units[0]
            first = u.norm1 if self.dense else u.conv1
            return int(first.num_features if self.dense else first.in_channels)

        def freeze_first(self, n_frozen: int) -> None:
            """Freeze the first ``n_frozen`` units (no gradient); every batch norm keeps its running statistics."""
            self.n_frozen = int(n_frozen)
            for i, u in enumerate(self.units):
                for p in u.parameters():
                    p.requires_grad_(i >= self.n_frozen)

        def _run(self, x, units):
            import torch

            if not self.dense:
                for u in units:
                    x = u(x)
                return x
            feats = [x]
            for u in units:
                feats.append(u(feats))
            return torch.cat(feats, 1)

        def frozen_part(self, x):
            """The frozen units' output (computed once per fit: they do not change)."""
            return self._run(x, self.units[: self.n_frozen])

        def trained_part(self, h):
            """The trained units, the norm and the global average pool: ``(B, n_features)``."""
            return self.norm(self._run(h, self.units[self.n_frozen :])).mean(dim=(2, 3))

        def forward(self, x):
            return self.trained_part(self.frozen_part(x))

    return _LastBlock


def LastBlock(units, norm, *, dense: bool):  # noqa: N802 - builds the torch module class lazily (torch optional)
    """The :class:`torch.nn.Module` of a last block (see :func:`split_last_block`)."""
    return _block_class()(units, norm, dense=dense)


__all__ = ["LastBlock", "split_last_block"]
