"""Human DLPFC, 10x Visium (spatialLIBD; Maynard et al., Nat. Neurosci. 2021), read through ``spatialdata_io.visium``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .._constants import VISIUM_SPOT_DIAMETER_UM, Key
from .._settings import settings
from .._utils._quiet import quiet_third_party
from ._fetch import candidate_roots, fetch_files

FOLDER = "dlpfc"
#: JiangBioLab/DeepST: labels, spot positions, scale factors, low-res H&E (MIT).
DEEPST_COMMIT = "e37997f58930a4ad92ea1ea2af47896aa847a4f0"
#: prabhakarlab/Banksy: raw counts of the 5,000 most variable genes as ``.rda`` (MIT).
BANKSY_COMMIT = "2276ad331791d3894b055abf3478857dc69f5133"
DEEPST_URL = f"https://github.com/JiangBioLab/DeepST/raw/{DEEPST_COMMIT}/data/DLPFC/"
BANKSY_URL = f"https://github.com/prabhakarlab/Banksy/raw/{BANKSY_COMMIT}/data/"
LAYERS = ("Layer1", "Layer2", "Layer3", "Layer4", "Layer5", "Layer6", "WM")
LABEL_COLUMN = "layer_guess_reordered"
SPATIAL_FILES = (
    "spatial/tissue_positions_list.csv",
    "spatial/scalefactors_json.json",
    "spatial/tissue_lowres_image.png",
)
SHA256 = {
    "151673/dlpfc151673.rda": "280dad9b0014e9d5f776617584f83868930dec6f53c63853b4e2f6a6d00863c7",
    "151673/metadata.tsv": "1e6dcce1a6e0a7dcb8f0178521d3c39873be41bd5a9cdfc061f1b84a436a0d07",
    "151673/spatial/scalefactors_json.json": "91c4beb9ca8145855a6a6df0a00eda6541931fc12d82d09cf8f01c9c15179dbc",
    "151673/spatial/tissue_lowres_image.png": "2ca692ceb00b205bd2f75182935a018753b08c63fbba7e142fd154db22547fcf",
    "151673/spatial/tissue_positions_list.csv": "c1ce0eafc855982bb2a9773f147ce6c5aef68dfd06600caa8a7e7a0e6f7cc5e8",
    "151674/dlpfc151674.rda": "fdd630a84aaa6cb7b1cf6f3880e91353071cd8776e034fbed59be8fe55efd565",
    "151674/metadata.tsv": "a6ee7a6de23ff44db6269c399e524a6c6369522bafd1b1d876a67f56e4749af0",
    "151674/spatial/scalefactors_json.json": "869be1c7c2bc7722b1858e1f41a491305264208d083d641786e6f102fc723bac",
    "151674/spatial/tissue_lowres_image.png": "ed3423433091926df71ff8470014be4da8e0df06ae23efbdd0d0d82b29debc21",
    "151674/spatial/tissue_positions_list.csv": "bc8738299011382ad81a35d81c5bcb1546b17b5c10a5a6411baf9bc1f58acca7",
}


def _find_rda(folder: Path, sample: str) -> Path | None:
    """``dlpfc<sample>.rda``, else the only ``.rda`` of the folder."""
    p = folder / f"dlpfc{sample}.rda"
    if p.is_file():
        return p
    found = sorted(folder.glob("*.rda"))
    return found[0] if len(found) == 1 else None


def _local_sample(sample: str, data_dir) -> tuple[Path | None, list[str]]:
    """The sample folder in ``data_dir`` / ``$MORPHST_DATA_DIR`` (``<root>/<sample>`` or ``<root>/dlpfc/<sample>``)."""
    tried = []
    for source, root in candidate_roots(FOLDER, data_dir):
        folder = root / sample
        missing = [f for f in ("metadata.tsv", *SPATIAL_FILES) if not (folder / f).is_file()]
        if not missing and _find_rda(folder, sample) is None:
            missing = [f"dlpfc{sample}.rda (or one .rda file)"]
        if not missing:
            return folder, tried
        tried.append(f"{source}={str(folder)!r} (missing {missing[0]!r})")
    return None, tried


def _resolve(sample: str, data_dir) -> Path:
    folder, tried = _local_sample(sample, data_dir)
    if folder is not None:
        return folder
    files = [k for k in SHA256 if k.startswith(f"{sample}/")]
    if data_dir is None and files:
        # the two sources share no URL prefix: fetch them as two pooch registries into one cache folder
        deepst = {k: v for k, v in SHA256.items() if k in files and not k.endswith(".rda")}
        banksy = {k: v for k, v in SHA256.items() if k in files and k.endswith(".rda")}
        root = fetch_files(FOLDER, deepst, data_dir=None, base_url=DEEPST_URL, required=list(deepst))
        rda_name = next(iter(banksy)).split("/")[-1]
        rda_sha = {rda_name: banksy[next(iter(banksy))]}
        rda_root = fetch_files(f"{FOLDER}_rda", rda_sha, data_dir=None, base_url=BANKSY_URL, required=[rda_name])
        target = root / sample / rda_name
        if not target.is_file():
            shutil.copyfile(rda_root / rda_name, target)
        return root / sample
    known = sorted({k.split("/")[0] for k in SHA256})
    msg = (
        f"Could not find DLPFC sample {sample!r}. Pass `data_dir=` (a folder holding one folder per sample, e.g. "
        f"`<data_dir>/{sample}/` with `dlpfc{sample}.rda`, `metadata.tsv` and `spatial/` as in the spatialLIBD/"
        f"DeepST layout), or set `MORPHST_DATA_DIR`; samples {known} can also be downloaded (leave `data_dir` "
        "unset). Tried: " + ("; ".join(tried) if tried else "nothing") + "."
    )
    raise FileNotFoundError(msg)


def read_rda_counts(path: Path, sample: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw counts of a Banksy DLPFC ``.rda``: ``(counts genes × spots, gene ids, barcodes)``.

    The file holds one R list (``dlpfc<sample>``, else the only list with ``expression``) whose ``expression`` is
    a genes × spots matrix of UMI counts with dimnames.
    """
    import rdata

    try:
        converted = rdata.read_rda(str(path))
    except Exception as e:  # rdata raises many kinds; say which file
        msg = f"Could not read {str(path)!r} with the `rdata` package ({type(e).__name__}: {e})."
        raise ValueError(msg) from e
    obj = converted.get(f"dlpfc{sample}")
    if obj is None:
        lists = [v for v in converted.values() if isinstance(v, dict) and "expression" in v]
        if len(lists) != 1:
            msg = f"{str(path)!r} holds no list with `expression` (objects: {list(converted)})."
            raise ValueError(msg)
        obj = lists[0]
    expr = obj["expression"]
    genes = np.asarray(expr.coords[expr.dims[0]].values).astype(str)
    barcodes = np.asarray(expr.coords[expr.dims[1]].values).astype(str)
    return np.asarray(expr.values), genes, barcodes


def write_10x_h5(path: Path, counts: np.ndarray, genes: np.ndarray, barcodes: np.ndarray) -> None:
    """Write a genes × barcodes count matrix as a Cell Ranger >= 3 HDF5 (``filtered_feature_bc_matrix.h5``).

    Genes carry only Ensembl IDs here, so ``features/name`` repeats ``features/id``.
    """
    import h5py
    from scipy import sparse

    m = sparse.csc_matrix(np.rint(counts).astype(np.int32))
    m.eliminate_zeros()
    m.sort_indices()
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=m.data.astype(np.int32), compression="gzip")
        g.create_dataset("indices", data=m.indices.astype(np.int64), compression="gzip")
        g.create_dataset("indptr", data=m.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array(m.shape, dtype=np.int32))
        ft = g.create_group("features")
        ft.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))
        ft.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(genes), dtype="S"))
        ft.create_dataset("genome", data=np.array(["GRCh38"] * len(genes), dtype="S"))
        ft.create_dataset("id", data=np.array(genes, dtype="S"))
        ft.create_dataset("name", data=np.array(genes, dtype="S"))


def _spaceranger_folder(src: Path, sample: str) -> Path:
    """Assemble (once, in the cache) a Space Ranger output folder for ``sample`` from its source folder."""
    rda = _find_rda(src, sample)
    stamp = hashlib.sha256()
    for f in (rda, *(src / s for s in SPATIAL_FILES)):
        st = f.stat()
        stamp.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    out = settings.cache_dir / "dlpfc_spaceranger" / f"{sample}_{stamp.hexdigest()[:12]}"
    if (out / "filtered_feature_bc_matrix.h5").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "spatial").mkdir(parents=True)
    for s in SPATIAL_FILES:
        shutil.copyfile(src / s, tmp / s)
    counts, genes, barcodes = read_rda_counts(rda, sample)
    write_10x_h5(tmp / "filtered_feature_bc_matrix.h5", counts, genes, barcodes)
    try:
        tmp.rename(out)
    except OSError:  # another process assembled it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def dlpfc(library_id: str = "151673", *, data_dir: str | os.PathLike | None = None):
    """Human dorsolateral prefrontal cortex, 10x Visium, one section with manual cortical-layer labels.

    The standard benchmark of spatial domains (spatialLIBD; Maynard et al., *Nat. Neurosci.* 24, 425–436, 2021;
    cite it when you use the data). The pieces of a Space Ranger output folder (spot positions, scale factors,
    low-resolution H&E, from GitHub ``JiangBioLab/DeepST`` @ ``e37997f``) and the raw counts of the **5,000 most
    variable genes** (Ensembl IDs, from the R data of GitHub ``prabhakarlab/Banksy`` @ ``2276ad3``, read with
    ``rdata``) are assembled into a Space Ranger folder in ``mst.settings.cache_dir`` (the count matrix written as
    ``filtered_feature_bc_matrix.h5``), which is read with :func:`spatialdata_io.visium`, as a user would read their
    own Visium run. Only the low-resolution image (about 600 × 600 px, ≈ 12.7 µm/px) is available.

    Parameters
    ----------
    library_id
        Section (spatialLIBD sample) ID, e.g. ``"151673"`` or ``"151674"`` (downloadable); any other section laid
        out the same way in ``data_dir`` loads too.
    data_dir
        Folder with one folder per sample: ``<data_dir>/<library_id>/`` holding ``dlpfc<library_id>.rda`` (or one
        ``.rda``), ``metadata.tsv`` and ``spatial/{tissue_positions_list.csv, scalefactors_json.json,
        tissue_lowres_image.png}``; ``data_dir`` may also be the parent of a ``dlpfc`` folder laid out that way.
        Default: ``$MORPHST_DATA_DIR`` (or ``mst.settings.data_dir``), else the files of 151673 / 151674 are
        downloaded with pooch (sha256-checked) and cached.

    Returns
    -------
    SpatialData as :func:`spatialdata_io.visium` writes it (``dataset_id = library_id``):

    - ``images[f"{library_id}_lowres_image"]``: low-res H&E, ``(c, y, x)`` uint8.
    - ``shapes[library_id]``: spot circles, centres and ``radius`` in **full-resolution pixels**.
    - coordinate systems ``library_id`` (full-resolution px, ≈ 0.57 µm/px), ``f"{library_id}_downscaled_lowres"`` (low-res
      px) and ``f"{library_id}_downscaled_hires"``. **No coordinate system is in µm**; the µm/px of each is recorded in
      ``uns["morphst_dataset"]["um_per_px"]`` (55 µm spot diameter / ``spot_diameter_fullres``).
    - ``tables["table"]``: ``X`` raw UMI counts (CSR, float32), 5,000 genes (``var_names`` and ``var["gene_ids"]``:
      Ensembl IDs); ``obs`` with ``in_tissue``, ``array_row``, ``array_col``, ``spot_id``, ``region``, ``section``
      (= ``library_id``, categorical) and ``layer`` (manual annotation ``layer_guess_reordered``: categorical
      ``Layer1`` … ``Layer6``, ``WM``; missing (NaN) where the authors left the spot unlabelled);
      ``obsm["spatial"]`` (x, y in full-res px); ``uns["spatial"][library_id]["scalefactors"]`` (as in
      ``scalefactors_json.json``); ``uns["morphst_dataset"]``.

    Raises
    ------
    FileNotFoundError
        If the section is neither in ``data_dir`` / ``$MORPHST_DATA_DIR`` nor downloadable.
    ValueError
        If the ``.rda`` cannot be read or does not hold an ``expression`` matrix.
    """
    from spatialdata_io import visium

    library_id = str(library_id)
    src = _resolve(library_id, data_dir)
    folder = _spaceranger_folder(src, library_id)
    with quiet_third_party():  # spatialdata's "Converting `region_key`" about the reader's own table
        sdata = visium(folder, dataset_id=library_id)
    table = sdata.tables[Key.TABLE]
    scalefactors = json.loads((folder / "spatial/scalefactors_json.json").read_text())
    meta = pd.read_csv(src / "metadata.tsv", sep="\t", index_col=0, low_memory=False)
    labels = meta[LABEL_COLUMN].reindex(table.obs_names) if LABEL_COLUMN in meta else pd.Series(np.nan, table.obs_names)
    extra = sorted(set(labels.dropna().astype(str)) - set(LAYERS))
    table.obs["layer"] = pd.Categorical(labels.astype(object).where(labels.notna(), None), categories=[*LAYERS, *extra])
    table.obs[Key.LIBRARY] = pd.Categorical([library_id] * table.n_obs)
    table.X = table.X.astype(np.float32)
    table.uns["spatial"] = {library_id: {"scalefactors": scalefactors}}
    fullres = VISIUM_SPOT_DIAMETER_UM / float(scalefactors["spot_diameter_fullres"])
    table.uns[Key.DATASET] = {
        "name": "dlpfc",
        "library_id": library_id,
        "source": (
            f"github.com/JiangBioLab/DeepST@{DEEPST_COMMIT} (positions, scale factors, low-res image, labels); "
            f"github.com/prabhakarlab/Banksy@{BANKSY_COMMIT} (counts, 5,000 genes)"
        ),
        "citation": "Maynard K.R. et al., Nat. Neurosci. 24, 425-436 (2021)",
        "label_column": LABEL_COLUMN,
        "n_unlabelled": int(labels.isna().sum()),
        "um_per_px": {
            library_id: fullres,
            f"{library_id}_downscaled_lowres": fullres / float(scalefactors["tissue_lowres_scalef"]),
            f"{library_id}_downscaled_hires": fullres / float(scalefactors["tissue_hires_scalef"]),
        },
        "um_per_px_derivation": "55 um Visium spot diameter / spot_diameter_fullres (px), divided by the image scalef",
        "coordinate_systems": {library_id: "full-resolution pixels (as spatialdata_io.visium writes them)"},
        "spaceranger_folder": str(folder),
    }
    return sdata
