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
    ensemble
        With two or more training sections (``groups`` of :meth:`fit`), adapt one block + head per training section
        held out for early stopping (seed ``random_state + i`` for the ``i``-th section in sorted order) and average
        their predictions, as :class:`~morphst.tl.FeatureHead` does; ``False``, or one section: one block + head,
        early-stopped on one held-out section (or 20 % of the rows).
    random_state
        Seed of the head, the batches, dropout and the inner split (repeatable on the CPU).
    device
        torch device (``None``: ``mst.settings.device``).

    Attributes
    ----------
    module_
        The fitted block and head: a ``ModuleDict`` ``{"block", "head"}`` (torch, on the CPU); for an ensemble, a
        ``ModuleList`` of them, one per member.
    n_members_
        Number of adapted blocks + heads averaged (1 without an ensemble).
    curve_
        Per joint epoch: ``{"epoch", "train_loss", "val_pcc": ndarray}``, epoch 0 = the linear probe (an ensemble:
        with a ``"member"`` column).
    chosen_epoch_, head_epoch_
        Joint epochs kept (0: the linear probe) and epochs of the linear probe; for an ensemble, the rounded means
        (``chosen_epochs_``, ``head_epochs_`` list the members').
    validation_, weights_sha256_, pooling_
        The held-out training rows of early stopping; sha256 of the weights file (``None`` otherwise); the
        model's pooling (``"default"`` or the registry's, e.g. ``"cls+mean"``).

    Notes
    -----
    A :class:`~morphst.tl.Translator` fit with it is saved by :meth:`~morphst.tl.Translator.save` when ``model`` is
    a name (registry or timm): the file holds each member's block (every unit) and head as arrays; loading builds
    the architecture by name without weights (no weights file, no hub) and loads them. With a torch module as
    ``model``, saving raises ``TypeError``.

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
        ensemble: bool = True,
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
        self.ensemble = ensemble
        self.random_state = random_state
        self.device = device

    def describe(self) -> str:
        """One line: what is trained and how."""
        name = self.model if isinstance(self.model, str) else type(self.model).__name__
        layers = "all units" if self.n_layers is None else f"its last {self.n_layers} units"
        if self.lora_rank is not None:
            layers += f", LoRA rank {self.lora_rank}"
        stop = (
            "one per held-out training section, predictions averaged"
            if self.ensemble
            else "a held-out training section"
        )
        return (
            f"LastBlockFinetune({name} last block ({layers}) + FeatureHead({self.n_hidden}); linear probe, then "
            f"joint AdamW lr {self.learning_rate:g} for at most {self.max_epochs} epochs; early stopping on {stop})"
        )

    def fit_note(self) -> str:
        """What the fit chose, for the model description."""
        if self.n_members_ == 1:
            return (
                f"; linear probe {self.head_epoch_} epochs, joint epochs kept {self.chosen_epoch_} ({self.validation_})"
            )
        return (
            f"; ensemble of {self.n_members_} (one per held-out training section): linear probe epochs "
            f"{self.head_epochs_}, joint epochs kept {self.chosen_epochs_}"
        )

    # ---- pieces --------------------------------------------------------------------------------------------------
    def _load_block(self, seed: int):
        """A fresh copy of the pretrained last block (``freeze_first`` applied) and the weights' sha256."""
        from ..models import get_model

        pooling = "default"
        if isinstance(self.model, str):
            enc = get_model(self.model, weights=self.weights, random_state=int(seed))
            module, sha, pooling = enc.module, enc.weights_sha256, enc.pooling
        else:
            module, sha = self.model, None
        self.pooling_ = pooling
        return self._block_from(module, pooling, seed), sha

    def _block_from(self, module, pooling: str, seed: int):
        """The last block of ``module``, its first units frozen (``n_layers``) or LoRA-wrapped (``lora_rank``)."""
        import torch

        from ._lastblock import split_last_block

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
        torch.manual_seed(int(seed))  # the LoRA initialisation
        block.freeze_first(n - k, lora_rank=(8 if rank is None else int(rank)) if block.kind == "vit" else None)
        return block.eval()

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

    def _head(self, blocks, seed: int) -> FeatureHead:
        return FeatureHead(
            blocks, n_hidden=self.n_hidden, dropout=self.dropout, correlation_weight=self.correlation_weight,
            random_state=seed, device=self.device,
        )  # fmt: skip

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

        ``groups`` (sections of the rows): with ``ensemble`` and two or more sections, one member per section held
        out for early stopping; else one whole training section is held out when there are two or more, or a
        seeded 20 % of the rows (:func:`~morphst.tl._nn.inner_validation_split`).
        """
        import torch

        from ._torch import ensemble_splits, resolve_train_device

        x = np.asarray(X)
        yy = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
        if len(x) < 4:
            msg = f"LastBlockFinetune needs at least 4 training rows, got {len(x)}."
            raise ValueError(msg)
        device = resolve_train_device(self.device)
        block, self.weights_sha256_ = self._load_block(int(self.random_state))
        maps, tokens, shape = self._layout(x.shape[1], block)
        block = block.to(device)
        pre = self._frozen(block, x, maps, shape, device)  # the frozen units: the same for every member
        widths = self._standardise_maps(block, pre)
        self.mu_ = [m.to(device) for m in self.mu_]
        self.sd_ = [s.to(device) for s in self.sd_]
        tok = torch.from_numpy(self._tokens(x, tokens, fit=True)).to(device)
        self.y_mean_, self.y_scale_ = yy.mean(axis=0), yy.std(axis=0)
        self.y_scale_[~(self.y_scale_ > 1e-12)] = 1.0
        ys = ((yy - self.y_mean_) / self.y_scale_).astype(np.float32)
        z0 = self._features(block, pre, tok, torch.arange(len(x)), grad=False).cpu().numpy()
        blocks = _head_blocks(widths, tok.shape[1])
        members, curves, chosen, probes, hows = [], [], [], [], []
        splits = ensemble_splits(np.arange(len(x)), groups, self.ensemble, self.random_state)
        for i, (fit_rows, val_rows, how, seed) in enumerate(splits):
            if i:  # a fresh copy of the pretrained block per member
                block = self._load_block(seed)[0].to(device)
            head = self._head(blocks, seed)
            net, _, n_probe = head._train(
                z0, ys, fit_rows, val_rows, int(self.probe_epochs), head.options(), device, seed
            )
            curve, kept = self._joint(block, net, pre, tok, ys, fit_rows, val_rows, device, seed)
            members.append(torch.nn.ModuleDict({"block": block.cpu(), "head": net.cpu()}))
            curves.append({**curve, "member": np.full(len(curve["epoch"]), i, dtype=np.float64)})
            chosen.append(kept)
            probes.append(int(n_probe))
            hows.append(how)
        one = len(members) == 1
        self.module_ = members[0] if one else torch.nn.ModuleList(members)
        self.n_members_ = len(members)
        self.curve_ = (
            {k: v for k, v in curves[0].items() if k != "member"}
            if one
            else {k: np.concatenate([c[k] for c in curves]) for k in curves[0]}
        )
        self.chosen_epochs_, self.head_epochs_ = chosen, probes
        self.chosen_epoch_ = chosen[0] if one else round(float(np.mean(chosen)))
        self.head_epoch_ = probes[0] if one else round(float(np.mean(probes)))
        self.validation_ = hows[0] if one else f"{len(members)} members, one per held-out training section"
        self.mu_ = [m.cpu() for m in self.mu_]
        self.sd_ = [s.cpu() for s in self.sd_]
        self.n_features_in_ = x.shape[1]
        return self

    def _joint(self, block, net, pre, tok, ys, fit_rows, val_rows, device, seed: int) -> tuple[dict, int]:
        """Train the block and the head together from the linear probe; keep the best epoch (0: the probe).

        Returns the curve (``{"epoch", "train_loss", "val_pcc"}`` arrays) and the epoch kept.
        """
        import torch

        from ._torch import seeded_generator

        gen = seeded_generator(int(seed) + 1)
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
        return {k: np.array([r[k] for r in curve], dtype=np.float64) for k in curve[0]}, chosen

    def _members(self) -> list:
        import torch

        return list(self.module_) if isinstance(self.module_, torch.nn.ModuleList) else [self.module_]

    def predict(self, X) -> np.ndarray:
        """Predicted targets ``(n, n_genes)`` on the scale of ``y`` (CPU); an ensemble: the mean of its members'."""
        import torch

        x = np.asarray(X)
        members = self._members()
        maps, tokens, shape = self._layout(x.shape[1], members[0]["block"])
        tok = torch.from_numpy(self._tokens(x, tokens, fit=False))
        pre = self._frozen(members[0]["block"], x, maps, shape, torch.device("cpu"))  # frozen units: shared
        preds = []
        for m in members:
            p = self._predict_rows(m["block"], m["head"], pre, tok, np.arange(len(x)))
            preds.append(p.astype(np.float64) * self.y_scale_ + self.y_mean_)
        return preds[0] if len(preds) == 1 else np.mean(preds, axis=0)

    # ---- saving: the hooks of the translator file (morphst.tl.Translator.save / load) ---------------------------
    def _saved_state(self) -> dict:
        """The fitted state as arrays, numbers and strings (:func:`._finetune_state.saved_state`)."""
        from ._finetune_state import saved_state

        return saved_state(self)

    @classmethod
    def _from_saved_state(cls, state: dict) -> LastBlockFinetune:
        """Rebuilt from :meth:`_saved_state`, without the weights file or the hub (:func:`._finetune_state.rebuild`)."""
        from ._finetune_state import rebuild

        return rebuild(cls, state)


def _head_blocks(widths: Sequence[int], n_tokens: int) -> list[tuple[str, int]]:
    """The head's input blocks: the pooled maps of each activation block, then the feature blocks (if any)."""
    return [(f"map{i}", int(w)) for i, w in enumerate(widths)] + [("tokens", int(n_tokens))] * bool(n_tokens)


__all__ = ["LastBlockFinetune"]
