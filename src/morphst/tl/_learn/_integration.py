"""The integration objective: morphology features that stay relevant but share little with expression.

Box 1 of Chelebian, Avenel & Wählby (Nat. Commun. 2025), eq. 13–14: for integration, train the morphology encoder so
that it keeps task-relevant information while its information shared with expression is small, so that fusion adds
what expression lacks.

- ``"hsic"``: a projection (linear by default, :data:`N_HIDDEN`) of the morphology features, standardised on the
  training rows, trained with AdamW on mini-batches of the training rows to minimise
  ``relevance + variance/decorrelation + penalty_weight × shared``. Relevance: with labels, the cross-entropy of a
  linear classifier on the projection (labels -1 ignored); without, a spatial InfoNCE (Oord et al. 2018): each row's
  positive is one of its spatial neighbours (``edges``, drawn anew each epoch), the other rows of the batch are the
  negatives (cosine similarity / :data:`TEMPERATURE`). Variance/decorrelation (after VICReg, Bardes et al. 2022)
  keeps the projection from collapsing. Shared: the normalised cross-covariance of the projection with the
  expression representation whitened on the training rows, i.e. the linear-kernel HSIC (Gretton et al. 2005) of
  column-standardised variables, the batch estimate of each column's R² on expression, averaged over columns.
  Early stopping on the validation loss of the rows that :func:`~morphst.tl._learn._torch.inner_validation_split`
  holds out (a whole section when there are several); the best epoch's weights are kept; the fitted result is plain
  arrays and ``z`` is computed in numpy. Training runs on one CPU thread (tiny model) and is repeatable per seed.
- ``"residual"``: the baseline. Features standardised on the training rows minus their ridge prediction from the
  expression representation (:class:`sklearn.linear_model.RidgeCV`, one penalty per fold chosen by leave-one-out),
  cross-fitted: each row's prediction comes from a ridge fit on the training rows of the other folds (sections when
  the training rows span two or more, else :data:`N_RESIDUAL_FOLDS` seeded random folds), so it never sees the row
  itself.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from ._torch import TrainOptions


def fit_integration(
    x: np.ndarray,
    expr: np.ndarray,
    *,
    train: np.ndarray,
    labels: np.ndarray | None,
    edges: tuple[np.ndarray, np.ndarray] | None,
    groups: np.ndarray | None,
    method: Literal["hsic", "residual"],
    n_components: int,
    penalty_weight: float,
    options: TrainOptions,
    random_state: int,
    device,
) -> tuple[np.ndarray, dict]:
    """Learn integration features; returns ``(z, record)``.

    Parameters
    ----------
    x
        Morphology features, ``(n_obs, n_features)`` float32 (not standardised).
    expr
        Expression representation, ``(n_obs, n_expr)`` float32 (e.g. ``obsm['X_pca']``).
    train
        Boolean ``(n_obs,)``: rows the model is fit on (every row is transformed).
    labels
        Integer codes ``(n_obs,)`` of the annotation (-1: missing), or ``None`` for the self-supervised spatial
        objective.
    edges
        ``(rows, cols)`` int64 arrays of spatial k-nearest-neighbour edges within sections (both directions), for
        the self-supervised objective; ``None`` when ``labels`` is given.
    groups
        Section of each row ``(n_obs,)`` or ``None`` (early-stopping split by section).
    method
        ``"hsic"`` (penalise the HSIC / cross-covariance between the features and ``expr``) or ``"residual"``
        (cross-fitted residual of the features after ridge regression on ``expr``; no training).
    n_components
        Width of the learned representation.
    penalty_weight
        Weight of the shared-information penalty.
    options
        Optimiser and stopping rule.
    random_state
        Seed.
    device
        torch device.

    Returns
    -------
    ``z`` : ndarray ``(n_obs, n_components)`` float32 (``(n_obs, n_features)`` for ``"residual"``), and ``record``,
    a dict with ``curve`` (DataFrame with one row per epoch), ``chosen_epoch``, ``description``.
    """
    x = np.asarray(x, dtype=np.float64)
    expr = np.asarray(expr, dtype=np.float64)
    train = np.asarray(train)
    _check_inputs(x, expr, train, labels, edges, groups, method, n_components, penalty_weight)
    if method == "residual":
        return _residual(x, expr, train, groups, random_state)
    opts = options.check()
    return _hsic(x, expr, train, labels, edges, groups, n_components, penalty_weight, opts, random_state, device)


# ----------------------------------------------------------------------------------------------------- checks

#: Hidden width of the projection (0: linear); see :func:`_network`. Linear: on ``morphology_domains`` (seed 0,
#: handcrafted features, 8 components, weight 5) stitched ARI 0.985 linear vs 0.967 with 64 GELU units.
N_HIDDEN = 0
#: Temperature of the spatial InfoNCE (cosine similarities divided by it).
TEMPERATURE = 0.1
#: Weights of the variance (hinge on the per-column std) and decorrelation (off-diagonal covariance) terms.
VARIANCE_WEIGHT = 1.0
DECORRELATION_WEIGHT = 1.0
#: Ridge penalties searched (leave-one-out, :class:`sklearn.linear_model.RidgeCV`) by the residual baseline.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))
#: Folds of the residual baseline when the rows come from one section.
N_RESIDUAL_FOLDS = 5


def _check_inputs(x, expr, train, labels, edges, groups, method, n_components, penalty_weight) -> None:
    """Raise ``ValueError`` naming the first invalid argument (before anything is trained)."""
    if method not in ("hsic", "residual"):
        msg = f"`method` must be 'hsic' or 'residual', got {method!r}."
        raise ValueError(msg)
    if x.ndim != 2 or x.shape[0] < 4 or x.shape[1] < 1:
        msg = f"`x` must be (n_obs >= 4, n_features >= 1) morphology features, got shape {x.shape}."
        raise ValueError(msg)
    n = x.shape[0]
    if expr.ndim != 2 or expr.shape[0] != n or expr.shape[1] < 1:
        msg = f"`expr` must be (n_obs={n}, n_expr >= 1), got shape {expr.shape}."
        raise ValueError(msg)
    for name, a in (("x", x), ("expr", expr)):
        if not np.isfinite(a).all():
            msg = f"`{name}` has {int((~np.isfinite(a)).sum())} non-finite values; impute or drop those rows first."
            raise ValueError(msg)
    if train.shape != (n,) or train.dtype != bool:
        msg = f"`train` must be a boolean mask of shape ({n},), got dtype {train.dtype} and shape {train.shape}."
        raise ValueError(msg)
    if train.sum() < 4:
        msg = f"`train` selects {int(train.sum())} rows; at least 4 are needed."
        raise ValueError(msg)
    if groups is not None and np.asarray(groups).shape != (n,):
        msg = f"`groups` must have shape ({n},), got {np.asarray(groups).shape}."
        raise ValueError(msg)
    if method == "residual":
        return
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer) or n_components < 1:
        msg = f"`n_components` must be a positive integer, got {n_components!r}."
        raise ValueError(msg)
    if not (np.isfinite(penalty_weight) and penalty_weight >= 0):
        msg = f"`penalty_weight` must be a non-negative number, got {penalty_weight!r}."
        raise ValueError(msg)
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
            msg = f"`labels` must be integer codes of shape ({n},) (-1: missing), got {lab.dtype} {lab.shape}."
            raise ValueError(msg)
        known = np.unique(lab[train & (lab >= 0)])
        if len(known) < 2:
            msg = f"`labels` has {len(known)} class(es) among the training rows; at least 2 are needed."
            raise ValueError(msg)
    else:
        if edges is None:
            msg = "Without `labels`, pass spatial `edges` (rows, cols) for the self-supervised objective."
            raise ValueError(msg)
        rows, cols = (np.asarray(e) for e in edges)
        if rows.shape != cols.shape or rows.ndim != 1 or len(rows) == 0:
            msg = f"`edges` must be two 1-D arrays of equal, positive length, got {rows.shape} and {cols.shape}."
            raise ValueError(msg)
        if rows.min() < 0 or cols.min() < 0 or rows.max() >= n or cols.max() >= n:
            msg = f"`edges` index rows outside [0, {n})."
            raise ValueError(msg)


def _standardise_on(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Column z-scores with the mean and std of ``rows`` (constant columns: scale 1)."""
    mu = x[rows].mean(axis=0)
    sd = x[rows].std(axis=0)
    sd[~(sd > 1e-12)] = 1.0
    return (x - mu) / sd


def _whiten_on(e: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``e`` centred and whitened (PCA whitening, directions of near-zero variance dropped) on ``rows``."""
    ec = e - e[rows].mean(axis=0)
    _, s, vt = np.linalg.svd(ec[rows], full_matrices=False)
    keep = s > 1e-8 * max(s.max(), 1e-300)
    return ec @ vt[keep].T / (s[keep] / np.sqrt(len(rows)))


# ----------------------------------------------------------------------------------------------------- residual


def _residual(x, expr, train, groups, random_state) -> tuple[np.ndarray, dict]:
    """Cross-fitted ridge residual of the standardised features on ``expr`` (see :func:`fit_integration`)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold

    train_rows = np.flatnonzero(train)
    xs = _standardise_on(x, train_rows)
    n = len(x)
    sections = None if groups is None else np.asarray(groups).astype(str)
    if sections is not None and len(np.unique(sections[train_rows])) >= 2:
        names = np.unique(sections)
        fold = np.searchsorted(names, sections)
        how = f"cross-fitted over {len(names)} sections (each section's rows predicted by a ridge fit on the others)"
    else:
        k = min(N_RESIDUAL_FOLDS, len(train_rows))
        fold = np.empty(n, dtype=np.int64)
        kf = KFold(n_splits=k, shuffle=True, random_state=random_state)
        for f, (_, te) in enumerate(kf.split(np.arange(n))):
            fold[te] = f
        how = f"cross-fitted over {k} random folds (seeded; each fold's rows predicted by a ridge fit on the others)"
    z = np.empty_like(xs)
    rows_rec = []
    for f in np.unique(fold):
        fit = train & (fold != f)
        if fit.sum() < 2:  # a fold holding (almost) every training row: fall back to all training rows
            fit = train.copy()
        model = RidgeCV(alphas=RIDGE_ALPHAS, fit_intercept=True).fit(expr[fit], xs[fit])
        here = fold == f
        z[here] = xs[here] - model.predict(expr[here])
        rows_rec.append({"fold": int(f), "n_rows": int(here.sum()), "n_fit": int(fit.sum()), "alpha": model.alpha_})
    record = {
        "curve": pd.DataFrame(rows_rec).set_index("fold"),
        "chosen_epoch": 0,
        "description": (
            "residual: morphology features standardised on the training rows minus their ridge prediction from "
            f"the expression representation (alpha by leave-one-out over {RIDGE_ALPHAS[0]:g}..{RIDGE_ALPHAS[-1]:g}), "
            + how
        ),
        "fold": fold,
    }
    return z.astype(np.float32), record


# ----------------------------------------------------------------------------------------------------- hsic


def _network(n_in: int, n_out: int, n_hidden: int, dropout: float):
    """The projection: linear (``n_hidden=0``) or one GELU hidden layer, dropout on the inputs of every layer."""
    from torch import nn

    if n_hidden == 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, n_out))
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(n_in, n_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(n_hidden, n_out)
    )


def _shared_penalty(z, w):
    """Mean over the columns of ``z`` of the sum of squared Pearson r with the whitened ``w`` (within the batch).

    With ``w`` whitened this is the batch estimate of each column's R² on the expression representation; it is the
    linear-kernel HSIC of the column-standardised ``z`` and ``w`` (normalised cross-covariance), scale-free so that
    shrinking ``z`` cannot lower it.
    """
    zc = z - z.mean(0, keepdim=True)
    zc = zc / (zc.square().mean(0, keepdim=True).sqrt() + 1e-6)
    wc = w - w.mean(0, keepdim=True)
    wc = wc / (wc.square().mean(0, keepdim=True).sqrt() + 1e-6)
    r = zc.T @ wc / len(z)
    return r.square().sum(1).mean()


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


def _neighbour_lists(edges, keep: np.ndarray, n: int):
    """CSR-like neighbour lists restricted to edges with both ends in ``keep`` (boolean ``(n,)``)."""
    rows, cols = (np.asarray(e, dtype=np.int64) for e in edges)
    ok = keep[rows] & keep[cols] & (rows != cols)
    rows, cols = rows[ok], cols[ok]
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols


def _draw_positives(anchors: np.ndarray, indptr: np.ndarray, nbrs: np.ndarray, rng: np.random.Generator):
    """One neighbour per anchor, drawn uniformly (anchors must have at least one)."""
    deg = indptr[anchors + 1] - indptr[anchors]
    pick = (rng.random(len(anchors)) * deg).astype(np.int64)
    return nbrs[indptr[anchors] + pick]


def _hsic(x, expr, train, labels, edges, groups, n_components, penalty_weight, opts, random_state, device):
    """Train the projection (see :func:`fit_integration`); returns ``(z, record)``."""
    import torch
    import torch.nn.functional as F

    from ._torch import inner_validation_split, seeded_generator

    n = len(x)
    train_rows = np.flatnonzero(train)
    fit_rows, val_rows, how = inner_validation_split(train_rows, groups, random_state)
    xs = _standardise_on(x, train_rows).astype(np.float32)
    w = _whiten_on(expr, train_rows).astype(np.float32)
    supervised = labels is not None
    val_all = val_rows.copy()  # the penalty is checked on every held-out row, labelled or not
    if supervised:
        lab = np.asarray(labels, dtype=np.int64)
        n_classes = int(lab.max()) + 1
        fit_rows = fit_rows[lab[fit_rows] >= 0]
        val_rows = val_rows[lab[val_rows] >= 0]
    else:
        fit_mask = np.zeros(n, dtype=bool)
        fit_mask[fit_rows] = True
        val_mask = np.zeros(n, dtype=bool)
        val_mask[val_rows] = True
        f_ptr, f_nbr = _neighbour_lists(edges, fit_mask, n)
        v_ptr, v_nbr = _neighbour_lists(edges, val_mask, n)
        fit_rows = fit_rows[np.diff(f_ptr)[fit_rows] > 0]
        val_rows = val_rows[np.diff(v_ptr)[val_rows] > 0]
        # fixed positives for the validation loss, so that it changes only with the weights
        val_pos = _draw_positives(val_rows, v_ptr, v_nbr, np.random.default_rng(random_state + 1))
    if len(fit_rows) < 4:
        msg = (
            f"Only {len(fit_rows)} training rows have "
            + ("a label" if supervised else "a spatial neighbour among the training rows")
            + "; at least 4 are needed."
        )
        raise ValueError(msg)
    if len(val_rows) < 2:  # nothing to stop on: validate on the fitting rows themselves
        val_rows = fit_rows
        how += "; too few validation rows usable, stopping on the fitting rows"
        if not supervised:
            val_pos = _draw_positives(val_rows, f_ptr, f_nbr, np.random.default_rng(random_state + 1))

    threads = torch.get_num_threads()
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu:
        torch.set_num_threads(1)
    try:
        gen = seeded_generator(random_state)
        rng = np.random.default_rng(random_state)
        net = _network(x.shape[1], int(n_components), N_HIDDEN, opts.dropout).to(device)
        clf = torch.nn.Linear(int(n_components), n_classes).to(device) if supervised else None
        params = list(net.parameters()) + (list(clf.parameters()) if clf is not None else [])
        opt = torch.optim.AdamW(params, lr=opts.learning_rate, weight_decay=opts.weight_decay)
        xt = torch.from_numpy(xs).to(device)
        wt = torch.from_numpy(w).to(device)
        lt = torch.from_numpy(lab).to(device) if supervised else None
        val_all_t = torch.from_numpy(val_all if len(val_all) >= 2 else val_rows)

        def losses(b, pos=None):
            z = net(xt[b])
            if supervised:
                rel = F.cross_entropy(clf(z), lt[b])
            else:
                rel = _info_nce(z, net(xt[pos]))
            return rel, _anticollapse(z), _shared_penalty(z, wt[b])

        def evaluate(rows, pos):
            """Validation losses: relevance over batches of ``rows``, the other terms on every held-out row at once.

            A batch-sized estimate of the penalty on a small held-out set was too noisy to stop on.
            """
            net.eval()
            if clf is not None:
                clf.eval()
            rel, n_rel = 0.0, 0
            with torch.no_grad():
                for s in range(0, len(rows), opts.batch_size):
                    b = torch.from_numpy(rows[s : s + opts.batch_size])
                    if len(b) < 2:
                        continue
                    pb = None if pos is None else torch.from_numpy(pos[s : s + opts.batch_size])
                    rel += losses(b, pb)[0].item() * len(b)
                    n_rel += len(b)
                z_all = net(xt[val_all_t])
                anti = _anticollapse(z_all).item()
                pen = _shared_penalty(z_all, wt[val_all_t]).item()
            return np.array([rel / max(n_rel, 1), anti, pen])

        curve, best, best_state, since = [], np.inf, None, 0
        for epoch in range(1, opts.max_epochs + 1):
            net.train()
            if clf is not None:
                clf.train()
            perm = fit_rows[torch.randperm(len(fit_rows), generator=gen).numpy()]
            pos_all = None if supervised else _draw_positives(perm, f_ptr, f_nbr, rng)
            tot, n_b = np.zeros(3), 0
            for s in range(0, len(perm), opts.batch_size):
                b = perm[s : s + opts.batch_size]
                if len(b) < 2:
                    continue
                pb = None if supervised else torch.from_numpy(pos_all[s : s + opts.batch_size])
                rel, anti, pen = losses(torch.from_numpy(b), pb)
                loss = rel + anti + penalty_weight * pen
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += np.array([rel.item(), anti.item(), pen.item()])
                n_b += 1
            tot /= max(n_b, 1)
            v = evaluate(val_rows, None if supervised else val_pos)
            val_loss = float(v[0] + v[1] + penalty_weight * v[2])
            curve.append(
                {
                    "epoch": epoch,
                    "train_loss": float(tot[0] + tot[1] + penalty_weight * tot[2]),
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
                best_state = (epoch, {k: t.detach().clone() for k, t in net.state_dict().items()})
            else:
                since += 1
                if since >= opts.patience:
                    break
        if best_state is None:  # the validation loss was never finite: nothing to keep
            msg = (
                "The integration objective's validation loss was not finite in any epoch (too few held-out spots "
                "with spatial neighbours among them?); use more spots, pass `annotation_key=`, or method='residual'."
            )
            raise ValueError(msg)
        net.load_state_dict(best_state[1])
        weights = {k: t.detach().cpu().numpy().astype(np.float64) for k, t in net.state_dict().items()}
    finally:
        if on_cpu:
            torch.set_num_threads(threads)
    z = _project(xs.astype(np.float64), weights)
    rel = (
        "cross-entropy of a linear classifier on the labels"
        if supervised
        else (
            f"spatial InfoNCE (a random spatial neighbour as the positive, the batch as negatives, temperature "
            f"{TEMPERATURE:g})"
        )
    )
    arch = "linear" if N_HIDDEN == 0 else f"MLP ({N_HIDDEN} GELU hidden units)"
    record = {
        "curve": pd.DataFrame(curve).set_index("epoch"),
        "chosen_epoch": int(best_state[0]),
        "description": (
            f"hsic: {arch} projection of the standardised features to {int(n_components)} components; loss = "
            f"{rel} + variance/decorrelation + {penalty_weight:g} x normalised cross-covariance with the whitened "
            f"expression (linear-kernel HSIC of standardised columns); AdamW lr {opts.learning_rate:g}, weight decay "
            f"{opts.weight_decay:g}, dropout {opts.dropout:g}, batch {opts.batch_size}; early stopping on the "
            f"validation loss ({how}), weights of the best epoch kept"
        ),
        "weights": weights,
    }
    return z.astype(np.float32), record


def _project(xs: np.ndarray, weights: dict) -> np.ndarray:
    """The projection in numpy from the fitted arrays (dropout off)."""
    from scipy.special import erf

    linears = sorted({k.split(".")[0] for k in weights}, key=int)
    h = xs
    for i, k in enumerate(linears):
        h = h @ weights[f"{k}.weight"].T + weights[f"{k}.bias"]
        if i < len(linears) - 1:
            h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
    return h
