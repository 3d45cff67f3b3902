"""Cross-validation folds: leave one section out, k-fold, spatial blocks, train/test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._utils import bool_column, list_keys, obs_noun
from ..._utils._sections import section_groups

if TYPE_CHECKING:
    from anndata import AnnData


CV = Literal["auto", "leave_one_group_out", "kfold", "spatial_block", "train_test"]


def resolve_cv(adata: AnnData, cv, *, library_key: str | None, patient_key: str | None = None, n_splits: int = 5):
    """The fold scheme to run: ``"auto"`` is leave-one-section-out with 2+ sections, spatial blocks with one.

    One section (``library_key`` not an obs column, or a single value in it) cannot be left out; spots of one
    section are spatially autocorrelated, so shuffled k-fold would be optimistic, and contiguous spatial blocks
    are the honest choice (Roberts et al., Ecography 2017). The choice is logged; the caller records it.
    Any other ``cv`` is returned unchanged.
    """
    if not (isinstance(cv, str) and cv == "auto"):
        return cv
    groups = section_groups(adata, library_key)
    n_groups = 0 if groups is None else len(pd.unique(groups))
    if n_groups >= 2 or patient_key is not None:
        logg.debug(f"cv='auto': {n_groups} sections in `obs[{library_key!r}]`, leaving one section out per fold")
        return "leave_one_group_out"
    why = (
        f"`library_key`={library_key!r} is not an obs column"
        if groups is None
        else f"`obs[{library_key!r}]` holds one section"
    )
    if Key.SPATIAL not in adata.obsm:
        noun = obs_noun(adata)
        add = (
            f" (after `mst.pp.extract_patches`, the patch centres in image pixels: `adata.obsm['spatial'] = "
            f"adata.obs[['{Key.PATCH_X}', '{Key.PATCH_Y}']].to_numpy()`)"
            if Key.PATCH_X in adata.obs and Key.PATCH_Y in adata.obs
            else ""
        )
        msg = (
            f"cv='auto' found one section ({why}) and no {obs_noun(adata, 1)} coordinates in `obsm['spatial']` for "
            f"spatial-block folds. Add the coordinates{add}, pass `library_key` naming the sections, or pass "
            f"cv='kfold' (optimistic: neighbouring {noun} fall in both training and test sets)."
        )
        raise KeyError(msg)
    logg.info(
        f"cv='auto': one section ({why}), so {n_splits} spatial-block folds (contiguous strips of "
        "`obsm['spatial']`) instead of leave-one-section-out; pass `cv=` to choose another scheme"
    )
    return "spatial_block"


def _spatial_blocks(coords: np.ndarray, groups: np.ndarray | None, n_splits: int) -> np.ndarray:
    """Block id per spot: per group, ``n_splits`` contiguous strips along the longer axis (equal spot counts)."""
    n = len(coords)
    if groups is None:
        groups = np.zeros(n, dtype=np.int64)
    block = np.zeros(n, dtype=np.int64)
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g)
        c = coords[idx]
        axis = int(np.argmax(np.ptp(c, axis=0))) if len(idx) else 0
        order = np.argsort(c[:, axis], kind="stable")
        ranks = np.empty(len(idx), dtype=np.int64)
        ranks[order] = np.arange(len(idx))
        block[idx] = np.minimum(ranks * n_splits // max(len(idx), 1), n_splits - 1)
    return block


def make_folds(
    adata: AnnData,
    cv,
    *,
    library_key: str | None,
    n_splits: int,
    train_key: str,
    random_state: int,
    n_features: int,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(fold_name, train_positions, test_positions), ...]`` with disjoint test sets."""
    n = adata.n_obs
    groups = section_groups(adata, library_key)
    dummy = np.zeros((n, 1))
    if isinstance(cv, str):
        if cv == "leave_one_group_out":
            return _group_folds(adata, groups, library_key)
        if cv == "kfold":
            from sklearn.model_selection import KFold

            _check_n_splits(n_splits, n)
            kf = KFold(n_splits=n_splits, shuffle=True, random_state=random_state)
            return [(f"fold{i}", tr, te) for i, (tr, te) in enumerate(kf.split(dummy))]
        if cv == "spatial_block":
            if Key.SPATIAL not in adata.obsm:
                msg = "cv='spatial_block' needs spot coordinates in `adata.obsm['spatial']`."
                raise KeyError(msg)
            _check_n_splits(n_splits, n)
            block = _spatial_blocks(np.asarray(adata.obsm[Key.SPATIAL], float)[:, :2], groups, n_splits)
            return [(f"block{b}", np.flatnonzero(block != b), np.flatnonzero(block == b)) for b in range(n_splits)]
        if cv == "train_test":
            m = bool_column(
                adata,
                "obs",
                train_key,
                meaning="training spot",
                missing=f"cv='train_test' needs a boolean obs column `train_key` (True = training spot); "
                f"{train_key!r} not found. Available columns: {list_keys(adata.obs.columns)}.",
            )
            if m.all() or not m.any():
                msg = f"`adata.obs[{train_key!r}]` must mark some spots True (train) and some False (test)."
                raise ValueError(msg)
            return [("test", np.flatnonzero(m), np.flatnonzero(~m))]
        msg = (
            f"Unknown `cv` {cv!r}; use 'auto', 'leave_one_group_out', 'kfold', 'spatial_block', 'train_test' or a "
            "scikit-learn splitter."
        )
        raise ValueError(msg)
    return _splitter_folds(cv, groups, n, n_features)


def _group_folds(adata: AnnData, groups: np.ndarray | None, library_key: str | None) -> list:
    """Leave one group (section) out: one fold per value of ``obs[library_key]``, in category order."""
    if groups is None:
        msg = (
            f"cv='leave_one_group_out' needs `library_key` naming an obs column of groups (sections); "
            f"{library_key!r} is not in `adata.obs`. Available columns: {list_keys(adata.obs.columns)}."
        )
        raise KeyError(msg)
    uniq = [g for g in pd.unique(groups) if not pd.isna(g)]
    if len(uniq) < 2:
        msg = f"cv='leave_one_group_out' needs at least 2 groups in `adata.obs[{library_key!r}]`, got {len(uniq)}."
        raise ValueError(msg)
    cats = (
        list(adata.obs[library_key].cat.categories)
        if isinstance(adata.obs[library_key].dtype, pd.CategoricalDtype)
        else sorted(uniq, key=str)
    )
    out = []
    for g in cats:
        test = np.flatnonzero(groups == g)
        if len(test) == 0:
            continue
        train = np.flatnonzero((groups != g) & ~pd.isna(groups))
        out.append((str(g), train, test))
    return out


def _splitter_folds(cv, groups: np.ndarray | None, n: int, n_features: int) -> list:
    """The folds of a scikit-learn splitter (``groups`` = the sections); its test sets must be disjoint."""
    if not hasattr(cv, "split"):
        msg = f"`cv` must be a string option or a scikit-learn splitter with a `split` method, got {type(cv).__name__}."
        raise ValueError(msg)
    out = [
        (f"fold{i}", np.asarray(tr), np.asarray(te))
        for i, (tr, te) in enumerate(cv.split(np.zeros((n, n_features)), groups=groups))
    ]
    seen = np.zeros(n, dtype=np.int64)
    for _, _, te in out:
        seen[te] += 1
    if (seen > 1).any():
        msg = (
            f"The splitter puts {int((seen > 1).sum())} spots in more than one test set; out-of-fold predictions "
            "need disjoint test sets (e.g. KFold, GroupKFold, LeaveOneGroupOut)."
        )
        raise ValueError(msg)
    return out


def patient_folds(
    adata: AnnData, *, library_key: str | None, patient_key: str
) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
    """Leave-one-patient-out folds, then leave-one-section-out folds within each patient with 2+ sections.

    Returns ``[(fold_name, train, test, kind), ...]`` with ``kind`` ``"across_patient"`` (train on the other
    patients, test on this one; fold name = the patient) or ``"within_patient"`` (train on the other sections of
    the same patient only; fold name = the section). Each set of one kind has disjoint test sets.
    """
    import warnings

    patients = section_groups(adata, patient_key) if patient_key in adata.obs.columns else None
    if patients is None:
        msg = (
            f"`patient_key`={patient_key!r} is not an obs column (patients: a grouping above sections). "
            f"Available columns: {list_keys(adata.obs.columns)}."
        )
        raise KeyError(msg)
    libs = section_groups(adata, library_key)
    pat = patients.astype(str)
    uniq = sorted(pd.unique(pat), key=str)
    if libs is not None:
        lib = libs.astype(str)
        shared = pd.DataFrame({"p": pat, "l": lib}).groupby("l")["p"].nunique()
        if (shared > 1).any():
            msg = (
                f"Sections {list(shared.index[shared > 1])[:5]} of `obs[{library_key!r}]` belong to more than one "
                f"patient in `obs[{patient_key!r}]`; each section must come from one patient."
            )
            raise ValueError(msg)
    out = []
    if len(uniq) >= 2:
        for p in uniq:
            test = np.flatnonzero(pat == p)
            out.append((p, np.flatnonzero(pat != p), test, "across_patient"))
    else:
        warnings.warn(
            f"`obs[{patient_key!r}]` holds one patient ({uniq[0]!r}): no leave-one-patient-out fold is possible, so "
            "only within-patient (leave-one-section-out) figures are reported; they are optimistic for new patients.",
            UserWarning,
            stacklevel=3,
        )
    if libs is not None:
        for p in uniq:
            in_p = pat == p
            secs = sorted(pd.unique(lib[in_p]), key=str)
            if len(secs) < 2:
                continue
            for s in secs:
                test = np.flatnonzero(in_p & (lib == s))
                out.append((s, np.flatnonzero(in_p & (lib != s)), test, "within_patient"))
    if not out:
        msg = (
            f"No fold: `obs[{patient_key!r}]` has one patient and no patient has 2 sections in `obs[{library_key!r}]`."
        )
        raise ValueError(msg)
    return out


def _check_n_splits(n_splits: int, n: int) -> None:
    if isinstance(n_splits, bool) or not isinstance(n_splits, int | np.integer) or not 2 <= n_splits <= n:
        msg = f"`n_splits` must be an integer between 2 and the number of spots ({n}), got {n_splits!r}."
        raise ValueError(msg)
