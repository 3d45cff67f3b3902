"""Applying a `Translator` to a SpatialData: new sections without expression, and dense grids of patches."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._utils import list_keys, records_params
from ..._utils._units import resolve_um_per_unit

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData
from ._folds import _groups

if TYPE_CHECKING:
    from ._translator import Translator


def predict_sdata(
    self: Translator,
    sdata: SpatialData,
    *,
    shapes_key: str | Sequence[str] | None = None,
    image_key: str | None = None,
    table_key: str = "morph_predicted",
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

    Builds a table annotating ``shapes_key``, cuts patches with :func:`morphst.pp.extract_patches` and the
    training patch geometry (µm side, px, context), embeds them with :func:`morphst.tl.embed_patches` and the
    training encoder, and predicts (a new H&E section in, a predicted-expression table out). The transfer options
    stored in the translator are applied as in training: ``scale_per_library`` standardises the features within
    each shapes element; a stain reference (``fit_translator(stain_reference=...)``) normalises each image used
    to it first (``squidpy.experimental.im.normalize_stains``, Macenko et al. 2009; the tissue mask from
    ``squidpy.experimental.im.detect_tissue`` when the image has none; the normalised full-resolution image is
    held in memory, 3 bytes per pixel; ``sdata`` is not modified).

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
    ``obs['translator_distance']`` (float32, the applicability score of :meth:`applicability_scores`: above 1
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
    import anndata as ad
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    from ...pp import extract_patches
    from .._embed import embed_patches

    keys = (
        list(sdata.shapes.keys())
        if shapes_key is None
        else [shapes_key]
        if isinstance(shapes_key, str)
        else list(shapes_key)
    )
    missing = [k for k in keys if k not in sdata.shapes]
    if missing or not keys:
        msg = f"Shapes {missing or keys} not found. Available shapes: {list_keys(sdata.shapes.keys())}."
        raise KeyError(msg)
    if table_key in sdata.tables and not overwrite and inplace:
        msg = f"Table {table_key!r} already exists; pass `overwrite=True` or another `table_key`."
        raise ValueError(msg)
    ekw = self._embed_kwargs(model, weights)
    pkw = self._patch_kwargs(patch_size, target_px, context_sizes_um)

    start = logg.info(f"predicting {len(self.genes)} genes for shapes {keys}")
    obs, xy = [], []
    for k in keys:
        gdf = sdata.shapes[k]
        geom = gdf.geometry
        c = (
            np.column_stack([geom.x, geom.y])
            if (geom.geom_type == "Point").all()
            else np.column_stack([geom.centroid.x, geom.centroid.y])
        )
        obs.append(pd.DataFrame({"region": k, "instance_id": np.asarray(gdf.index)}))
        xy.append(c)
    obs_df = pd.concat(obs, ignore_index=True)
    obs_df.index = [f"{r}-{i}" for r, i in zip(obs_df["region"], obs_df["instance_id"], strict=True)]
    obs_df["region"] = pd.Categorical(obs_df["region"], categories=keys)
    tmp_table = ad.AnnData(obs=obs_df, obsm={"spatial": np.vstack(xy).astype(np.float64)})
    tmp_table = TableModel.parse(tmp_table, region=keys, region_key="region", instance_key="instance_id")
    work = SpatialData(
        images=dict(sdata.images.items()),
        shapes={k: sdata.shapes[k] for k in keys},
        tables={table_key: tmp_table},
    )
    work.attrs.update(sdata.attrs)  # unit declarations and reader metadata (spatialdata_io_reader)
    if self.stain_reference is not None:  # the training images were normalised to this reference: so is this one
        _normalise_stains(work, keys, image_key, self.stain_reference)
    extract_patches(work, image_key=image_key, table_key=table_key, um_per_unit=um_per_unit, um_per_px=um_per_px, **pkw)
    embed_patches(
        work,
        table_key=table_key,
        key_added=self.use_rep,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        **ekw,
    )
    for key in self.context_rep:  # context-patch embeddings, each as it was made for the training data
        ckw = self._embed_kwargs(model, weights, self.context_embed_params.get(key, {}), key)
        embed_patches(
            work, table_key=table_key, key_added=key, batch_size=batch_size, device=device, dtype=dtype, **ckw
        )
    t = work.tables[table_key]
    pred = self.predict(t, library_key="region")  # warns when a shapes element lies out of the training domain
    out = ad.AnnData(
        pred,
        obs=t.obs.copy(),
        var=pd.DataFrame(index=pd.Index(self.genes, name="gene")),
        obsm={k: np.asarray(v) for k, v in t.obsm.items()},
        uns={k: v for k, v in t.uns.items() if k != "spatialdata_attrs"},
    )
    out.uns["morphst_translation"] = {
        "params": records_params(
            target=self.target,
            **self._summary(),
            shapes_key=keys,
            image_key=image_key,
            **{f"patch_{k}": v for k, v in pkw.items()},
            **{f"embed_{k}": v for k, v in ekw.items()},
            dtype=dtype,
        )
    }
    self._write_domain(out, self.features(t, library_key="region"), _groups(t, "region"), "region")
    out = TableModel.parse(out, region=keys, region_key="region", instance_key="instance_id")
    logg.info(f"    finished: table {table_key!r} ({out.n_obs} x {out.n_vars}, {self.target})", time=start)
    if not inplace:
        return out
    sdata.tables[table_key] = out
    return None


def predict_grid(
    self: Translator,
    sdata: SpatialData,
    spacing_um: float = 100.0,
    *,
    shapes_key: str | Sequence[str] | None = None,
    image_key: str | None = None,
    max_distance_um: float | None = None,
    grid_suffix: str = "_grid",
    table_key: str = "morph_predicted_grid",
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
    from sklearn.neighbors import NearestNeighbors
    from spatialdata import transform
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity, get_transformation

    if not spacing_um > 0:
        msg = f"`spacing_um` must be positive (µm), got {spacing_um}."
        raise ValueError(msg)
    if shapes_key is None:
        keys = [k for k in sdata.shapes if not k.endswith(grid_suffix)]
    else:
        keys = [shapes_key] if isinstance(shapes_key, str) else list(shapes_key)
    missing = [k for k in keys if k not in sdata.shapes]
    if missing or not keys:
        msg = f"Shapes {missing or keys} not found. Available shapes: {list_keys(sdata.shapes.keys())}."
        raise KeyError(msg)
    grid_keys = [k + grid_suffix for k in keys]
    if not overwrite and (any(g in sdata.shapes for g in grid_keys) or table_key in sdata.tables):
        msg = f"Grid shapes {grid_keys} or table {table_key!r} already exist; pass `overwrite=True`."
        raise ValueError(msg)
    start = logg.info(f"building {spacing_um:g} µm grids around {keys}")
    grids = {}
    for k, gk in zip(keys, grid_keys, strict=True):
        tf = get_transformation(sdata.shapes[k], get_all=True)
        if not tf:
            msg = f"Shapes {k!r} have no coordinate system."
            raise ValueError(msg)
        images_cs = {c for im in sdata.images.values() for c in get_transformation(im, get_all=True)}
        cs = next((c for c in tf if c in images_cs), next(iter(tf)))
        units = resolve_um_per_unit(sdata, _table_annotating(sdata, k), k, cs, um_per_unit=kwargs.get("um_per_unit"))
        u = units.um_per_unit  # µm per coordinate unit of cs
        g = transform(sdata.shapes[k], to_coordinate_system=cs)
        xy = np.column_stack([g.geometry.centroid.x, g.geometry.centroid.y]) * u  # µm
        if len(xy) >= 2:
            d, _ = NearestNeighbors(n_neighbors=2).fit(xy).kneighbors(xy)
            pitch = float(np.median(d[:, 1]))
        else:
            pitch = float(spacing_um)
        reach = float(max_distance_um) if max_distance_um is not None else pitch
        # anchored on the spots' lower corner, so a spacing that divides the spot pitch passes through spots
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        steps = [
            np.arange(np.floor(-reach / spacing_um), np.ceil((hi[d] - lo[d] + reach) / spacing_um) + 1) for d in (0, 1)
        ]
        gx, gy = lo[0] + spacing_um * steps[0], lo[1] + spacing_um * steps[1]
        pts = np.column_stack([a.ravel() for a in np.meshgrid(gx, gy)])
        dist, _ = NearestNeighbors(n_neighbors=1).fit(xy).kneighbors(pts)
        pts = pts[dist[:, 0] <= reach + 1e-9]
        if len(pts) == 0:
            msg = f"No grid point of {k!r} lies within {reach:g} µm of a spot; increase `max_distance_um`."
            raise ValueError(msg)
        grids[gk] = ShapesModel.parse(
            pts / u,  # back to coordinate units
            geometry=0,
            radius=np.full(len(pts), spacing_um / 2.0 / u),
            index=np.arange(len(pts)),
            transformations={cs: Identity()},
        )
        logg.info(
            f"    {gk}: {len(pts)} grid points ({spacing_um:g} µm, within {reach:g} µm of a spot, in {cs!r}; "
            f"{u:.6g} µm per unit: {units.source})"
        )
    for gk, shapes in grids.items():
        sdata.shapes[gk] = shapes
    self.predict_sdata(
        sdata, shapes_key=grid_keys, image_key=image_key, table_key=table_key, overwrite=overwrite, **kwargs
    )
    logg.info(f"    finished: added shapes {grid_keys} and table {table_key!r}", time=start)


def _table_annotating(sdata: SpatialData, region: str) -> AnnData:
    """The first table of ``sdata`` that annotates shapes ``region`` (for scale factors), else an empty AnnData."""
    import anndata as ad
    from spatialdata.models import get_table_keys

    for t in sdata.tables.values():
        if "spatialdata_attrs" in t.uns:
            r = get_table_keys(t)[0]
            if region in ([r] if isinstance(r, str) else list(r)):
                return t
    return ad.AnnData()


def _normalise_stains(work: SpatialData, shapes_keys: list[str], image_key: str | None, state: dict) -> None:
    """Replace the images of ``work`` that the shapes use by their stain-normalised version (squidpy)."""
    import squidpy.experimental.im as sqe
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    ref = sqe.StainReference(**{k: (v if k == "method" else np.asarray(v)) for k, v in state.items()})
    if image_key is not None:
        names = [image_key]
    else:
        cs = {c for k in shapes_keys for c in get_transformation(work.shapes[k], get_all=True)}
        names = [k for k, im in work.images.items() if cs & set(get_transformation(im, get_all=True))]
    for name in names:
        if f"{name}_tissue" not in work.labels:
            sqe.detect_tissue(work, name)
        logg.info(f"    normalising the stains of {name!r} to the translator's {ref.method} reference (squidpy)")
        da = sqe.normalize_stains(work, name, ref, inplace=False)
        el = work.images[name]
        factors = None
        if hasattr(el, "children"):  # a pyramid: keep its downsampling factors
            shapes = [el[k]["image"].shape[-1] for k in sorted(el.children, key=lambda k: int(k.removeprefix("scale")))]
            factors = [max(1, round(a / b)) for a, b in itertools.pairwise(shapes)] or None
        work.images[name] = Image2DModel.parse(
            da.data.compute(),
            dims=("c", "y", "x"),
            c_coords=list(da.coords["c"].values) if "c" in da.coords else None,
            transformations=get_transformation(el, get_all=True),
            scale_factors=factors,
            chunks=(int(da.shape[0]), 1024, 1024),
        )
