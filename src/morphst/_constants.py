"""Default keys and physical constants, in one place (as squidpy's ``_constants``)."""

from __future__ import annotations

from typing import Final


class Key:
    """Default keys that morphst reads and writes."""

    #: Table of a SpatialData that morphst reads and writes by default (``table_key``).
    TABLE: Final = "table"
    #: ``obs`` column holding the section (sample, library) of each spot: the default ``library_key``.
    LIBRARY: Final = "section"
    #: ``obs`` column holding the authors' (reference) labels: the default ``annotation_key``.
    ANNOTATION: Final = "cluster"
    #: ``obsm`` key of spot coordinates (squidpy's ``spatial_key``).
    SPATIAL: Final = "spatial"
    #: ``layers`` key of log-normalised expression written by :func:`morphst.pp.normalize` (the translation target).
    TARGET: Final = "log1p_cp10k"
    #: Default patch encoder of :func:`morphst.tl.embed_patches` and the ``obsm`` key it writes.
    DEFAULT_MODEL: Final = "efficientnet_lite0"
    DEFAULT_REP: Final = "X_efficientnet_lite0"
    #: ``obsm``/``uns`` key of :func:`morphst.tl.fuse`.
    FUSED: Final = "X_fused"
    #: ``obs`` column of :func:`morphst.tl.domains`.
    DOMAIN: Final = "domain"
    #: ``uns``/``varm`` key of :func:`morphst.tl.quadrants` and :func:`morphst.tl.gene_quadrants`.
    QUADRANTS: Final = "quadrants"
    GENE_QUADRANTS: Final = "gene_quadrants"
    #: ``uns`` key for dataset-level metadata written by :mod:`morphst.datasets`.
    DATASET: Final = "morphst_dataset"
    #: ``uns`` key with patch geometry written by :func:`morphst.pp.extract_patches`.
    PATCHES: Final = "patches"
    #: ``var`` column of target genes written by :func:`morphst.pp.select_genes`.
    MORPH_TARGET: Final = "morph_target"
    #: ``obs`` columns of the patch centres, in px of the image, written by :func:`morphst.pp.extract_patches`.
    PATCH_X: Final = "patch_x_px"
    PATCH_Y: Final = "patch_y_px"
    #: ``obs`` column of the share of each patch inside the image, written by :func:`morphst.pp.extract_patches`.
    PATCH_VALID: Final = "patch_valid_fraction"
    #: ``layers``/``uns`` key for out-of-fold predictions of :func:`morphst.tl.predict_expression`.
    PREDICTED: Final = "predicted"
    #: Table written by :meth:`morphst.tl.Translator.predict_sdata` (its default ``table_key``).
    PREDICTED_TABLE: Final = "morph_predicted"
    #: ``uns`` key of the parameters and applicability verdicts of a :class:`morphst.tl.Translator`'s predictions.
    TRANSLATION: Final = "morphst_translation"
    #: ``obs`` column of the applicability score written by a :class:`morphst.tl.Translator`'s predictions (tables
    #: written by older versions hold it as ``"translator_distance"``, read by :func:`morphst.pl.applicability`).
    APPLICABILITY_SCORE: Final = "applicability_score"

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
