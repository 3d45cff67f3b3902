"""`Translator`: a fitted morphology -> expression model, saved, checked for applicability, applied to new data."""
# One class, one file: its public API and docstrings; the work is in _predict, _apply, _io, _inputs and _features.

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ..._constants import Key
from ..._utils import records_params
from . import _apply
from ._applicability import ApplicabilityDomain
from ._features import context_caps, warn_caps
from ._inputs import fitted_inputs
from ._predict import check_domain, domain_features, groups_of, predict_scored, prediction_table
from ._recipe import Recipe

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


class Translator:
    """A fitted morphology -> expression model that can be saved and applied to new images.

    Made by :func:`fit_translator`. Holds the fitted estimator, the target genes, the feature recipe (``use_rep``,
    ``spatial_context``) and the patch / embedding parameters of the training data, so that
    :meth:`predict_sdata` and :meth:`predict_grid` can cut and embed patches of a new section in the same way.

    Attributes
    ----------
    estimator
        Fitted scikit-learn estimator mapping features ``(n, n_features)`` to ``(n, n_genes)``.
    genes
        Names of the predicted genes.
    recipe
        The :class:`~morphst.tl._translation._recipe.Recipe` it was fit with (``use_rep``, ``target``,
        ``spatial_context``, ``context_rep``, ``global_context``, ``scale_per_library``, ``library_key``, ...; the
        regressor as its description); its fields are also attributes of the translator.
    fit
        What the fit chose: ``gene_selection``, ``model_description``, ``n_train``, ``alpha``, ``stain_method``,
        ``spatial_context_capped``.
    params
        ``recipe`` and ``fit`` as one dict.
    blocks
        ``[(name, width), ...]``: the column blocks of the model input (``"patch"``, ``"context:<key>"``,
        ``"neighbours"``, ``"section"``).
    patch_params
        ``uns['patches']['params']`` of the training table (patch µm, px, context), or ``{}``.
    embed_params, context_embed_params
        ``uns[use_rep]['params']`` of the training table, and that of each ``context_rep`` key, or ``{}``.
    applicability
        The :class:`~morphst.tl._translation._applicability.ApplicabilityDomain` fit on the training features (how
        far new spots lie from them, calibrated on held-out training sections).
    stain_reference
        Arrays of the squidpy stain reference the training images were normalised to, or ``None``.
    """

    def __init__(
        self,
        estimator,
        genes: Sequence[str],
        *,
        recipe: dict,
        n_features: int,
        blocks: Sequence[Sequence],
        patch_params: dict | None = None,
        embed_params: dict | None = None,
        context_embed_params: dict | None = None,
        fit: dict | None = None,
        applicability: ApplicabilityDomain | dict | None = None,
        stain_reference: dict | None = None,
    ) -> None:
        self.estimator = estimator
        self.genes = [str(g) for g in genes]
        self.recipe = Recipe.from_record(recipe)
        self.n_features = int(n_features)
        self.blocks = [(str(n), int(w)) for n, w in blocks]
        self.patch_params = dict(patch_params or {})
        self.embed_params = dict(embed_params or {})
        self.context_embed_params = dict(context_embed_params or {})
        self.fit = dict(fit or {})
        if isinstance(applicability, dict):
            applicability = ApplicabilityDomain.from_state(applicability)
        self.applicability = applicability
        self.stain_reference = None if stain_reference is None else dict(stain_reference)

    def __repr__(self) -> str:
        ctx = f", spatial_context={self.spatial_context}" if self.spatial_context else ""
        return (
            f"Translator({len(self.genes)} genes from {self.use_rep!r} ({self.n_features} features){ctx}, "
            f"target={self.target!r})"
        )

    # ---- persistence --------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save to ``path`` in morphst's translator format (a JSON header and raw arrays; not a pickle).

        The file holds a format version and a sha256 checksum of its whole content, and is written to a temporary
        file in the same folder, then renamed, so an interrupted save never leaves a partial file at ``path``.
        Load it with :meth:`load`.

        Parameters
        ----------
        path
            File to write (any name; ``.morphst`` is a good suffix). An existing file is replaced.

        Raises
        ------
        TypeError
            If the estimator holds something other than arrays, numbers, strings and scikit-learn objects (e.g.
            a third-party model's compiled object), naming the attribute. ``"ridge"``, ``"mlp"``, ``"head"``,
            scikit-learn regressors such as :class:`~sklearn.linear_model.Ridge` or :class:`~sklearn.svm.SVR`,
            and ``"finetune"`` / :class:`~morphst.tl.LastBlockFinetune` with ``model`` a registry or timm name
            are supported; a :class:`~morphst.tl.LastBlockFinetune` fit with a torch module as ``model`` is not
            (fit with the model's name).
        """
        from ._io import TRANSLATOR_STATE, save_translator

        state = {k: getattr(self, k) for k in TRANSLATOR_STATE}
        save_translator(path, self.estimator, {**state, "recipe": self.recipe.record()}, self.applicability)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Translator:
        """Load a translator written by :meth:`save`.

        Nothing in the file is executed: arrays and JSON only, and estimators are rebuilt from scikit-learn classes
        and morphst's heads. A :class:`~morphst.tl.LastBlockFinetune` is rebuilt without its weights file or the
        hub: the architecture by its model name, then the saved weights of its block(s) and head(s).
        The checksum and the format version are checked first; a warning is logged when the file was written with
        another scikit-learn version.

        Parameters
        ----------
        path
            File written by :meth:`save`.

        Returns
        -------
        The :class:`Translator`, predicting exactly as the saved one did.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is truncated or damaged (checksum mismatch), is not a translator file, is in the old pickle
            format, is in a format version this morphst does not read, or holds a fine-tuned block whose
            architecture this morphst / timm cannot build; the message says what to do.
        """
        from ._io import read_translator

        state = read_translator(path)
        return cls(state.pop("estimator"), state.pop("genes"), **state)

    # ---- prediction ---------------------------------------------------------------------------------------------
    @property
    def params(self) -> dict:
        """The recipe and what the fit chose, as one dict (as in ``uns[key]['params']``)."""
        return records_params(**self.recipe.record(), **self.fit)

    @property
    def use_rep(self) -> str:
        """``obsm`` key of the features, ``"X_<model>"``."""
        return self.recipe.use_rep

    @property
    def target(self) -> str:
        """Scale of the predictions (e.g. ``"log1p_cp10k"``)."""
        return self.recipe.target

    @property
    def spatial_context(self) -> int | None:
        """``k`` of the neighbour-mean features, or ``None``."""
        return self.recipe.spatial_context

    @property
    def library_key(self) -> str | None:
        """``obs`` column of sections used in training (``None`` if none)."""
        return self.recipe.library_key

    @property
    def scale_per_library(self) -> bool:
        """Whether features are standardised within each section (see :func:`fit_translator`)."""
        return self.recipe.scale_per_library

    @property
    def context_rep(self) -> list[str]:
        """``obsm`` keys of the context-patch embeddings the model reads (``[]`` if none)."""
        return list(self.recipe.context_rep or ())

    @property
    def global_context(self) -> bool:
        """Whether the section's mean embedding is a model input."""
        return self.recipe.global_context

    def features(self, adata: AnnData, *, library_key: str | None = None, scaled: bool = True) -> np.ndarray:
        """The model input of ``adata``: ``obsm[use_rep]``, context patches, neighbour mean, section mean.

        The blocks of :attr:`blocks`, in that order. With ``scale_per_library``, standardised within each section of
        ``library_key`` (default: the training ``library_key`` if that column exists, else all observations as one
        section); ``scaled=False``: before it.
        """
        _check_table(adata)
        inputs = fitted_inputs(adata, self.use_rep, self.blocks, self.spatial_context)
        groups = groups_of(self, adata, library_key)
        warn_caps(context_caps(self.spatial_context, groups, adata.n_obs, strict=False), self.spatial_context)
        scale = self.scale_per_library and scaled
        return inputs.features(groups, global_context=self.global_context, scale=scale)[0]

    def predict(self, adata: AnnData, *, library_key: str | None = None) -> np.ndarray:
        """Predicted expression, ``(n_obs, n_genes)`` float32 on the target scale, from ``obsm[use_rep]``.

        With ``spatial_context``, neighbours come from ``obsm['spatial']`` within each ``library_key`` section
        (default: the training ``library_key`` if that column exists, else all spots together); so does the
        scaling of ``scale_per_library``. Warns (``UserWarning``) when a section lies outside the training domain
        (see :meth:`applicability_scores`).
        """
        return predict_scored(self, adata, library_key)[0]

    def applicability_scores(
        self, adata: AnnData, *, library_key: str | None = None
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """How far each observation lies from the training data, and a verdict per section.

        The score of a spot is the mean distance to its 5 nearest training spots in the translator's feature space
        (standardised, 50 principal components), divided by the 95th percentile of the same distance for held-out
        training sections (each against the others): above 1 is farther than 95 % of held-out training spots. A
        section is in the training domain when at most 10 % of its spots (twice the held-out share) score above 1
        (nearest-neighbour applicability domain, as in QSAR modelling: Sheridan et al. 2004; figures measured on
        HER2ST in :mod:`morphst.tl._translation._applicability`).

        Parameters
        ----------
        adata
            Observations with ``obsm[use_rep]`` (and ``obsm['spatial']`` with ``spatial_context``).
        library_key
            ``obs`` column of sections for the verdict (default: the training ``library_key`` if present).

        Returns
        -------
        ``(scores, verdict)``: ndarray ``(n_obs,)``; DataFrame indexed by section with ``n_spots``,
        ``median_score``, ``frac_beyond`` (share of spots above 1) and ``in_domain`` (bool).

        Raises
        ------
        ValueError
            If the translator has no applicability domain (saved by an older morphst: refit it), or the features
            do not match.
        TypeError
            If ``adata`` is not an AnnData (a SpatialData: pass its table, or use :meth:`predict_sdata`).
        """
        if self.applicability is None:
            msg = (
                "This translator has no applicability domain (saved by an older morphst); refit it with fit_translator."
            )
            raise ValueError(msg)
        f = domain_features(self, adata, self.features(adata, library_key=library_key), library_key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            scores, verdict = check_domain(self, f, groups_of(self, adata, library_key))
        return scores, verdict

    def predict_adata(self, adata: AnnData, *, library_key: str | None = None) -> AnnData:
        """A new AnnData: ``X`` = predictions ``(n_obs, n_genes)``, ``obs``/``obsm`` copied from ``adata``.

        Also ``obs['applicability_score']`` and ``uns['morphst_translation']`` (see :meth:`predict_sdata`).
        """
        return prediction_table(self, adata, library_key, {})

    def predict_sdata(
        self,
        sdata: SpatialData,
        *,
        shapes_key: str | Sequence[str] | None = None,
        image_key: str | None = None,
        table_key: str = Key.PREDICTED_TABLE,
        model: str | None = None,
        weights: str | os.PathLike | None = None,
        patch_size: float | None = None,
        target_px: int | None = None,
        context_sizes_um: Sequence[float] | None = None,
        um_per_unit: float | None = None,
        um_per_px: float | None = None,
        batch_size: int = 64,
        device: str | None = None,
        dtype: Literal["auto", "float32", "bfloat16"] = "auto",
        overwrite: bool = False,
        inplace: bool = True,
    ) -> AnnData | None:
        """Predict expression for every shape of a SpatialData that has an image but no expression.

        Builds a table annotating ``shapes_key``, cuts patches with :func:`morphst.pp.extract_patches` and the training
        patch geometry (µm side, px, context), embeds them with :func:`morphst.tl.embed_patches` and the training
        encoder (a translator fit on activations: :func:`morphst.tl.cache_activations`), and predicts (a new H&E section
        in, a predicted-expression table out). The transfer options stored in the translator are applied as in training:
        ``scale_per_library`` standardises the features within each shapes element; a stain reference
        (``fit_translator(stain_reference=...)``) normalises each image used to it first
        (``squidpy.experimental.im.normalize_stains``, Macenko et al. 2009; the tissue mask from
        ``squidpy.experimental.im.detect_tissue`` when the image has none; the normalised full-resolution image is held
        in memory, 3 bytes per pixel; ``sdata`` is not modified).

        Parameters
        ----------
        sdata
            SpatialData with an image and shapes (spots or cells), e.g. a section loaded without its table.
        shapes_key
            Shapes element(s) to predict. Default: every shapes element.
        image_key
            Image to cut patches from (default: the one sharing a coordinate system with the shapes).
        table_key
            Name of the table written.
        model, weights
            Encoder and weights; default: those recorded when the training features were embedded.
        patch_size
            Patch side, µm; default: the training patch side.
        target_px
            Patch side after resampling, px; default: the training value.
        context_sizes_um
            Context fields of view, µm; default: the training value.
        um_per_unit, um_per_px
            Scale of ``sdata`` (see :func:`morphst.pp.extract_patches`); default: resolved from ``sdata`` itself
            (its scale is never carried over from the training data).
        batch_size, device, dtype
            Passed to :func:`morphst.tl.embed_patches`.
        overwrite
            Replace an existing table ``table_key``.
        inplace
            Add the table to ``sdata`` (``True``) or return it.

        Returns
        -------
        ``None`` (``inplace=True``) or the table. The table has ``X`` : ndarray, shape ``(n_shapes, n_genes)``,
        float32, predicted expression on the target scale; ``obs['region']``, ``obs['instance_id']``;
        ``obsm[use_rep]`` (the embeddings); ``obsm['spatial']`` (shape centroids in the shapes' own units); the
        patch slots of :func:`morphst.pp.extract_patches`; ``uns['morphst_translation']['params']``;
        ``obs['applicability_score']`` (float32, the applicability score of :meth:`applicability_scores`: above 1
        is farther from the training data than 95 % of held-out training spots) and
        ``uns['morphst_translation']['applicability']`` (verdict per shapes element). A ``UserWarning`` names the
        shapes elements out of the training domain.

        Raises
        ------
        KeyError
            Unknown shapes key.
        ValueError
            An existing ``table_key`` without ``overwrite``, or unknown embedding recipe (pass ``model=``).
        """
        return _apply.predict_shapes(
            self, sdata, shapes_key=shapes_key, image_key=image_key, table_key=table_key, model=model,
            weights=weights, patch_size=patch_size, target_px=target_px, context_sizes_um=context_sizes_um,
            um_per_unit=um_per_unit, um_per_px=um_per_px, batch_size=batch_size, device=device, dtype=dtype,
            overwrite=overwrite, inplace=inplace,
        )  # fmt: skip

    def predict_grid(
        self,
        sdata: SpatialData,
        spacing_um: float = 100.0,
        *,
        shapes_key: str | Sequence[str] | None = None,
        image_key: str | None = None,
        max_distance_um: float | None = None,
        grid_suffix: str = "_grid",
        table_key: str = f"{Key.PREDICTED_TABLE}_grid",
        overwrite: bool = False,
        **kwargs,
    ) -> None:
        """Predict expression on a dense grid of patch centres between and around the measured spots.

        Super-resolution in the sense of ST-Net / BLEEP (He et al. 2020; Xie et al. 2023): a square grid with
        ``spacing_um`` µm between centres, anchored on the lower corner of each shapes element's spots (axis-aligned
        in its coordinate system), keeping the grid points that lie within ``max_distance_um`` of a spot, is added as circles (``radius = spacing_um / 2``) in the spots'
        coordinate system, and :meth:`predict_sdata` predicts every grid point.

        Parameters
        ----------
        sdata
            SpatialData with image(s) and the measured spots.
        spacing_um
            Distance between neighbouring grid centres, µm (converted to coordinate units with the scale resolved
            for the shapes: see :func:`morphst.pp.extract_patches`, Units; ``um_per_unit=`` in ``kwargs`` overrides).
        shapes_key
            Spots that define the area (default: every shapes element not ending in ``grid_suffix``).
        image_key
            Image to cut patches from (default: the one sharing a coordinate system with the shapes).
        max_distance_um
            Keep grid points at most this far from the nearest spot, µm. Default: the median distance between
            neighbouring spots (the spot pitch, 200 µm for legacy ST), so the grid fills the gaps between spots
            and one pitch around them.
        grid_suffix
            The grid of shapes element ``S`` is written as ``shapes[S + grid_suffix]``.
        table_key
            Name of the table written (annotating all grid elements).
        overwrite
            Replace existing grid shapes and table.
        **kwargs
            Passed to :meth:`predict_sdata` (``model``, ``weights``, ``batch_size``, ``device``, ``dtype``, ...).

        Returns
        -------
        Nothing; sets ``sdata.shapes[S + grid_suffix]`` (circles in the units of ``S``'s coordinate system, with an
        identity transformation to it) and ``sdata.tables[table_key]`` (see :meth:`predict_sdata`).

        Raises
        ------
        KeyError
            Unknown shapes key.
        ValueError
            Non-positive ``spacing_um``, existing outputs without ``overwrite``, a shapes element without a
            coordinate system, or a scale (µm per coordinate unit) that nothing determines.
        """
        _apply.predict_on_grid(
            self, sdata, spacing_um, shapes_key=shapes_key, image_key=image_key, max_distance_um=max_distance_um,
            grid_suffix=grid_suffix, table_key=table_key, overwrite=overwrite, **kwargs,
        )  # fmt: skip


def _check_table(adata) -> None:
    """``TypeError`` unless ``adata`` is an AnnData (a SpatialData: say which table or method to use)."""
    from anndata import AnnData

    if isinstance(adata, AnnData):
        return
    if type(adata).__name__ == "SpatialData":
        msg = (
            "`predict`, `predict_adata`, `applicability_scores` and `features` of a Translator take a table (AnnData) "
            "with the features in `obsm`: pass `sdata.tables['table']`, or use `tr.predict_sdata(sdata)` to cut and "
            "embed patches from the image."
        )
    else:
        msg = f"A Translator predicts from an AnnData with the features in `obsm`, got {type(adata).__name__}."
    raise TypeError(msg)
