"""The translation model: standardise -> PCA -> ridge (HEST-Benchmark linear probe) or MLP, inner CV."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Ridge penalties searched by the inner cross-validation of the default model.
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-1, 6, 15))
#: Largest number of principal components of the default model (HEST-Benchmark).
MAX_PCA = 256
#: Training folds with more rows choose the ridge penalty on a seeded subsample of this many rows, then fit on all
#: rows: scikit-learn's efficient leave-one-out keeps several float64 ``n_train × n_genes`` temporaries per penalty
#: (3.1 GB at 667,000 cells × 100 genes). Smaller folds (every HER2ST/DLPFC/Visium section) are not affected.
MAX_ALPHA_ROWS = 50_000


def _inner_cv(groups: np.ndarray | None, n_splits: int = 5):
    """Inner splits for the ridge penalty: grouped by section when the training fold holds 2+ sections."""
    if groups is None:
        return None, "efficient leave-one-out (GCV)"
    _, sizes = np.unique(np.asarray(groups).astype(str), return_counts=True)
    # groups of one spot cannot be scored (R² needs 2 spots) alone: fewer folds than groups puts them with others
    k = min(n_splits, len(sizes) - int((sizes < 2).sum()))
    if k < 2:
        return None, "efficient leave-one-out (GCV)"
    from sklearn.model_selection import GroupKFold

    splits = list(GroupKFold(n_splits=k).split(np.zeros(len(groups)), groups=groups))
    return splits, f"GroupKFold({k}) by group"


def make_model(
    model: str | Any,
    *,
    n_train: int,
    n_features: int,
    inner_groups: np.ndarray | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    random_state: int = 0,
    blocks: Sequence[tuple[str, int]] | None = None,
):
    """Build an unfitted estimator for one training fold; returns ``(estimator, description)``.

    ``"ridge"``: ``StandardScaler -> PCA(min(256, n_train - 1, n_features)) -> RidgeCV(alphas)`` with the penalty
    chosen by inner cross-validation on the training fold only, grouped by section when the training fold has at
    least two (``GroupKFold``, R² averaged over genes), else efficient leave-one-out. ``"mlp"``: the same scaler and
    PCA, then a one-hidden-layer :class:`~sklearn.neural_network.MLPRegressor` (256 units, early stopping) on
    standardised targets. Any scikit-learn regressor: cloned and used as given (wrapped in
    :class:`~sklearn.multioutput.MultiOutputRegressor` if it takes one target only). ``"head"`` or a
    :class:`~morphst.tl.FeatureHead`: a head (cloned, its ``blocks`` set to ``blocks`` and, for ``"head"``, its
    seed to ``random_state``). ``"finetune"`` or a :class:`~morphst.tl.LastBlockFinetune`: the same, with the
    encoder's last block trained on cached activations.
    """
    from sklearn.base import clone, is_regressor
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    n_pc = max(1, min(MAX_PCA, n_train - 1, n_features))
    if isinstance(model, str):
        if model == "ridge":
            from sklearn.linear_model import RidgeCV

            cv, how = _inner_cv(inner_groups)
            est = Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("pca", PCA(n_components=n_pc, random_state=random_state)),
                    ("ridge", RidgeCV(alphas=list(alphas), cv=cv)),
                ]
            )
            return est, f"StandardScaler -> PCA({n_pc}) -> RidgeCV(alpha by {how})"
        if model == "mlp":
            from sklearn.compose import TransformedTargetRegressor
            from sklearn.neural_network import MLPRegressor

            mlp = MLPRegressor(
                hidden_layer_sizes=(256,),
                alpha=1e-2,
                early_stopping=True,
                max_iter=500,
                random_state=random_state,
            )
            est = Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("pca", PCA(n_components=n_pc, random_state=random_state)),
                    ("mlp", TransformedTargetRegressor(regressor=mlp, transformer=StandardScaler())),
                ]
            )
            return est, f"StandardScaler -> PCA({n_pc}) -> MLPRegressor(256, early stopping)"
        if model in ("head", "finetune"):
            from .._nn import FeatureHead, LastBlockFinetune

            cls = FeatureHead if model == "head" else LastBlockFinetune
            est = cls(blocks=_blocks(blocks, n_features), random_state=random_state)
            return est, est.describe()
        msg = f"Unknown `regressor` {model!r}; use 'ridge', 'mlp', 'head', 'finetune' or a scikit-learn regressor."
        raise ValueError(msg)
    from .._nn import FeatureHead, LastBlockFinetune

    if isinstance(model, FeatureHead | LastBlockFinetune):
        est = clone(model).set_params(blocks=_blocks(blocks, n_features))
        return est, est.describe()
    if not (hasattr(model, "fit") and hasattr(model, "predict")) or not is_regressor(model):
        msg = (
            f"`regressor` must be 'ridge', 'mlp', 'head', 'finetune' or a scikit-learn regressor, got "
            f"{type(model).__name__}."
        )
        raise ValueError(msg)
    est = clone(model)
    try:
        from sklearn.utils import get_tags

        multi = get_tags(est).target_tags.multi_output
    except Exception:  # older scikit-learn or a third-party estimator without tags
        multi = True
    if not multi:
        from sklearn.multioutput import MultiOutputRegressor

        est = MultiOutputRegressor(est)
    return est, repr(model)


def fit_model(est, x, y, *, inner_groups=None, alphas=DEFAULT_ALPHAS, random_state: int | None = 0):
    """Fit ``est`` from :func:`make_model` on ``x`` ``(n, n_features)``, ``y`` ``(n, n_genes)``.

    Returns ``(est, note)``. For the default ridge with more than :data:`MAX_ALPHA_ROWS` training rows, the penalty
    is chosen by the same inner cross-validation on a seeded subsample of that many rows (``random_state``), then
    the pipeline is refit on every row with that penalty (:class:`~sklearn.linear_model.Ridge`); ``note`` says so.
    Otherwise ``est.fit(x, y)`` and ``note == ""`` (results exactly as before).
    """
    from sklearn.linear_model import Ridge, RidgeCV

    from .._nn import FeatureHead, LastBlockFinetune

    if isinstance(est, FeatureHead | LastBlockFinetune):  # early stopping on a held-out section of the training rows
        est.fit(x, y, groups=inner_groups)
        return est, est.fit_note()
    steps = getattr(est, "named_steps", {})
    if not isinstance(steps.get("ridge"), RidgeCV) or len(x) <= MAX_ALPHA_ROWS:
        est.fit(x, y)
        return est, ""
    rows = np.sort(np.random.default_rng(random_state).choice(len(x), MAX_ALPHA_ROWS, replace=False))
    sub, _ = make_model(
        "ridge",
        n_train=MAX_ALPHA_ROWS,
        n_features=x.shape[1],
        inner_groups=None if inner_groups is None else np.asarray(inner_groups)[rows],
        alphas=alphas,
        random_state=random_state,
    )
    sub.fit(x[rows], y[rows])
    alpha = float(sub.named_steps["ridge"].alpha_)
    est.set_params(ridge=Ridge(alpha=alpha))
    est.fit(x, y)
    return est, f"; penalty chosen on a seeded subsample of {MAX_ALPHA_ROWS:,} of {len(x):,} training rows"


def _blocks(blocks, n_features: int) -> tuple[tuple[str, int], ...]:
    return tuple((str(n), int(w)) for n, w in blocks) if blocks else (("features", int(n_features)),)


def check_model(model) -> None:
    """Raise ``ValueError`` for an unknown model name or an object that is not a regressor (before any fitting)."""
    make_model(model, n_train=2, n_features=1)


def chosen_alpha(est) -> float:
    """The ridge penalty of ``est`` (chosen by its inner cross-validation); NaN for a model without a ridge step."""
    try:
        ridge = est.named_steps["ridge"]
    except (AttributeError, KeyError):
        return float("nan")
    return float(getattr(ridge, "alpha_", getattr(ridge, "alpha", float("nan"))))


def validate_random_state(random_state) -> None:
    """Raise a ValueError unless ``random_state`` is an int or ``None``."""
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, int | np.integer)):
        msg = f"`random_state` must be an integer seed (or None), got {random_state!r}."
        raise ValueError(msg)


def check_alphas(alphas) -> list[float]:
    """Ridge penalties: a non-empty sequence of finite positive numbers."""
    try:
        a = np.asarray(list(alphas), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        msg = f"`alphas` must be a non-empty sequence of positive numbers (ridge penalties), got {alphas!r}."
        raise ValueError(msg) from None
    if a.size == 0 or not np.all(np.isfinite(a)) or (a <= 0).any():
        msg = (
            f"`alphas` must be a non-empty sequence of finite positive numbers (ridge penalties), got {list(a)}; "
            "e.g. `np.logspace(-1, 6, 15)` (the default)."
        )
        raise ValueError(msg)
    return [float(v) for v in a]


def blas_limits(feats: np.ndarray):
    """Single-threaded BLAS for small problems, default threading for large ones.

    The many small ridge fits of the inner cross-validation are dominated by thread start-up and, on a shared
    machine, by oversubscription (measured 20x slower on 2 busy cores).
    """
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas") if feats.size < 20_000_000 else nullcontext()
