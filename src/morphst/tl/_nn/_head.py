"""`FeatureHead`: a trained translation head on frozen patch features (own patch, context, neighbours, section).

A small network in the spirit of TRIPLEX (Chung et al., CVPR 2024) on frozen embeddings: one token per input block
(the spot's own patch, each larger context patch, the mean of its spatial neighbours, the mean of its section), each
projected to ``n_hidden`` units, concatenated and fused into one hidden layer (the learned representation), then a
linear read-out per gene. Trained with torch (AdamW, mini-batches, a loss of mean squared error plus one minus the
per-gene Pearson r within the batch, as correlation is what translation is judged by), early stopping on a held-out
section of the training rows, then refit on every training row for the chosen number of epochs. Predictions and the
representation are computed in numpy from the fitted arrays, so a fitted head needs no torch and is stored without
pickle in the translator file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from ..._utils._stats import column_scale, zscore


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _pcc_loss(p, t, eps: float = 1e-8):
    """1 - mean over genes of the Pearson r between columns of ``p`` and ``t`` (within the batch)."""
    pc = p - p.mean(dim=0, keepdim=True)
    tc = t - t.mean(dim=0, keepdim=True)
    r = (pc * tc).sum(0) / ((pc.square().sum(0) * tc.square().sum(0)).sqrt() + eps)
    return 1.0 - r.mean()


def column_pcc(p: np.ndarray, t: np.ndarray) -> float:
    """Mean over columns of the Pearson r between ``p`` and ``t`` ``(n, g)``; columns constant in either are skipped."""
    zp, okp = zscore(p)
    zt, okt = zscore(t)
    ok = okp & okt
    if not ok.any():
        return float("nan")
    return float(((zp[:, ok] * zt[:, ok]).mean(axis=0)).mean())


class FeatureHead(RegressorMixin, BaseEstimator):
    """Translation head on frozen patch features: one token per input block, a fused hidden layer, gene read-out.

    A scikit-learn regressor (``fit(X, y, groups=None)``, ``predict``, ``transform``) trained with torch; see the
    module docstring for the method. Pass it as ``regressor=`` to :func:`morphst.tl.predict_expression` or
    :func:`morphst.tl.fit_translator` (``regressor="head"`` uses the defaults), which set ``blocks`` from the features
    they assemble.

    Parameters
    ----------
    blocks
        ``((name, width), ...)``: the column blocks of ``X`` in order (e.g. ``(("patch", 1024), ("neighbours",
        1024))``); ``None``: one block of all columns.
    n_hidden
        Width of each block's token and of the fused hidden layer (the learned representation).
    max_epochs, patience, learning_rate, weight_decay, dropout, batch_size
        The optimiser and stopping rule (:class:`~morphst.tl.TrainOptions`).
    correlation_weight
        Weight of ``1 - mean Pearson r`` in the loss (the mean squared error of standardised genes has weight 1).
    refit
        After early stopping on the held-out section, refit on every training row for the chosen number of
        epochs (``True``) or keep the early-stopped weights (``False``).
    ensemble
        With two or more training sections (``groups`` of :meth:`fit`), train one head per training section held
        out for early stopping (seed ``random_state + i`` for the ``i``-th section in sorted order) and average
        their predictions (``n_members_`` records the size); ``False``, or one section: one head, early-stopped on
        one held-out section (or 20 % of the rows).
    random_state
        Seed of the initialisation, the batches, dropout and the inner split (repeatable on the CPU).
    device
        torch device for training (``None``: ``mst.settings.device``); predictions are computed in numpy.

    Attributes
    ----------
    weights_
        Fitted arrays: per block ``W`` ``(width, n_hidden)`` and ``b``; the fusion layer; the read-out (a list of
        such dicts, one per member, for an ensemble).
    n_members_
        Number of heads averaged (1 without an ensemble).
    x_mean_, x_scale_, y_mean_, y_scale_
        Standardisation of inputs and targets on the training rows.
    curve_
        The early-stopping run, one value per epoch: ``{"epoch", "train_loss", "val_loss", "val_pcc": ndarray}``.
    chosen_epoch_
        Number of epochs kept (best validation PCC); for an ensemble, the rounded mean over its members
        (``chosen_epochs_`` lists them).
    validation_
        How the early-stopping rows were chosen.
    """

    def __init__(
        self,
        blocks: Sequence[tuple[str, int]] | None = None,
        *,
        n_hidden: int = 128,
        max_epochs: int = 200,
        patience: int = 20,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-2,
        dropout: float = 0.25,
        batch_size: int = 128,
        correlation_weight: float = 1.0,
        refit: bool = True,
        ensemble: bool = True,
        random_state: int = 0,
        device: str | None = None,
    ) -> None:
        self.blocks = blocks
        self.n_hidden = n_hidden
        self.max_epochs = max_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_size = batch_size
        self.correlation_weight = correlation_weight
        self.refit = refit
        self.ensemble = ensemble
        self.random_state = random_state
        self.device = device

    # ---- description ---------------------------------------------------------------------------------------------
    def describe(self) -> str:
        """One line: the blocks, the width and the loss."""
        blocks = self.blocks or (("features", "all"),)
        names = " + ".join(f"{n}({w})" for n, w in blocks)
        return (
            f"FeatureHead({names} -> {self.n_hidden} per token -> fused {self.n_hidden} -> genes; "
            f"MSE + {self.correlation_weight:g} x (1 - PCC); AdamW lr {self.learning_rate:g}, weight decay "
            f"{self.weight_decay:g}, dropout {self.dropout:g}; early stopping on a held-out training section"
            + (", then refit on all training rows" if self.refit else "")
            + ("; one head per held-out training section, predictions averaged" if self.ensemble else "")
            + ")"
        )

    def options(self):
        """The optimiser options as a checked :class:`~morphst.tl.TrainOptions`."""
        from ._torch import TrainOptions

        return TrainOptions(
            max_epochs=self.max_epochs,
            patience=self.patience,
            learning_rate=float(self.learning_rate),
            weight_decay=float(self.weight_decay),
            dropout=float(self.dropout),
            batch_size=self.batch_size,
        ).check()

    def _block_slices(self, n_features: int) -> list[tuple[str, slice]]:
        blocks = self.blocks if self.blocks else (("features", n_features),)
        out, s = [], 0
        for name, w in blocks:
            out.append((str(name), slice(s, s + int(w))))
            s += int(w)
        if s != n_features:
            msg = f"`blocks` cover {s} columns but X has {n_features}."
            raise ValueError(msg)
        return out

    # ---- torch ---------------------------------------------------------------------------------------------------
    def _network(self, n_features: int, n_genes: int):
        import torch
        from torch import nn

        slices = self._block_slices(n_features)
        h, p = int(self.n_hidden), float(self.dropout)

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.tokens = nn.ModuleList([nn.Linear(s.stop - s.start, h) for _, s in slices])
                self.fuse = nn.Linear(h * len(slices), h)
                self.out = nn.Linear(h, n_genes)
                self.drop = nn.Dropout(p)
                self.act = nn.GELU()

            def hidden(self, x):
                toks = [self.act(lin(self.drop(x[:, s]))) for lin, (_, s) in zip(self.tokens, slices, strict=True)]
                return self.act(self.fuse(self.drop(torch.cat(toks, dim=1))))

            def forward(self, x):
                return self.out(self.drop(self.hidden(x)))

        return Net()

    def _train(self, x, y, fit_rows, val_rows, n_epochs, opts, device, seed):
        """Train a fresh network; with ``val_rows`` track the validation PCC and keep the best epoch's weights."""
        import torch

        from ._torch import seeded_generator

        gen = seeded_generator(seed)
        net = self._network(x.shape[1], y.shape[1]).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=opts.learning_rate, weight_decay=opts.weight_decay)
        xt = torch.from_numpy(x).to(device)
        yt = torch.from_numpy(y).to(device)
        fit_idx = torch.from_numpy(fit_rows)
        curve, best, best_state, since = [], -np.inf, None, 0
        for epoch in range(1, n_epochs + 1):
            net.train()
            perm = fit_idx[torch.randperm(len(fit_idx), generator=gen)]
            total, n_b = 0.0, 0
            for s in range(0, len(perm), opts.batch_size):
                b = perm[s : s + opts.batch_size]
                if len(b) < 2:
                    continue
                pred = net(xt[b])
                loss = torch.mean((pred - yt[b]) ** 2) + self.correlation_weight * _pcc_loss(pred, yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, n_b = total + loss.item(), n_b + 1
            row = {"epoch": epoch, "train_loss": total / max(n_b, 1)}
            if val_rows is not None:
                net.eval()
                with torch.no_grad():
                    pv = net(xt[torch.from_numpy(val_rows)]).cpu().numpy()
                yv = y[val_rows]
                row["val_loss"] = float(np.mean((pv - yv) ** 2))
                row["val_pcc"] = column_pcc(pv, yv)
                score = row["val_pcc"] if np.isfinite(row["val_pcc"]) else -row["val_loss"]
                if score > best + 1e-6:
                    best, since = score, 0
                    best_state = (epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
                else:
                    since += 1
            curve.append(row)
            if val_rows is not None and since >= opts.patience:
                break
        if best_state is not None:
            net.load_state_dict(best_state[1])
            return net, curve, best_state[0]
        return net, curve, n_epochs

    def _export(self, net, n_features: int) -> dict[str, Any]:
        sd = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in net.state_dict().items()}
        n_blocks = len(self._block_slices(n_features))
        return {
            "token_W": [sd[f"tokens.{i}.weight"].T.copy() for i in range(n_blocks)],
            "token_b": [sd[f"tokens.{i}.bias"] for i in range(n_blocks)],
            "fuse_W": sd["fuse.weight"].T.copy(),
            "fuse_b": sd["fuse.bias"],
            "out_W": sd["out.weight"].T.copy(),
            "out_b": sd["out.bias"],
        }

    # ---- scikit-learn API ----------------------------------------------------------------------------------------
    def fit(self, X, y, groups=None) -> FeatureHead:
        """Fit on features ``X`` ``(n, n_features)`` and targets ``y`` ``(n, n_genes)``.

        ``groups`` (sections of the rows, optional) decide the early-stopping rows: one whole training section
        held out when there are two or more, else a seeded 20 % of the rows.
        """
        import torch

        from ._torch import ensemble_splits, resolve_train_device

        opts = self.options()
        x = np.asarray(X, dtype=np.float64)
        yy = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
        if len(x) < 4:
            msg = f"A FeatureHead needs at least 4 training rows, got {len(x)}."
            raise ValueError(msg)
        self._block_slices(x.shape[1])
        self.x_mean_, self.x_scale_, _ = column_scale(x)
        self.y_mean_, self.y_scale_, _ = column_scale(yy)
        xs = ((x - self.x_mean_) / self.x_scale_).astype(np.float32)
        ys = ((yy - self.y_mean_) / self.y_scale_).astype(np.float32)
        device = resolve_train_device(self.device)
        rows = np.arange(len(x))
        threads = torch.get_num_threads()
        if device.type == "cpu":  # small matrices: one thread avoids start-up and oversubscription costs
            torch.set_num_threads(1)
        members, curves, chosen, hows = [], [], [], []
        try:
            for fit_rows, val_rows, how, seed in ensemble_splits(rows, groups, self.ensemble, self.random_state):
                net, curve, epochs = self._train(xs, ys, fit_rows, val_rows, opts.max_epochs, opts, device, seed)
                if self.refit:
                    net, _, _ = self._train(xs, ys, rows, None, epochs, opts, device, seed)
                members.append(self._export(net.cpu(), x.shape[1]))
                curves.append(pd.DataFrame(curve).assign(member=len(curves)))
                chosen.append(int(epochs))
                hows.append(how)
        finally:
            torch.set_num_threads(threads)
        one = len(members) == 1
        self.weights_ = members[0] if one else members
        frame = curves[0].drop(columns="member") if one else pd.concat(curves, ignore_index=True)
        self.curve_ = {c: frame[c].to_numpy(np.float64) for c in frame.columns}
        self.n_members_ = len(members)
        self.chosen_epochs_ = chosen
        self.chosen_epoch_ = chosen[0] if one else round(float(np.mean(chosen)))
        self.validation_ = hows[0] if one else f"{len(members)} heads, one per held-out training section"
        self.n_features_in_ = x.shape[1]
        return self

    def fit_note(self) -> str:
        """What the fit chose, for the model description: the epochs kept and how they were chosen."""
        if self.n_members_ == 1:
            return f"; chosen epoch {self.chosen_epoch_} ({self.validation_})"
        return (
            f"; ensemble of {self.n_members_} heads (one per held-out training section), epochs {self.chosen_epochs_}"
        )

    def _members(self) -> list[dict]:
        return self.weights_ if isinstance(self.weights_, list) else [self.weights_]

    def _hidden(self, x: np.ndarray, w: dict) -> np.ndarray:
        slices = self._block_slices(x.shape[1])
        toks = [_gelu(x[:, s] @ W + b) for (_, s), W, b in zip(slices, w["token_W"], w["token_b"], strict=True)]
        return _gelu(np.hstack(toks) @ w["fuse_W"] + w["fuse_b"]).astype(np.float32)

    def transform(self, X) -> np.ndarray:
        """The learned representation: the fused hidden layer, ``(n, n_hidden)`` float32 (an ensemble: its members'
        layers side by side, ``(n, n_hidden * n_members_)``)."""
        x = (np.asarray(X, dtype=np.float64) - self.x_mean_) / self.x_scale_
        return np.hstack([self._hidden(x, w) for w in self._members()])

    def predict(self, X) -> np.ndarray:
        """Predicted targets ``(n, n_genes)`` on the scale of ``y`` (an ensemble: the mean of its members')."""
        x = (np.asarray(X, dtype=np.float64) - self.x_mean_) / self.x_scale_
        preds = [
            (self._hidden(x, w).astype(np.float64) @ w["out_W"] + w["out_b"]) * self.y_scale_ + self.y_mean_
            for w in self._members()
        ]
        return preds[0] if len(preds) == 1 else np.mean(preds, axis=0)
