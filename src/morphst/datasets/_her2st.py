"""HER2+ breast cancer, legacy Spatial Transcriptomics, patient C (Andersson et al., Nat. Commun. 2021)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._constants import ST_SPOT_DIAMETER_UM, ST_SPOT_SPACING_UM, Key
from ._fetch import fetch_files
from ._image import lazy_rgb_image

FOLDER = "her2st_patientC"
#: almaan/her2st, the commit the files were taken from.
COMMIT = "85df7411b987a7dec3feff9718b869a7a82091ec"
BASE_URL = f"https://github.com/almaan/her2st/raw/{COMMIT}/"
SECTIONS = ("C1", "C2", "C3", "C4", "C5", "C6")
IMAGES = {
    "C2": "data/ST-imgs/C/C2/5714_HE_BT_C2.jpg",
    "C3": "data/ST-imgs/C/C3/5714_HE_BT_D1.jpg",
    "C4": "data/ST-imgs/C/C4/5714_HE_BT_D2.jpg",
    "C5": "data/ST-imgs/C/C5/5714_HE_BT_E1.jpg",
    "C6": "data/ST-imgs/C/C6/5714_HE_BT_E2.jpg",
}
SHA256 = {
    "data/ST-cnts/C1.tsv.gz": "8383130eebf0f9f8186f006ed6b704149ba62303605a312a9080fa9901be9c20",
    "data/ST-cnts/C2.tsv.gz": "c1c59ea6cffae36b9ecb561b8e2a97e3aa5f4085f748e991a0e330ed9d09773d",
    "data/ST-cnts/C3.tsv.gz": "e00c55a3eb9caac5d9c71b8906aae8be8b38f93e23938f4a0ebee17683ef6a2a",
    "data/ST-cnts/C4.tsv.gz": "33201f76d41d7131dc600a0f87d9a70383af3503e81698b4d11e6f2e8d73e9da",
    "data/ST-cnts/C5.tsv.gz": "c0f310315ca6110d74dbdf7011e5b42432ba0b8eb5f001824764911988f39338",
    "data/ST-cnts/C6.tsv.gz": "60478b0d2411501866685f41312c65c6591e499d64d5b719be8ee9bab25c9bc8",
    "data/ST-imgs/C/C2/5714_HE_BT_C2.jpg": "26e2f73ae840cdd46c5bba405aae181f13a56a376b9848dff23f7a9c5de7f19e",
    "data/ST-imgs/C/C3/5714_HE_BT_D1.jpg": "0005a92674014d473040a28f0afca89ce5fa5c44019b479b638ceb3272ceb568",
    "data/ST-imgs/C/C4/5714_HE_BT_D2.jpg": "f40607eb1d5f0d125decd71c48b0c5d29cf6776ad92297fd185631208c82d6f2",
    "data/ST-imgs/C/C5/5714_HE_BT_E1.jpg": "34028ea41e376396b50c42b0a11a7e689c85be4a8022e668d0a09cc128c04c65",
    "data/ST-imgs/C/C6/5714_HE_BT_E2.jpg": "dddd87232589648861a9b6776dc1749be8306213f6589aeef0e805fb2b1ee263",
    "data/ST-pat/lbl/C1_labeled_coordinates.tsv": "41b6e1bbb1031480d969e725e739971cb39dbdb6e2b6d662d585bebacf093040",
    "data/ST-spotfiles/C1_selection.tsv": "9a5187c98d2c312064057d3bad192d4a19105b5135ff2b68f5e4547cade0954d",
    "data/ST-spotfiles/C2_selection.tsv": "235b5f4306b3b57c628ffc82c98c7109602474fbcc79a917b9c50517f99b6b1c",
    "data/ST-spotfiles/C3_selection.tsv": "7fd76c13370b7804ac3bb377b846d22485cf9223f9dd8dfc25be06e5aaf65755",
    "data/ST-spotfiles/C4_selection.tsv": "47e79f3b9dbfa3a8c18af9e948ba7ba4bf0a75ea1b4c292bc714ced7d0917d4c",
    "data/ST-spotfiles/C5_selection.tsv": "2114cc3b4da759772112897f1e247d5443c9f8c808e6a9a952eb4fda379a194c",
    "data/ST-spotfiles/C6_selection.tsv": "efdbbc6759c6af43baa966505c31705f09c087c1dccf1ea3e0d1db7b55717117",
    "res/ST-cluster/lbl/C1-cluster-annotation.tsv.gz": "2dbf0013511f79993a05a3b92fc1f4e4b374d8b498637aac52c9309058447e8e",
    "res/ST-cluster/lbl/C2-cluster-annotation.tsv.gz": "3211500325b1be1cd2be7480f2b094a48647fc25df4d8fe6afb8c48c15650ece",
    "res/ST-cluster/lbl/C3-cluster-annotation.tsv.gz": "a1522a14855bc2022ccbb9ea9cbae59837cbcd310bc4c02727ae6bfa37e6d369",
    "res/ST-cluster/lbl/C4-cluster-annotation.tsv.gz": "a5cc7a3a40983a21ea8400145c80a7dc5b13e7468b987ec0610f4c2123978c71",
    "res/ST-cluster/lbl/C5-cluster-annotation.tsv.gz": "5929e9183e09717891fce94a71ec94551a86d5267ebb085067ac1d71894bc4ea",
    "res/ST-cluster/lbl/C6-cluster-annotation.tsv.gz": "bc1234a7a05073a65017f7c0c101547ae2d3c9aa37b895a27dafd9c33842f9d2",
    "res/ST-cluster/motivation.csv": "b7701748b5de40e63771f032a864b5812f9b2aa638459db2257af4ac519f8234",
}


def _files_for(section: str) -> list[str]:
    files = [
        f"data/ST-cnts/{section}.tsv.gz",
        f"data/ST-spotfiles/{section}_selection.tsv",
        f"res/ST-cluster/lbl/{section}-cluster-annotation.tsv.gz",
    ]
    if section in IMAGES:
        files.append(IMAGES[section])
    if section == "C1":
        files.append("data/ST-pat/lbl/C1_labeled_coordinates.tsv")
    return files


def derive_um_per_px(array_xy: np.ndarray, pixel_xy: np.ndarray, spacing_um: float = ST_SPOT_SPACING_UM) -> float:
    """Derive the image scale (µm/px) from the spot grid.

    Fits ``pixel = a + b * array`` by least squares on each axis; ``b`` is the grid step in pixels and
    ``spacing_um / mean(b_x, b_y)`` the scale.

    Parameters
    ----------
    array_xy
        Array (grid) coordinates of the spots, shape ``(n_spots, 2)``, in grid steps.
    pixel_xy
        Pixel coordinates of the same spots, shape ``(n_spots, 2)``, in px.
    spacing_um
        Centre-to-centre distance of neighbouring grid positions, µm.

    Returns
    -------
    Scale in µm per px.
    """
    steps = []
    for ax in range(2):
        b = np.polyfit(array_xy[:, ax].astype(float), pixel_xy[:, ax].astype(float), 1)[0]
        steps.append(abs(b))
    return float(spacing_um / np.mean(steps))


def _cluster_meaning(root: Path) -> dict[str, str]:
    # motivation.csv has unquoted commas inside its fields: the meaning is what lies between
    # "<patient>,<cluster>," and ",Marker genes ..." (or the empty rest, for "unknown").
    out = {}
    for line in (root / "res/ST-cluster/motivation.csv").read_text().splitlines()[1:]:
        m = re.match(r"^C,(\d+),(.*?)(?:,Marker genes.*|,+)?$", line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _read_section(root: Path, section: str):
    import anndata as ad
    import scipy.sparse as sp

    cnt = pd.read_csv(root / f"data/ST-cnts/{section}.tsv.gz", sep="\t", index_col=0)
    sel = pd.read_csv(root / f"data/ST-spotfiles/{section}_selection.tsv", sep="\t")
    sel.index = sel["x"].astype(str) + "x" + sel["y"].astype(str)
    ids = sel.index[sel.index.isin(cnt.index)]
    obs = pd.DataFrame(
        {
            Key.LIBRARY: section,
            "array_x": sel.loc[ids, "x"].to_numpy(int),
            "array_y": sel.loc[ids, "y"].to_numpy(int),
            "pixel_x": sel.loc[ids, "pixel_x"].to_numpy(float),
            "pixel_y": sel.loc[ids, "pixel_y"].to_numpy(float),
        },
        index=pd.Index([f"{section}_{i}" for i in ids], name="spot"),
    )
    lab = pd.read_csv(root / f"res/ST-cluster/lbl/{section}-cluster-annotation.tsv.gz", sep="\t")
    lab.index = lab["x"].astype(str) + "x" + lab["y"].astype(str)
    lab = lab[~lab.index.duplicated()]
    obs["cluster"] = lab["label"].reindex(ids).map(lambda v: pd.NA if pd.isna(v) else str(int(v))).to_numpy()
    if section == "C1":
        pat = pd.read_csv(root / "data/ST-pat/lbl/C1_labeled_coordinates.tsv", sep="\t").dropna(subset=["x", "y"])
        pat.index = pat["x"].round().astype(int).astype(str) + "x" + pat["y"].round().astype(int).astype(str)
        pat = pat[~pat.index.duplicated()]
        obs["pathologist_label"] = pat["label"].reindex(ids).to_numpy()
    counts = sp.csr_matrix(cnt.loc[ids].to_numpy(np.float32))
    a = ad.AnnData(counts, obs=obs)
    a.var_names = cnt.columns.astype(str)
    a.var_names_make_unique()
    new_xy = sel.loc[ids, ["new_x", "new_y"]].to_numpy(float)
    mpp = derive_um_per_px(new_xy, obs[["pixel_x", "pixel_y"]].to_numpy())
    return a, mpp


def _union_genes(tables: list) -> list:
    """Put every section on the union of the genes (first-appearance order), zeros where a file lacks a gene.

    A legacy ST count file lists the genes detected in that section; a gene absent from one section's file has zero
    counts there, so the union with zeros is lossless (per-spot totals equal the files'), while an intersection
    would drop counts. ``var['n_sections_listed']``: in how many of the loaded files the gene appears.
    """
    import anndata as ad
    import scipy.sparse as sp

    genes = pd.Index(list(dict.fromkeys(g for a in tables for g in a.var_names)), name=None)
    listed = np.zeros(len(genes), dtype=np.int64)
    out = []
    for a in tables:
        cols = genes.get_indexer(a.var_names)
        listed[cols] += 1
        x = sp.coo_matrix(a.X)
        x = sp.csr_matrix((x.data, (x.row, cols[x.col])), shape=(a.n_obs, len(genes)), dtype=np.float32)
        out.append(ad.AnnData(x, obs=a.obs, var=pd.DataFrame(index=genes)))
    for a in out:
        a.var["n_sections_listed"] = listed
    return out


def her2st(
    library_id: str | Sequence[str] = ("C2", "C3", "C4", "C5", "C6"),
    *,
    data_dir: str | os.PathLike | None = None,
):
    """HER2-positive breast cancer, legacy Spatial Transcriptomics, patient C, as one SpatialData.

    Serial sections C1–C6 of one tumour (Andersson et al., *Nat. Commun.* 12, 6012, 2021; data from the GitHub
    repository ``almaan/her2st`` at commit ``85df741``). Spots are 100 µm in diameter on a 200 µm grid.
    Cite the paper when you use the data; the repository states no licence.

    **One SpatialData for all sections**, with one table whose ``obs["section"]`` gives the section, so
    leave-one-section-out cross-validation is a ``library_key="section"`` away. Each section has its own coordinate
    system, named after it (``"C2"``, ...), in which **one unit is one micrometre**. The scale (µm/px) is
    **derived in code from the 200 µm spot grid** (least-squares fit of pixel against array coordinates), not given
    by the source; it is about 0.69 µm/px and recorded per section in ``uns["morphst_dataset"]["um_per_px"]``.

    Parameters
    ----------
    library_id
        Section(s) to load, any of ``"C1"`` … ``"C6"``. C1 has **no image** here (its JPEG is not in the source
        snapshot): it gets spots and expression only, plus the pathologist labels in ``obs["pathologist_label"]``.
    data_dir
        Folder holding ``her2st_patientC`` (or its content). Default: ``$MORPHST_DATA_DIR`` (or
        ``mst.settings.data_dir``), else the files are downloaded with pooch (sha256-checked) and cached.

    Returns
    -------
    SpatialData with, per section ``S``:

    - ``images["S_he"]``: H&E, ``(c, y, x)`` = ``(3, ~9900, ~9300)`` uint8, multiscale (5 levels, factor 2),
      chunked ``1024 px`` and lazy (decoded once into a zarr cache in ``mst.settings.cache_dir``);
      transformation to ``"S"``: scale by µm/px.
    - ``shapes["S_spots"]``: circles at the spot centres, in full-resolution pixels of that image, ``radius`` in px
      (50 µm); same transformation.
    - ``tables["table"]`` (all sections): ``X`` raw UMI counts (integers stored as float32, CSR sparse, as
      ``scanpy.read_10x_h5`` does), the union of the genes of the loaded sections' count files (a gene absent from
      one section's file has zero counts there, so per-spot totals equal the files'; 17,418 genes for C2–C6), with
      ``var["n_sections_listed"]`` (in how many loaded files the gene appears); ``obs`` with ``section``, ``region``
      (the shapes element), ``instance_id``, ``array_x``/``array_y`` (grid), ``pixel_x``/``pixel_y`` (px),
      ``cluster`` (the authors' expression clusters, categorical ``"0"``–``"6"``, NaN where unlabelled);
      ``obsm["spatial"]`` (px); ``uns["cluster_meaning"]`` (cluster id -> meaning from ``motivation.csv``) and
      ``uns["morphst_dataset"]`` (source, commit, ``um_per_px`` per section, how it was derived).

    Raises
    ------
    ValueError
        If a section name is unknown.
    FileNotFoundError
        If the files are neither in ``data_dir`` / ``$MORPHST_DATA_DIR`` nor downloadable (names all three options).
    """
    import anndata as ad
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Scale

    sections = (library_id,) if isinstance(library_id, str) else tuple(library_id)
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        msg = f"Unknown HER2ST patient C section(s) {bad}; choose from {list(SECTIONS)}."
        raise ValueError(msg)
    required = [f for s in sections for f in _files_for(s)] + ["res/ST-cluster/motivation.csv"]
    root = fetch_files(FOLDER, SHA256, data_dir=data_dir, base_url=BASE_URL, required=required)

    images, shapes, tables, mpps = {}, {}, [], {}
    for s in sections:
        a, mpp = _read_section(root, s)
        mpps[s] = mpp
        tf = {s: Scale([mpp, mpp], axes=("x", "y"))}
        region = f"{s}_spots"
        xy = a.obs[["pixel_x", "pixel_y"]].to_numpy()
        a.obs["region"] = region
        a.obs["instance_id"] = np.arange(a.n_obs)
        shapes[region] = ShapesModel.parse(
            xy,
            geometry=0,
            radius=np.full(a.n_obs, ST_SPOT_DIAMETER_UM / 2 / mpp),
            index=a.obs["instance_id"].to_numpy(),
            transformations=tf,
        )
        if s in IMAGES:
            images[f"{s}_he"] = Image2DModel.parse(
                lazy_rgb_image(root / IMAGES[s]),
                dims=("c", "y", "x"),
                c_coords=["r", "g", "b"],
                scale_factors=[2, 2, 2, 2],
                chunks=(3, 1024, 1024),
                transformations=tf,
            )
        tables.append(a)

    adata = ad.concat(_union_genes(tables), join="inner", merge="same")
    adata.obs[Key.LIBRARY] = pd.Categorical(adata.obs[Key.LIBRARY], categories=list(sections))
    adata.obs["region"] = pd.Categorical(adata.obs["region"], categories=[f"{s}_spots" for s in sections])
    labels = adata.obs["cluster"].astype("object").where(adata.obs["cluster"].notna(), None)
    adata.obs["cluster"] = pd.Categorical(labels, categories=sorted({v for v in labels if v is not None}, key=int))
    if "pathologist_label" in adata.obs:
        adata.obs["pathologist_label"] = adata.obs["pathologist_label"].astype("category")
    adata.obsm[Key.SPATIAL] = adata.obs[["pixel_x", "pixel_y"]].to_numpy()
    adata.uns["cluster_meaning"] = _cluster_meaning(root)
    adata.uns[Key.DATASET] = {
        "name": "her2st_patientC",
        "source": f"github.com/almaan/her2st@{COMMIT}",
        "citation": "Andersson A. et al., Nat. Commun. 12, 6012 (2021)",
        "library_id": list(sections),
        "um_per_px": {s: float(v) for s, v in mpps.items()},
        "um_per_px_derivation": (
            "least-squares slope of pixel vs array coordinates, 200 um grid step / mean px step (derived, not given "
            "by the source)"
        ),
        "genes": (
            "union of the sections' count files, zero where a file does not list a gene (lossless: per-spot totals "
            "equal the files'); var['n_sections_listed'] counts the files listing each gene"
        ),
        "spot_diameter_um": ST_SPOT_DIAMETER_UM,
        "spot_spacing_um": ST_SPOT_SPACING_UM,
        "coordinate_systems": {s: "micrometres" for s in sections},
    }
    table = TableModel.parse(
        adata, region=[f"{s}_spots" for s in sections], region_key="region", instance_key="instance_id"
    )
    sdata = SpatialData(images=images, shapes=shapes, tables={Key.TABLE: table})
    # the section coordinate systems are in µm: declared on the object too, so it holds without the table
    sdata.attrs["morphst"] = {"coordinate_systems": {s: 1.0 for s in sections}}
    return sdata
