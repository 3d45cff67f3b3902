"""Default keys and physical constants, in one place (as squidpy's ``_constants``)."""

from __future__ import annotations

from typing import Final


class Key:
    """Default keys that morphst reads and writes."""

    TABLE: Final = "table"
    #: ``obs`` column holding the section (sample) of each spot.
    SECTION: Final = "section"
    #: ``obs`` column holding the authors' (reference) cluster labels.
    CLUSTER: Final = "cluster"
    #: ``uns`` key for dataset-level metadata written by :mod:`morphst.datasets`.
    DATASET: Final = "morphst_dataset"
    #: ``uns`` key with patch geometry written by :func:`morphst.pp.extract_patches`.
    PATCHES: Final = "patches"
    #: ``var`` column of target genes written by :func:`morphst.pp.select_genes`.
    MORPH_TARGET: Final = "morph_target"
    #: ``layers``/``uns`` key for out-of-fold predictions of :func:`morphst.tl.predict_expression`.
    PREDICTED: Final = "predicted"

    @staticmethod
    def obsm_embedding(model: str) -> str:
        """``obsm`` key of the patch embeddings of ``model``: ``X_<model>``."""
        return f"X_{model}"


#: Legacy Spatial Transcriptomics (Ståhl et al., Science 2016): spot diameter, µm.
ST_SPOT_DIAMETER_UM: Final = 100.0
#: Legacy Spatial Transcriptomics: centre-to-centre spacing of the spot grid, µm.
ST_SPOT_SPACING_UM: Final = 200.0
#: 10x Visium: spot diameter, µm.
VISIUM_SPOT_DIAMETER_UM: Final = 55.0
#: 10x Visium: centre-to-centre spacing, µm.
VISIUM_SPOT_SPACING_UM: Final = 100.0
