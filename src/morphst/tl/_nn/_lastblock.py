"""The last block of a CNN encoder, split from its trunk: the part :class:`LastBlockFinetune` trains in each fold.

A DenseNet (timm) ends with ``features.denseblock4`` and ``features.norm5`` (batch norm + ReLU); a ResNet (timm) with
``layer4``; a timm VisionTransformer with its transformer blocks (the last ``n_blocks`` of them form the "last
block"). :func:`split_last_block` returns the trunk that computes the activations entering that block (cached once by
:func:`morphst.tl.cache_activations`) and a :class:`LastBlock`: the block's units (dense layers, residual blocks or
transformer blocks), of which the first ones may stay frozen, then the closing norm and the pooling. Transformer
blocks are adapted by low-rank updates of their attention projections (LoRA, Hu et al., ICLR 2022:
``W x + (alpha / r) B A x`` with ``A`` ``(r, d_in)`` random, ``B`` ``(d_out, r)`` zero at the start, ``W`` frozen).
"""

from __future__ import annotations

import copy
from typing import Any


def split_last_block(module, *, n_blocks: int = 1, pooling: str = "default") -> tuple[Any, Any]:
    """``(trunk, block)`` of a timm DenseNet, ResNet or VisionTransformer: ``block(trunk(x))`` equals its features.

    ``n_blocks``: transformer blocks in the last block of a VisionTransformer (1 for CNNs). ``pooling``:
    ``"default"`` (timm's pooling) or ``"cls+mean"`` (class token and mean patch token, as the registry's Virchow).

    Raises
    ------
    ValueError
        For another architecture (the message names the ones supported) or a bad ``n_blocks``.
    """
    from torch import nn

    feats = getattr(module, "features", None)
    if isinstance(feats, nn.Sequential) and hasattr(feats, "denseblock4"):  # timm DenseNet
        children = list(feats.named_children())
        i = [n for n, _ in children].index("denseblock4")
        trunk = nn.Sequential(*[m for _, m in children[:i]])
        norm = feats.norm5 if hasattr(feats, "norm5") else nn.Identity()
        return trunk, LastBlock(list(feats.denseblock4.values()), norm, kind="dense")
    if all(hasattr(module, n) for n in ("conv1", "bn1", "layer3", "layer4")):  # timm ResNet
        act = getattr(module, "act1", None) or getattr(module, "relu", nn.ReLU())
        trunk = nn.Sequential(
            module.conv1, module.bn1, act, module.maxpool, module.layer1, module.layer2, module.layer3
        )
        return trunk, LastBlock(list(module.layer4), nn.Identity(), kind="seq")
    if all(hasattr(module, n) for n in ("patch_embed", "_pos_embed", "blocks", "norm")):  # timm VisionTransformer
        n = len(module.blocks)
        if not 1 <= int(n_blocks) < n:
            msg = f"`n_blocks` must be between 1 and {n - 1} (the model has {n} transformer blocks), got {n_blocks!r}."
            raise ValueError(msg)
        pool = _vit_pool(module, pooling)
        units = list(module.blocks)[n - int(n_blocks) :]
        return _vit_trunk(module, n - int(n_blocks)), LastBlock(units, module.norm, kind="vit", pool=pool)
    msg = (
        f"Cannot split the last block of a {type(module).__name__}: fine-tuning the last block supports timm "
        "DenseNets ('densenet121', ...), ResNets ('resnet18', 'resnet50', ...) and VisionTransformers ('uni', ...)."
    )
    raise ValueError(msg)


def _vit_pool(module, pooling: str) -> tuple:
    """``(how, n_prefix_tokens, fc_norm)`` of a VisionTransformer's features."""
    npt = int(getattr(module, "num_prefix_tokens", 1))
    how = "cls+mean" if pooling == "cls+mean" else str(getattr(module, "global_pool", "token") or "none")
    if how not in ("token", "avg", "cls+mean"):
        msg = f"Fine-tuning a VisionTransformer pooled by {how!r} is not supported (pooling 'token', 'avg' or 'cls+mean')."
        raise ValueError(msg)
    return how, npt, getattr(module, "fc_norm", None)


def _vit_trunk(module, n_first: int):
    from torch import nn

    class _VitTrunk(nn.Module):
        """Patch embedding, positions and the first ``n_first`` transformer blocks: tokens ``(B, T, D)``."""

        def __init__(self) -> None:
            super().__init__()
            self.vit = module

        def forward(self, x):
            v = self.vit
            x = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))
            for blk in v.blocks[:n_first]:
                x = blk(x)
            return x

    return _VitTrunk()


def lora_linear(base, rank: int, alpha: float | None = None):
    """``base`` (a frozen :class:`torch.nn.Linear`) plus a trainable rank-``rank`` update (Hu et al., ICLR 2022)."""
    import math

    import torch
    from torch import nn

    class LoRALinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base
            for p in base.parameters():
                p.requires_grad_(False)
            self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
            self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
            self.scale = float(alpha if alpha is not None else rank) / rank

        def forward(self, x):
            return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    return LoRALinear()


class _LastBlockMethods:
    """What a last block does (torch is imported by :func:`_block_class`, when a block is built)."""

    @property
    def dense(self) -> bool:
        return self.kind == "dense"

    @property
    def in_channels(self) -> int:
        """Channels (CNN) or token width (ViT) of the activations entering the block."""
        u = self.units[0]
        if self.kind == "vit":
            return int(u.norm1.normalized_shape[0])
        return int(u.norm1.num_features if self.dense else u.conv1.in_channels)

    def in_shape(self, width: int) -> tuple[int, ...] | None:
        """The activation shape of one patch flattened to ``width`` columns, or ``None`` if none fits."""
        c = self.in_channels
        if width % c:
            return None
        if self.kind == "vit":
            return (width // c, c)
        side = round((width / c) ** 0.5)
        return (c, side, side) if side * side * c == width else None

    def freeze_first(self, n_frozen: int, lora_rank: int | None = None) -> None:
        """Freeze the first ``n_frozen`` units; train the others' full weights, or their LoRA updates.

        With ``lora_rank``, only low-rank updates of the attention projections of the trained units are trained.
        Batch norms keep their running statistics.
        """
        self.n_frozen = int(n_frozen)
        for i, u in enumerate(self.units):
            for p in u.parameters():
                p.requires_grad_(i >= self.n_frozen and lora_rank is None)
        for p in [*self.norm.parameters(), *self.fc_norm.parameters()]:
            p.requires_grad_(lora_rank is None)
        if lora_rank is not None:
            for u in self.units[self.n_frozen :]:
                u.attn.qkv = lora_linear(u.attn.qkv, int(lora_rank))
                u.attn.proj = lora_linear(u.attn.proj, int(lora_rank))

    def _pool(self, x):
        import torch

        if self.kind != "vit":
            return x.mean(dim=(2, 3))
        if self.pool_how == "cls+mean":
            return torch.cat([x[:, 0], x[:, self.n_prefix :].mean(1)], dim=-1)
        x = x[:, 0] if self.pool_how == "token" else x[:, self.n_prefix :].mean(1)
        return self.fc_norm(x)

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
        """The trained units, the norm and the pooling: ``(B, n_features)``."""
        return self._pool(self.norm(self._run(h, self.units[self.n_frozen :])))

    def forward(self, x):
        return self.trained_part(self.frozen_part(x))


def _block_class():
    from torch import nn

    class _LastBlock(_LastBlockMethods, nn.Module):
        """The units of the last block (``n_frozen`` first ones frozen), the closing norm and average pooling."""

        def __init__(self, units, norm, *, kind: str, pool: tuple | None = None) -> None:
            super().__init__()
            self.units = nn.ModuleList(copy.deepcopy(list(units)))
            self.norm = copy.deepcopy(norm)
            self.kind = kind
            self.pool_how, self.n_prefix = (pool[0], pool[1]) if pool else ("avg2d", 0)
            self.fc_norm = copy.deepcopy(pool[2]) if pool and pool[2] is not None else nn.Identity()
            self.n_frozen = 0

    return _LastBlock


def LastBlock(units, norm, *, kind: str, pool: tuple | None = None):
    """The :class:`torch.nn.Module` of a last block (see :func:`split_last_block`); ``kind``: dense, seq or vit."""
    return _block_class()(units, norm, kind=kind, pool=pool)


__all__ = ["LastBlock", "lora_linear", "split_last_block"]
