"""The main job behind ``morphst demo``: honest morphology -> expression translation on HER2ST patient C.

Steps: load HER2ST C2–C6 (H&E + legacy ST), cut 112 µm spot-centred patches (224 px, 0.5 µm/px), embed them with
the offline default encoder (EfficientNet-Lite0, ImageNet), predict the 50 most highly variable genes — selected
on the training sections of each fold — with leave-one-section-out cross-validation (standardise, PCA ≤ 256, ridge
with inner grouped CV), print the per-section Pearson r, and write the results and a small report.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ._constants import Key


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling of ``path`` to write a file or folder into, then move it to ``path``.

    The result appears at ``path`` only when the writing finished: if it raises (or the process is killed), ``path``
    keeps its old content (or stays absent) and the temporary is removed (if the process survives). An existing
    ``path`` is replaced by two renames, so there is no moment where a half-written store is at ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    for p in (tmp, old):
        _remove(p)
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            path.rename(old)
        tmp.rename(path)
    finally:
        _remove(tmp)
        _remove(old)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _make_folder(out: Path) -> list[Path]:
    """Create the folder ``out`` (and missing parents); return the folders created, innermost first.

    Any OS reason it cannot be created (a file in the way, no permission, a read-only or virtual file system) is a
    ``ValueError`` naming the folder.
    """
    created = []
    p = out
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_empty(created)
        why = f"{e.strerror}: {e.filename}" if e.strerror else str(e)
        msg = f"Cannot create the output folder {str(out)!r} ({why}); pass `--out` naming a folder you can write to."
        raise ValueError(msg) from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove the ``folders`` (innermost first) that exist and are empty."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            return


def summary(sdata) -> pd.DataFrame:
    """Per-section summary of a morphst dataset: spots, genes, image size (px) and µm/px."""
    from ._utils import image_levels

    adata = sdata.tables[Key.TABLE]
    mpp = adata.uns["morphst_dataset"]["um_per_px"]
    rows = []
    for s in adata.obs[Key.LIBRARY].cat.categories:
        key = f"{s}_he"
        h, w = image_levels(sdata.images[key])[0].shape[1:] if key in sdata.images else (None, None)
        rows.append(
            {
                "section": s,
                "spots": int((adata.obs[Key.LIBRARY] == s).sum()),
                "genes": adata.n_vars,
                "image_px (w x h)": f"{w} x {h}" if w else "no image",
                "um_per_px": round(mpp[s], 4),
            }
        )
    return pd.DataFrame(rows).set_index("section")


def section_table(adata, key: str = Key.PREDICTED) -> pd.DataFrame:
    """Per held-out section: spots, genes, mean Pearson r (and its spread over genes), errors, the baseline MSE.

    Full precision (the CSV keeps it): figures are rounded once, where they are printed or drawn, so the mean over
    sections agrees with the one :func:`morphst.tl.predict_expression` logs.
    """
    pf = adata.uns[key]["per_fold"].copy()
    fm = adata.uns[key]["fold_metrics"]
    spread = fm.groupby("fold", observed=True)["pcc"].agg(["median", "min", "max"])
    pf = pf.set_index(pf["fold"].astype(str))
    out = pd.DataFrame(
        {
            "spots": pf["n_test"],
            "genes": pf["n_genes"],
            "mean_pcc": pf["pcc"],
            "median_pcc": spread["median"].reindex(pf.index),
            "best_gene_pcc": spread["max"].reindex(pf.index),
            "excluded": pf["n_excluded"],
            "mae": pf["mae"],
            "rmse": pf["rmse"],
            "mse": pf["mse"],
            "mse_training_mean": pf["mse_train_mean"],
            "ridge_alpha": pf["alpha"],
        }
    )
    out.index.name = "held_out_section"
    return out


def gene_table(adata, key: str = Key.PREDICTED) -> pd.DataFrame:
    """Per predicted gene: mean over folds of each metric, the number of folds that selected it, ``in_all_folds``.

    Genes predicted in every fold come first, ranked by Pearson r (mean over the folds); genes selected in only some
    folds follow, also by r: a mean over one fold is not comparable with a mean over all of them.
    """
    mask = adata.var[f"{key}_mask"].to_numpy(bool)
    cols = [f"{key}_{m}" for m in ("pcc", "mae", "mse", "rmse", "n_folds")]
    t = adata.var.loc[mask, cols].copy()
    t.columns = ["pcc", "mae", "mse", "rmse", "n_folds"]
    t["in_all_folds"] = t["n_folds"] == len(adata.uns[key]["per_fold"])
    t.index.name = "gene"
    return t.sort_values(["in_all_folds", "pcc"], ascending=[False, False])


def report_figure(sections: pd.DataFrame, genes: pd.DataFrame, path: Path, *, title: str = "") -> None:
    """Two panels: mean PCC per held-out section, and the per-gene PCC of the 25 best-predicted genes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 2.2]})
    ax1.bar(sections.index, sections["mean_pcc"], color="#4c72b0")
    mean = sections["mean_pcc"].mean()
    ax1.axhline(mean, color="k", lw=1, ls="--", label=f"mean {mean:.3f}")
    ax1.set_xlabel("held-out section")
    ax1.set_ylabel("mean Pearson r over its 50 genes")
    ax1.set_title("Leave-one-section-out")
    ax1.legend(loc="lower right", frameon=False)
    top = genes[genes["in_all_folds"]].head(25)
    ax2.bar(top.index, top["pcc"], color="#55a868")
    ax2.set_ylabel("Pearson r (mean over folds)")
    ax2.set_title("Best-predicted genes (among those predicted in every fold)")
    ax2.tick_params(axis="x", rotation=75, labelsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)


def map_figure(sdata, genes: pd.DataFrame, section: str, path: Path, *, n_genes: int = 2) -> list[str]:
    """Observed and predicted expression on the tissue of ``section`` for the best genes predicted in every fold.

    Returns the genes drawn (``mst.pl.predicted_vs_observed``, saved as a PNG at ``path``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    import morphst as mst

    top = [str(g) for g in genes.index[genes["in_all_folds"].to_numpy(bool)][:n_genes]]
    fig = mst.pl.predicted_vs_observed(sdata, top, library_id=section, return_fig=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return top


def _results_sdata(sdata):
    """A SpatialData with the shapes and the results table (the H&E images stay in the data folder)."""
    from spatialdata import SpatialData

    return SpatialData(shapes=dict(sdata.shapes.items()), tables={Key.TABLE: sdata.tables[Key.TABLE]})


def write_results(sdata, path: str | os.PathLike) -> None:
    """Write the shapes and the results table of ``sdata`` as a SpatialData zarr store at ``path``.

    Written into a temporary folder next to ``path`` and renamed when complete, so an interrupted run never leaves a
    store that reads back as valid but empty; an existing store at ``path`` is replaced only then.
    """
    import warnings

    with atomic_path(path) as tmp, warnings.catch_warnings():
        # anndata warns once per array written to zarr v3 ("zarr v3 autosharding will be the default ..."): noise here
        warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
        # ome-zarr about its own default downsampler, which spatialdata's writer passes (no image is written here)
        warnings.filterwarnings("ignore", message="Call to deprecated class Scaler", category=DeprecationWarning)
        _results_sdata(sdata).write(tmp)


def run_demo(
    *,
    data_dir=None,
    out="morphst_output",
    library_id=("C2", "C3", "C4", "C5", "C6"),
    model: str = Key.DEFAULT_MODEL,
    n_top_genes: int = 50,
) -> pd.DataFrame:
    """Run the main job on HER2ST patient C, print the per-section PCC table and write results and a report.

    Writes into ``out``: ``her2st_translation.zarr`` (SpatialData: spot shapes and the table with the embeddings in
    ``obsm['X_<model>']``, out-of-fold predictions in ``layers['predicted']`` (and ``layers['predicted_context8']``
    with 8-neighbour spatial context), observed ``layers['log1p_cp10k']`` and the metrics in ``var``/``uns``), ``translation_per_section.csv``, ``translation_per_gene.csv``, ``translation_report.png`` and ``translation_map.png`` (observed and predicted expression of the two best genes on the tissue of the best-predicted section).
    Returns the per-section table. If the run fails, an output folder it created and left empty is removed.
    """
    t0 = time.perf_counter()
    sections = tuple(library_id)
    if len(set(sections)) < 2:
        msg = f"The demo needs at least two sections (leave-one-section-out), got {list(sections)}; e.g. C2,C3."
        raise ValueError(msg)
    out = Path(out)
    created = _make_folder(out)
    try:
        return _run(sections, data_dir, out, model, n_top_genes, t0)
    except BaseException:
        _remove_empty(created)  # a failed run leaves no empty output folder behind (files written stay)
        raise


def _run(sections: tuple, data_dir, out: Path, model: str, n_top_genes: int, t0: float) -> pd.DataFrame:
    """The steps of :func:`run_demo` once its arguments are checked and ``out`` exists."""
    import morphst as mst

    sdata = mst.datasets.her2st(sections, data_dir=data_dir)
    print("HER2ST patient C (Andersson et al., Nat. Commun. 2021), legacy ST")
    print(summary(sdata).to_string())
    adata = sdata.tables[Key.TABLE]
    if Key.LIBRARY in adata.obs and adata.obs[Key.LIBRARY].nunique() < 2:
        msg = "The demo needs at least two sections with images (leave-one-section-out)."
        raise ValueError(msg)

    print(f"\n[1/3] patches (112 µm -> 224 px, 0.5 µm/px) and {model} embeddings")
    mst.pp.extract_patches(sdata, patch_size=112.0, target_px=224)
    mst.tl.embed_patches(sdata, model)
    use_rep = Key.obsm_embedding(model)

    print(
        f"\n[2/3] leave-one-section-out translation of the {n_top_genes} most variable genes (chosen on the training sections)"
    )
    mst.pp.normalize(adata)
    # the global column is for reference only: predict_expression re-selects the genes inside each training fold
    mst.pp.select_genes(adata, n_top_genes)
    mst.tl.predict_expression(adata, use_rep, genes=Key.MORPH_TARGET, select_on_train=True, cv="leave_one_group_out")

    # the SEPAL / TRIPLEX idea, for comparison: add the mean embedding of the 8 surrounding spots
    mst.tl.predict_expression(adata, use_rep, spatial_context=8, key_added="predicted_context8")
    ctx = adata.uns["predicted_context8"]["per_fold"]["pcc"]

    sec = section_table(adata)
    genes = gene_table(adata)
    _print_results(sec, genes, ctx)

    print(f"\n[3/3] writing results to {out.resolve()}")
    for table, name in ((sec, "translation_per_section.csv"), (genes, "translation_per_gene.csv")):
        with atomic_path(out / name) as tmp:
            table.to_csv(tmp)
    report_figure(
        sec,
        genes,
        out / "translation_report.png",
        title=f"HER2ST C2–C6, {model} (112 µm patches), PCA≤256 + ridge, train-fold HVGs: mean PCC over sections "
        f"{sec['mean_pcc'].mean():.3f}",
    )
    best = str(sec["mean_pcc"].idxmax())
    map_figure(sdata, genes, best, out / "translation_map.png")
    write_results(sdata, out / "her2st_translation.zarr")
    for p in (
        "her2st_translation.zarr",
        "translation_per_section.csv",
        "translation_per_gene.csv",
        "translation_report.png",
        "translation_map.png",
    ):
        print(f"  {out.resolve() / p}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return sec


def _print_results(sec: pd.DataFrame, genes: pd.DataFrame, ctx) -> None:
    """Print the per-section table, the two averages of the PCC, the spatial-context figure and the best genes."""
    pd.set_option("display.width", 160)
    print("\nPer held-out section (Pearson r per gene within the section, mean over its 50 train-fold HVGs):")
    print(
        sec[
            [
                "spots",
                "genes",
                "mean_pcc",
                "median_pcc",
                "best_gene_pcc",
                "excluded",
                "rmse",
                "mse",
                "mse_training_mean",
            ]
        ]
        .round(3)
        .to_string()
    )
    print(
        f"\nmean PCC over held-out sections (each the mean over that section's genes): {sec['mean_pcc'].mean():.3f} "
        f"(range {sec['mean_pcc'].min():.3f}–{sec['mean_pcc'].max():.3f}); MSE {sec['mse'].mean():.3f} vs "
        f"{sec['mse_training_mean'].mean():.3f} for the training-mean predictor (whose PCC is undefined: a constant)."
    )
    print(
        f"(the other average, mean over genes of each gene's mean over its folds, as `mst.pl.gene_metrics` draws it "
        f"for the genes it plots: {genes['pcc'].mean():.3f} over all {len(genes)} genes)"
    )
    print(
        "with spatial context (mean embedding of the 8 nearest spots appended): mean PCC over held-out sections "
        f"{ctx.mean():.3f} (range {ctx.min():.3f}–{ctx.max():.3f}); stored under key 'predicted_context8'."
    )
    n_all = int(genes["in_all_folds"].sum())
    print(
        f"Best-predicted genes, among the {n_all} predicted in all {len(sec)} folds (Pearson r: mean over the folds; "
        "every gene with its n_folds in translation_per_gene.csv):"
    )
    print(genes[genes["in_all_folds"]].head(10)[["pcc", "rmse", "n_folds"]].round(3).to_string())


__all__ = [
    "atomic_path",
    "gene_table",
    "map_figure",
    "report_figure",
    "run_demo",
    "section_table",
    "summary",
    "write_results",
]
