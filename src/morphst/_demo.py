"""The main job behind ``morphst demo``: load HER2ST patient C and summarise it."""

from __future__ import annotations

import pandas as pd


def summary(sdata) -> pd.DataFrame:
    """Per-section summary of a morphst dataset: spots, genes, image size (px) and µm/px."""
    from ._utils import image_levels

    adata = sdata.tables["table"]
    mpp = adata.uns["morphst_dataset"]["um_per_px"]
    rows = []
    for s in adata.obs["section"].cat.categories:
        key = f"{s}_he"
        h, w = image_levels(sdata.images[key])[0].shape[1:] if key in sdata.images else (None, None)
        rows.append(
            {
                "section": s,
                "spots": int((adata.obs["section"] == s).sum()),
                "genes": adata.n_vars,
                "image_px (w x h)": f"{w} x {h}" if w else "no image",
                "um_per_px": round(mpp[s], 4),
            }
        )
    return pd.DataFrame(rows).set_index("section")


def run_demo(*, data_dir=None, out="morphst_output", sections=("C2", "C3", "C4", "C5", "C6")) -> None:
    """Run the demo on HER2ST patient C and print the results."""
    import morphst as mst

    sdata = mst.datasets.her2st(sections=sections, data_dir=data_dir)
    print("HER2ST patient C (Andersson et al., Nat. Commun. 2021), legacy ST")
    print(summary(sdata).to_string())
