"""`LastBlockFinetune`: the encoder's last block and a head, trained together on cached activations in each fold.

Input: the activations entering the encoder's last block (:func:`morphst.tl.cache_activations`, flattened
``C × H × W`` per spot). Per fit (one cross-validation fold): a copy of the pretrained last block (DenseNet-121:
``denseblock4`` + ``norm5``) pooled to features; those frozen features standardised on the training rows; a
:class:`~morphst.tl.FeatureHead` network trained on them first (a linear probe, early-stopped on a held-out training
section), then the block and the head trained together from there with a small learning rate (LP-FT, Kumar et al.,
ICLR 2022), early-stopped on the same held-out section; the epoch with the best validation Pearson r is kept, the
linear probe itself (epoch 0) included. Batch norms keep their pretrained running statistics (their scale and shift
are trained). Nothing is computed from rows outside ``fit``'s ``X``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from ._head import FeatureHead, _pcc_loss, column_pcc


class LastBlockFinetune(RegressorMixin, BaseEstimator):
    """Fine-tune the encoder's last block with a translation head, on cached activations, inside each fold.

    A scikit-learn regressor (``fit(X, y, groups=None)``, ``predict``): pass it (or ``"finetune"`` for the defaults)
    as ``regressor=`` of :func:`morphst.tl.predict_expression`, with ``use_rep`` the activations written by
    :func:`morphst.tl.cache_activations` from the same ``model`` and ``weights``. See the module docstring for the
    method.

    Parameters
    ----------
    blocks
        ``((name, width), ...)``: the column blocks of ``X`` (set by ``predict_expression``). The first block holds
        activation maps ``(C, H, W)`` flattened (``C`` = the block's input channels, ``H == W``); every block of the
        same width too (context patches, neighbour or section means of the maps): they pass through the same
        adapted block. Narrower blocks (frozen features of context patches) go to the head as they are.
    model
        A registry or timm name (a DenseNet or ResNet), or a torch module of that family.
    weights
        As :func:`morphst.tl.embed_patches` (``None``: ``mst.settings.weights_dir``, then the hub).
    n_layers
        Units of the last block trained (DenseNet dense layers, ResNet residual blocks, transformer blocks), counted
        from its end; the others stay frozen. ``None``: all.
    n_blocks
        A VisionTransformer's last block: its last ``n_blocks`` transformer blocks (as ``cache_activations``).
    lora_rank
        VisionTransformers: rank of the LoRA updates of the attention projections (``qkv``, ``proj``) of the
        trained blocks, their weights frozen (Hu et al., ICLR 2022); ``None``: 8. CNNs train their full weights
        (``None`` only).
    n_hidden, dropout, correlation_weight
        The head (:class:`~morphst.tl.FeatureHead`).
    probe_epochs
        Most epochs of the linear probe (the head alone, on the frozen block's features; patience 20).
    max_epochs, patience
        Epochs of joint training and epochs without a better validation Pearson r before stopping.
    learning_rate
        AdamW learning rate of the joint training (block and head); the linear probe uses the head's own.
    weight_decay, batch_size
        AdamW weight decay; patches per step.
    random_state
        Seed of the head, the batches, dropout and the inner split (repeatable on the CPU).
    device
        torch device (``None``: ``mst.settings.device``).

    Attributes
    ----------
    module_
        The fitted block and head (torch modules, on the CPU).
    curve_
        Per joint epoch: ``{"epoch", "train_loss", "val_pcc": ndarray}``, epoch 0 = the linear probe.
    chosen_epoch_, head_epoch_
        Joint epochs kept (0: the linear probe) and epochs of the linear probe.
    validation_, weights_sha256_
        The held-out training rows of early stopping; sha256 of the weights file (``None`` otherwise).

    Raises
    ------
    ValueError
        In ``fit``: an activation width that does not match the block (other model or weights than the cache's),
        fewer than 4 rows, or an architecture without a supported last block.

    References
    ----------
    Kumar et al., "Fine-tuning can distort pretrained features and underperform out-of-distribution", ICLR 2022.
    Hu et al., "LoRA: Low-rank adaptation of large language models", ICLR 2022.
    """

    def __init__(
        self,
        blocks: Sequence[tuple[str, int]] | None = None,
        *,
        model="densenet121",
        weights=None,
        n_layers: int | None = None,
        n_blocks: int = 1,
        lora_rank: int | None = None,
        n_hidden: int = 128,
        probe_epochs: int = 200,
        max_epochs: int = 8,
        patience: int = 2,
        learning_rate: float = 1e-4,
        weight_decay: float = 1e-2,
        dropout: float = 0.25,
        batch_size: int = 32,
        correlation_weight: float = 1.0,
        random_state: int = 0,
        device: str | None = None,
    ) -> None:
        self.blocks = blocks
        self.model = model
        self.weights = weights
        self.n_layers = n_layers
        self.n_blocks = n_blocks
        self.lora_rank = lora_rank
        self.n_hidden = n_hidden
        self.probe_epochs = probe_epochs
        self.max_epochs = max_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_size = batch_size
        self.correlation_weight = correlation_weight
        self.random_state = random_state
        self.device = device

    def describe(self) -> str:
        """One line: what is trained and how."""
        name = self.model if isinstance(self.model, str) else type(self.model).__name__
        layers = "all units" if self.n_layers is None else f"its last {self.n_layers} units"
        if self.lora_rank is not None:
            layers += f", LoRA rank {self.lora_rank}"
        return (
            f"LastBlockFinetune({name} last block ({layers}) + FeatureHead({self.n_hidden}); linear probe, then "
            f"joint AdamW lr {self.learning_rate:g} for at most {self.max_epochs} epochs; early stopping on a "
            "held-out training section)"
        )

    def fit_note(self) -> str:
        """What the fit chose, for the model description."""
        return f"; linear probe {self.head_epoch_} epochs, joint epochs kept {self.chosen_epoch_} ({self.validation_})"

    # ---- pieces --------------------------------------------------------------------------------------------------
    def _load_block(self):
        import torch

        from ..models import get_model
        from ._lastblock import split_last_block

        pooling = "default"
        if isinstance(self.model, str):
            enc = get_model(self.model, weights=self.weights, random_state=int(self.random_state))
            module, sha, pooling = enc.module, enc.weights_sha256, enc.pooling
        else:
            module, sha = self.model, None
        _, block = split_last_block(module, n_blocks=self.n_blocks, pooling=pooling)
        n = len(block.units)
        k = n if self.n_layers is None else int(self.n_layers)
        if not 1 <= k <= n:
            msg = f"`n_layers` must be between 1 and {n} (the units of the last block), got {self.n_layers!r}."
            raise ValueError(msg)
        rank = self.lora_rank
        if block.kind != "vit" and rank is not None:
            msg = "`lora_rank` applies to VisionTransformers (attention projections); a CNN's last block trains fully."
            raise ValueError(msg)
        torch.manual_seed(int(self.random_state))  # the LoRA initialisation
        block.freeze_first(n - k, lora_rank=(8 if rank is None else int(rank)) if block.kind == "vit" else None)
        return block.eval(), sha

    def _layout(self, n_features: int, block):
        """``(maps, tokens, shape)``: slices of activation blocks, of feature blocks, one patch's activation shape."""
        blocks = self.blocks if self.blocks else (("features", n_features),)
        slices, s = [], 0
        for _, w in blocks:
            slices.append((int(w), slice(s, s + int(w))))
            s += int(w)
        if s != n_features:
            msg = f"`blocks` cover {s} columns but X has {n_features}."
            raise ValueError(msg)
        width = slices[0][0]
        shape = block.in_shape(width)
        if shape is None:
            msg = (
                f"The first block of X has {width} columns, not the activations entering this model's last block "
                f"({block.in_channels} channels x H x W, or tokens x {block.in_channels}): use the `obsm` key written "
                "by `mst.tl.cache_activations` with the same `model`, `weights` and `n_blocks`."
            )
            raise ValueError(msg)
        maps = [sl for w, sl in slices if w == width]
        tokens = [sl for w, sl in slices if w != width]
        return maps, tokens, shape

    def _features(self, block, pre, tok, rows, *, grad: bool):
        """Head input of ``rows``: the pooled, standardised maps of each activation block, then the feature blocks."""
        import torch

        with torch.set_grad_enabled(grad):
            pooled = [block.trained_part(p[rows]) for p in pre]
            z = [(f - self.mu_[i]) / self.sd_[i] for i, f in enumerate(pooled)]
            return torch.cat([*z, tok[rows]], dim=1) if tok.shape[1] else torch.cat(z, dim=1)

    def _frozen(self, block, x, maps, shape, device):
        """The frozen units' output of each activation block, once: ``[(n, C', H, W) or (n, T, D) tensor, ...]``."""
        import torch

        out = []
        with torch.no_grad():
            for sl in maps:
                a = torch.from_numpy(np.ascontiguousarray(x[:, sl], dtype=np.float32)).view(-1, *shape)
                out.append(torch.cat([block.frozen_part(a[i : i + 256].to(device)) for i in range(0, len(a), 256)]))
        return out

    def _tokens(self, x, tokens, fit: bool):
        """The narrower (frozen feature) blocks, standardised with the training rows' mean and sd: ``(n, d)``."""
        t = np.hstack([np.asarray(x[:, sl], dtype=np.float64) for sl in tokens]) if tokens else np.zeros((len(x), 0))
        if fit:
            self.tok_mean_, self.tok_scale_ = t.mean(axis=0), t.std(axis=0)
            self.tok_scale_[~(self.tok_scale_ > 1e-12)] = 1.0
        return ((t - self.tok_mean_) / self.tok_scale_).astype(np.float32)

    def _standardise_maps(self, block, pre) -> list[int]:
        """Mean and sd of each activation block's frozen pooled features on the training rows; their widths."""
        import torch

        self.mu_, self.sd_ = [], []
        with torch.no_grad():
            for p in pre:
                f = torch.cat([block.trained_part(p[i : i + 256]) for i in range(0, len(p), 256)]).double()
                sd = f.std(dim=0, unbiased=False)
                self.mu_.append(f.mean(dim=0).float())
                self.sd_.append(torch.where(sd > 1e-6, sd, torch.ones_like(sd)).float())
        return [int(m.shape[0]) for m in self.mu_]

    def _predict_rows(self, block, net, pre, tok, rows: np.ndarray) -> np.ndarray:
        """Standardised predictions of ``rows`` (no gradient, eval mode), ``(len(rows), n_genes)`` float32."""
        import torch

        net.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(rows), 256):
                b = torch.from_numpy(rows[s : s + 256])
                out.append(net(self._features(block, pre, tok, b, grad=False)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.y_mean_)), np.float32)

    # ---- scikit-learn API ----------------------------------------------------------------------------------------
    def fit(self, X, y, groups=None) -> LastBlockFinetune:
        """Fit on activations ``X`` ``(n, n_features)`` and targets ``y`` ``(n, n_genes)``.

        ``groups`` (sections of the rows): one whole training section is held out for early stopping when there are
        two or more, else a seeded 20 % of the rows (:func:`~morphst.tl._nn.inner_validation_split`).
        """
        import torch

        from ._torch import inner_validation_split, resolve_train_device

        x = np.asarray(X)
        yy = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
        if len(x) < 4:
            msg = f"LastBlockFinetune needs at least 4 training rows, got {len(x)}."
            raise ValueError(msg)
        device = resolve_train_device(self.device)
        block, self.weights_sha256_ = self._load_block()
        maps, tokens, shape = self._layout(x.shape[1], block)
        block = block.to(device)
        pre = self._frozen(block, x, maps, shape, device)
        widths = self._standardise_maps(block, pre)
        self.mu_ = [m.to(device) for m in self.mu_]
        self.sd_ = [s.to(device) for s in self.sd_]
        tok = torch.from_numpy(self._tokens(x, tokens, fit=True)).to(device)
        self.y_mean_, self.y_scale_ = yy.mean(axis=0), yy.std(axis=0)
        self.y_scale_[~(self.y_scale_ > 1e-12)] = 1.0
        ys = ((yy - self.y_mean_) / self.y_scale_).astype(np.float32)
        fit_rows, val_rows, self.validation_ = inner_validation_split(np.arange(len(x)), groups, self.random_state)
        head = FeatureHead(
            [(f"map{i}", w) for i, w in enumerate(widths)] + [("tokens", tok.shape[1])] * bool(tok.shape[1]),
            n_hidden=self.n_hidden, dropout=self.dropout, correlation_weight=self.correlation_weight,
            random_state=self.random_state, device=self.device,
        )  # fmt: skip
        z0 = self._features(block, pre, tok, torch.arange(len(x)), grad=False).cpu().numpy()
        net, _, self.head_epoch_ = head._train(
            z0, ys, fit_rows, val_rows, int(self.probe_epochs), head.options(), device, self.random_state
        )
        self._joint(block, net, pre, tok, ys, fit_rows, val_rows, device)
        self.module_ = torch.nn.ModuleDict({"block": block.cpu(), "head": net.cpu()})
        self.mu_ = [m.cpu() for m in self.mu_]
        self.sd_ = [s.cpu() for s in self.sd_]
        self.n_features_in_ = x.shape[1]
        return self

    def _joint(self, block, net, pre, tok, ys, fit_rows, val_rows, device) -> None:
        """Train the block and the head together from the linear probe; keep the best epoch (0: the probe)."""
        import torch

        from ._torch import seeded_generator

        gen = seeded_generator(int(self.random_state) + 1)
        params = [p for p in block.parameters() if p.requires_grad] + list(net.parameters())
        opt = torch.optim.AdamW(params, lr=float(self.learning_rate), weight_decay=float(self.weight_decay))
        yt = torch.from_numpy(ys).to(device)

        def score() -> float:
            return column_pcc(self._predict_rows(block, net, pre, tok, val_rows), ys[val_rows])

        def state() -> tuple:
            return tuple({k: v.detach().clone() for k, v in m.state_dict().items()} for m in (block, net))

        best, best_state, since = score(), state(), 0
        curve, chosen = [{"epoch": 0, "train_loss": np.nan, "val_pcc": best}], 0
        fit_idx = torch.from_numpy(fit_rows)
        for epoch in range(1, int(self.max_epochs) + 1):
            net.train()  # the block stays in eval mode: its batch norms keep their running statistics
            perm = fit_idx[torch.randperm(len(fit_idx), generator=gen)]
            total, n_b = 0.0, 0
            for s in range(0, len(perm), int(self.batch_size)):
                b = perm[s : s + int(self.batch_size)]
                if len(b) < 2:
                    continue
                pred = net(self._features(block, pre, tok, b, grad=True))
                loss = torch.mean((pred - yt[b]) ** 2) + self.correlation_weight * _pcc_loss(pred, yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, n_b = total + loss.item(), n_b + 1
            val = score()
            curve.append({"epoch": epoch, "train_loss": total / max(n_b, 1), "val_pcc": val})
            if np.isfinite(val) and val > best + 1e-6:
                best, best_state, since, chosen = val, state(), 0, epoch
            else:
                since += 1
                if since >= int(self.patience):
                    break
        block.load_state_dict(best_state[0])
        net.load_state_dict(best_state[1])
        self.curve_ = {k: np.array([r[k] for r in curve], dtype=np.float64) for k in curve[0]}
        self.chosen_epoch_ = chosen

    def predict(self, X) -> np.ndarray:
        """Predicted targets ``(n, n_genes)`` on the scale of ``y``, from the adapted block and the head (CPU)."""
        import torch

        x = np.asarray(X)
        block, net = self.module_["block"], self.module_["head"]
        maps, tokens, shape = self._layout(x.shape[1], block)
        pre = self._frozen(block, x, maps, shape, torch.device("cpu"))
        tok = torch.from_numpy(self._tokens(x, tokens, fit=False))
        p = self._predict_rows(block, net, pre, tok, np.arange(len(x)))
        return p.astype(np.float64) * self.y_scale_ + self.y_mean_


__all__ = ["LastBlockFinetune"]
