"""The trained integration projection, ``method="hsic"`` of :func:`~morphst.tl._learn._integration.fit_integration`.

A projection (linear by default, :data:`N_HIDDEN`) of the morphology features, standardised on the training rows,
trained with AdamW on mini-batches of the training rows to minimise ``relevance + variance/decorrelation +
penalty_weight × shared``. Relevance: with labels, the cross-entropy of a linear classifier on the projection (labels
-1 ignored); without, a spatial InfoNCE (Oord et al. 2018): each row's positive is one of its spatial neighbours
(drawn anew each epoch), the other rows of the batch are the negatives (cosine similarity / :data:`TEMPERATURE`).
Variance/decorrelation (after VICReg, Bardes et al. 2022) keeps the projection from collapsing. Shared: per column
of the projection, the sum over the columns of the expression representation (whitened on the training rows) of
their normalised RBF-kernel HSIC (Gretton et al. 2005), averaged over the projection's columns: the kernels are
approximated by :data:`RFF_FEATURES` random Fourier features (Rahimi & Recht 2007), bandwidths by the median
heuristic. Unlike squared Pearson r, it is zero only under independence, so non-linear dependence on expression is
penalised too. Early stopping on the validation loss of the rows that
:func:`~morphst.tl._nn.inner_validation_split` holds out (a whole section when there are several); the
best epoch's weights are kept; the fitted result is plain arrays and the projection is computed in numpy. Training
runs on one CPU thread (tiny model) and is repeatable per seed.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._nn import TrainOptions, inner_validation_split, seeded_generator
from ._linear import neighbour_lists, standardise_on, whiten_on

#: Hidden width of the projection (0: linear); see :func:`_network`. Linear: on ``morphology_domains`` (seed 0,
#: handcrafted features, 8 components, weight 5) stitched ARI 0.985 linear vs 0.967 with 64 GELU units.
N_HIDDEN = 0
#: Temperature of the spatial InfoNCE (cosine similarities divided by it).
TEMPERATURE = 0.1
#: Weights of the variance (hinge on the per-column std) and decorrelation (off-diagonal covariance) terms.
VARIANCE_WEIGHT = 1.0
DECORRELATION_WEIGHT = 1.0
#: Random Fourier features per variable of the RBF-kernel HSIC penalty.
RFF_FEATURES = 128


def fit_hsic(x, expr, train, labels, edges, groups, n_components, penalty_weight, opts, random_state, device):
    """Train the projection (see the module docstring); returns ``(z, record)`` as ``fit_integration`` does."""
    split = _split(x, expr, train, labels, edges, groups, random_state)
    with _one_cpu_thread(device):
        trainer = _Trainer(split, int(n_components), float(penalty_weight), opts, random_state, device)
        curve, chosen_epoch = trainer.fit()
    z = project(split.xs.astype(np.float64), trainer.weights)
    record = {
        "curve": pd.DataFrame(curve).set_index("epoch"),
        "chosen_epoch": chosen_epoch,
        "description": _describe(split, n_components, penalty_weight, opts),
        "weights": trainer.weights,
    }
    return z.astype(np.float32), record


def project(xs: np.ndarray, weights: dict) -> np.ndarray:
    """The projection in numpy from the fitted arrays (dropout off)."""
    from scipy.special import erf

    linears = sorted({k.split(".")[0] for k in weights}, key=int)
    h = xs
    for i, k in enumerate(linears):
        h = h @ weights[f"{k}.weight"].T + weights[f"{k}.bias"]
        if i < len(linears) - 1:
            h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
    return h


# ------------------------------------------------------------------------------------------- rows and split


@dataclass
class _Split:
    """The standardised inputs and the rows that fit, validate and anchor the objective."""

    xs: np.ndarray  # (n, n_features) float32, standardised on the training rows
    w: np.ndarray  # (n, n_expr') float32, expression whitened on the training rows
    fit_rows: np.ndarray
    val_rows: np.ndarray
    val_all: np.ndarray  # every held-out row (the penalty is checked on these, labelled or not)
    how: str
    labels: np.ndarray | None  # int64 codes (supervised) or None
    n_classes: int
    neighbours: tuple[np.ndarray, np.ndarray] | None  # (indptr, nbrs) among the fitting rows (self-supervised)
    val_pos: np.ndarray | None  # fixed positives of the validation rows (self-supervised)


def _split(x, expr, train, labels, edges, groups, random_state) -> _Split:
    """Standardise, whiten and split the training rows into fitting and early-stopping rows."""
    n = len(x)
    train_rows = np.flatnonzero(train)
    fit_rows, val_rows, how = inner_validation_split(train_rows, groups, random_state)
    xs = standardise_on(x, train_rows).astype(np.float32)
    w = whiten_on(expr, train_rows).astype(np.float32)
    split = _Split(xs, w, fit_rows, val_rows, val_rows.copy(), how, None, 0, None, None)
    if labels is not None:
        split.labels = np.asarray(labels, dtype=np.int64)
        split.n_classes = int(split.labels.max()) + 1
        split.fit_rows = fit_rows[split.labels[fit_rows] >= 0]
        split.val_rows = val_rows[split.labels[val_rows] >= 0]
    else:
        f_ptr, f_nbr = neighbour_lists(edges, _mask(fit_rows, n), n)
        v_ptr, v_nbr = neighbour_lists(edges, _mask(val_rows, n), n)
        split.neighbours = (f_ptr, f_nbr)
        split.fit_rows = fit_rows[np.diff(f_ptr)[fit_rows] > 0]
        split.val_rows = val_rows[np.diff(v_ptr)[val_rows] > 0]
        # fixed positives for the validation loss, so that it changes only with the weights
        split.val_pos = _draw_positives(split.val_rows, v_ptr, v_nbr, np.random.default_rng(random_state + 1))
    if len(split.fit_rows) < 4:
        msg = (
            f"Only {len(split.fit_rows)} training rows have "
            + ("a label" if labels is not None else "a spatial neighbour among the training rows")
            + "; at least 4 are needed."
        )
        raise ValueError(msg)
    if len(split.val_rows) < 2:  # nothing to stop on: validate on the fitting rows themselves
        split.val_rows = split.fit_rows
        split.how += "; too few validation rows usable, stopping on the fitting rows"
        if labels is None:
            split.val_pos = _draw_positives(split.val_rows, *split.neighbours, np.random.default_rng(random_state + 1))
    return split


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[rows] = True
    return m


def _draw_positives(anchors: np.ndarray, indptr: np.ndarray, nbrs: np.ndarray, rng: np.random.Generator):
    """One neighbour per anchor, drawn uniformly (anchors must have at least one)."""
    deg = indptr[anchors + 1] - indptr[anchors]
    pick = (rng.random(len(anchors)) * deg).astype(np.int64)
    return nbrs[indptr[anchors] + pick]


@contextmanager
def _one_cpu_thread(device):
    """Train a tiny model on one CPU thread (restored afterwards)."""
    import torch

    threads = torch.get_num_threads()
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if on_cpu:
            torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------- training


class _Trainer:
    """The projection, its optimiser and the loss terms; :meth:`fit` runs the early-stopped training."""

    def __init__(self, split: _Split, n_components: int, penalty_weight: float, opts: TrainOptions, seed, device):
        import torch

        self.split, self.penalty_weight, self.opts = split, penalty_weight, opts
        self.gen = seeded_generator(seed)
        self.rng = np.random.default_rng(seed)
        self.supervised = split.labels is not None
        self.net = _network(split.xs.shape[1], n_components, N_HIDDEN, opts.dropout).to(device)
        self.clf = torch.nn.Linear(n_components, split.n_classes).to(device) if self.supervised else None
        params = list(self.net.parameters()) + (list(self.clf.parameters()) if self.clf is not None else [])
        self.opt = torch.optim.AdamW(params, lr=opts.learning_rate, weight_decay=opts.weight_decay)
        self.xt = torch.from_numpy(split.xs).to(device)
        # random Fourier features of the whitened expression (median-heuristic bandwidth on the training rows) and
        # the fixed frequencies of the projection's columns, drawn once from the seed
        g = np.random.default_rng(seed + 2)
        sub = split.w[g.permutation(split.fit_rows)[:1000]]
        self.wt = torch.from_numpy(split.w).to(device)
        self.w_bw = torch.tensor([median_bandwidth(sub[:, e], 1000) for e in range(sub.shape[1])]).float().to(device)
        self.z_freqs = torch.from_numpy(g.standard_normal((1, RFF_FEATURES)).astype(np.float32)).to(device)
        self.z_phase = torch.from_numpy(g.uniform(0, 2 * np.pi, RFF_FEATURES).astype(np.float32)).to(device)
        self.lt = torch.from_numpy(split.labels).to(device) if self.supervised else None
        self.val_all_t = torch.from_numpy(split.val_all if len(split.val_all) >= 2 else split.val_rows)
        self.weights: dict = {}

    def losses(self, b, pos=None):
        """``(relevance, anticollapse, shared)`` of the batch ``b`` (positives ``pos`` when self-supervised)."""
        import torch.nn.functional as F

        z = self.net(self.xt[b])
        rel = F.cross_entropy(self.clf(z), self.lt[b]) if self.supervised else _info_nce(z, self.net(self.xt[pos]))
        return rel, _anticollapse(z), _shared_penalty(z, self.wt[b], self.w_bw, self.z_freqs, self.z_phase)

    def _train_mode(self, on: bool) -> None:
        for m in (self.net, self.clf):
            if m is not None:
                m.train(on)

    def epoch(self) -> np.ndarray:
        """One pass over the fitting rows in seeded mini-batches; mean training losses."""
        import torch

        s_ = self.split
        self._train_mode(True)
        perm = s_.fit_rows[torch.randperm(len(s_.fit_rows), generator=self.gen).numpy()]
        pos_all = None if self.supervised else _draw_positives(perm, *s_.neighbours, self.rng)
        tot, n_b = np.zeros(3), 0
        for s in range(0, len(perm), self.opts.batch_size):
            b = perm[s : s + self.opts.batch_size]
            if len(b) < 2:
                continue
            pb = None if self.supervised else torch.from_numpy(pos_all[s : s + self.opts.batch_size])
            rel, anti, pen = self.losses(torch.from_numpy(b), pb)
            loss = rel + anti + self.penalty_weight * pen
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            tot += np.array([rel.item(), anti.item(), pen.item()])
            n_b += 1
        return tot / max(n_b, 1)

    def evaluate(self) -> np.ndarray:
        """Validation losses: relevance over batches of the validation rows, the other terms on every held-out row.

        A batch-sized estimate of the penalty on a small held-out set was too noisy to stop on.
        """
        import torch

        rows, pos, bs = self.split.val_rows, self.split.val_pos, self.opts.batch_size
        self._train_mode(False)
        rel, n_rel = 0.0, 0
        with torch.no_grad():
            for s in range(0, len(rows), bs):
                b = torch.from_numpy(rows[s : s + bs])
                if len(b) < 2:
                    continue
                pb = None if self.supervised else torch.from_numpy(pos[s : s + bs])
                rel += self.losses(b, pb)[0].item() * len(b)
                n_rel += len(b)
            z_all = self.net(self.xt[self.val_all_t])
            anti = _anticollapse(z_all).item()
            pen = _shared_penalty(z_all, self.wt[self.val_all_t], self.w_bw, self.z_freqs, self.z_phase).item()
        return np.array([rel / max(n_rel, 1), anti, pen])

    def fit(self) -> tuple[list[dict], int]:
        """Train with early stopping on the validation loss; keep the best epoch's weights (``self.weights``)."""
        pw = self.penalty_weight
        curve, best, best_state, since = [], np.inf, None, 0
        for epoch in range(1, self.opts.max_epochs + 1):
            tot = self.epoch()
            v = self.evaluate()
            val_loss = float(v[0] + v[1] + pw * v[2])
            curve.append(
                {
                    "epoch": epoch,
                    "train_loss": float(tot[0] + tot[1] + pw * tot[2]),
                    "train_relevance": float(tot[0]),
                    "train_penalty": float(tot[2]),
                    "val_loss": val_loss,
                    "val_relevance": float(v[0]),
                    "val_anticollapse": float(v[1]),
                    "val_penalty": float(v[2]),
                }
            )
            if val_loss < best - 1e-6:
                best, since = val_loss, 0
                best_state = (epoch, {k: t.detach().clone() for k, t in self.net.state_dict().items()})
            else:
                since += 1
                if since >= self.opts.patience:
                    break
        if best_state is None:  # the validation loss was never finite: nothing to keep
            msg = (
                "The integration objective's validation loss was not finite in any epoch (too few held-out spots "
                "with spatial neighbours among them?); use more spots, pass `annotation_key=`, or method='residual'."
            )
            raise ValueError(msg)
        self.net.load_state_dict(best_state[1])
        self.weights = {k: t.detach().cpu().numpy().astype(np.float64) for k, t in self.net.state_dict().items()}
        return curve, int(best_state[0])


def _describe(split: _Split, n_components, penalty_weight, opts: TrainOptions) -> str:
    rel = (
        "cross-entropy of a linear classifier on the labels"
        if split.labels is not None
        else (
            f"spatial InfoNCE (a random spatial neighbour as the positive, the batch as negatives, temperature "
            f"{TEMPERATURE:g})"
        )
    )
    arch = "linear" if N_HIDDEN == 0 else f"MLP ({N_HIDDEN} GELU hidden units)"
    return (
        f"hsic: {arch} projection of the standardised features to {int(n_components)} components; loss = "
        f"{rel} + variance/decorrelation + {penalty_weight:g} x normalised cross-covariance with the whitened "
        f"expression (linear-kernel HSIC of standardised columns); AdamW lr {opts.learning_rate:g}, weight decay "
        f"{opts.weight_decay:g}, dropout {opts.dropout:g}, batch {opts.batch_size}; early stopping on the "
        f"validation loss ({split.how}), weights of the best epoch kept"
    )


# ------------------------------------------------------------------------------------------------- the terms


def _network(n_in: int, n_out: int, n_hidden: int, dropout: float):
    """The projection: linear (``n_hidden=0``) or one GELU hidden layer, dropout on the inputs of every layer."""
    from torch import nn

    if n_hidden == 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, n_out))
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(n_in, n_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(n_hidden, n_out)
    )


def median_bandwidth(x, max_rows: int = 512):
    """Median heuristic: the median pairwise Euclidean distance between (at most ``max_rows`` first) rows.

    Works on numpy arrays and torch tensors (the tensor result is detached: the bandwidth is not trained).
    """
    import torch

    t = torch.as_tensor(x[:max_rows]).detach().to(torch.float64)
    if t.ndim == 1:
        t = t[:, None]
    d = torch.cdist(t, t)
    iu = torch.triu_indices(len(t), len(t), offset=1)
    med = d[iu[0], iu[1]].median() if len(t) > 1 else torch.tensor(1.0, dtype=torch.float64)
    return float(med) if float(med) > 0 else 1.0


def random_fourier_features(x, bandwidth, freqs, phase):
    """``sqrt(2/D) cos(x freqs / bandwidth + phase)``: random Fourier features of the RBF kernel.

    Their inner products approximate ``exp(-|x - y|² / (2 bandwidth²))`` (Rahimi & Recht 2007); ``freqs`` ``(d, D)`` standard normal, ``phase``
    ``(D,)`` uniform on ``[0, 2π)``. ``x`` ``(..., d)``; ``bandwidth`` broadcasts against ``x @ freqs``.
    """
    import torch

    return np.sqrt(2.0 / freqs.shape[1]) * torch.cos(x @ freqs / bandwidth + phase)


def rbf_hsic_penalty(z, w, w_bandwidth, freqs, phase):
    """Normalised RBF-kernel HSIC of each column of ``z`` ``(b, k)`` with each of ``w`` ``(b, e)``, summed over ``w``.

    Per pair, ``HSIC(z_j, w_e) / sqrt(HSIC(z_j, z_j) HSIC(w_e, w_e))`` (the biased estimator ``tr(K H L H) / b²``
    with random Fourier features; Gretton et al. 2005): in [0, 1], and (for the characteristic RBF kernel, as ``D``
    grows) 0 only when ``z_j`` and ``w_e`` are independent. Bandwidths: the median heuristic, on the batch for ``z``
    (each column standardised), ``w_bandwidth`` ``(e,)`` for ``w``. ``freqs`` ``(1, D)`` standard normal, ``phase``
    ``(D,)`` uniform on ``[0, 2π)``. With ``w`` whitened the sum is the kernel analogue of each column's R² on
    ``w``. Returns a tensor ``(k,)``.
    """
    import torch

    zs = (z - z.mean(0, keepdim=True)) / (z.std(0, keepdim=True) + 1e-6)
    bw = torch.tensor([median_bandwidth(zs[:, j]) for j in range(zs.shape[1])], dtype=z.dtype, device=z.device)
    phi_z = random_fourier_features(zs.T[:, :, None], bw[:, None, None], freqs, phase)  # (k, b, D)
    phi_w = random_fourier_features(w.T[:, :, None], w_bandwidth[:, None, None], freqs, phase)  # (e, b, D)
    phi_z = phi_z - phi_z.mean(1, keepdim=True)
    phi_w = phi_w - phi_w.mean(1, keepdim=True)
    cross = torch.einsum("kbd,ebf->kedf", phi_z, phi_w).square().sum((2, 3))
    self_z = torch.einsum("kbd,kbf->kdf", phi_z, phi_z).square().sum((1, 2))
    self_w = torch.einsum("ebd,ebf->edf", phi_w, phi_w).square().sum((1, 2))
    return (cross / (torch.sqrt(self_z[:, None] * self_w[None, :]) + 1e-12)).sum(1)


def _shared_penalty(z, w, w_bandwidth, freqs, phase):
    """The training penalty: the mean over columns of :func:`rbf_hsic_penalty`."""
    return rbf_hsic_penalty(z, w, w_bandwidth, freqs, phase).mean()


def _anticollapse(z):
    """Variance hinge on the mean column variance (>= 1) plus the mean squared off-diagonal covariance.

    Unlike VICReg's hinge per column, only the total is held up, so the relevance term decides how the variance is
    spread over the columns (a per-column hinge made the columns that carry nothing but noise as large as the
    informative ones, which hurt clustering after fusion on ``morphology_domains``).
    """
    zc = z - z.mean(0, keepdim=True)
    var = (1.0 - (zc.square().mean() + 1e-4).sqrt()).clamp(min=0)
    cov = zc.T @ zc / max(len(z) - 1, 1)
    off = cov - cov.diag().diag()
    d = z.shape[1]
    dec = off.square().sum() / max(d * (d - 1), 1)
    return VARIANCE_WEIGHT * var + DECORRELATION_WEIGHT * dec


def _info_nce(za, zp):
    """InfoNCE of anchors ``za`` with their positives ``zp`` (row i), other rows of the batch as negatives."""
    import torch
    import torch.nn.functional as F

    a = F.normalize(za, dim=1)
    p = F.normalize(zp, dim=1)
    logits = a @ p.T / TEMPERATURE
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
