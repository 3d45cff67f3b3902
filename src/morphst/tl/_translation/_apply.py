"""Applying a `Translator` to a SpatialData: new sections without expression, and dense grids of patches."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._utils import list_keys, obs_noun, save_results
from ..._utils._checks import check_sdata
from ..._utils._units import ATTRS_KEY, resolve_um_per_unit
from ...pp._patches import DEFAULT_PATCH_SIZE_UM, DEFAULT_TARGET_PX
from ._predict import prediction_table

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def embed_section(
    sdata: SpatialData,
    keys: list[str],
    *,
    image_key: str | None,
    table_key: str,
    embeds: list[tuple[str, dict]],
    patch_kwargs: dict,
    stain: dict | None,
    um_per_unit: float | None,
    um_per_px: float | None,
    batch_size: int,
    device: str | None,
    dtype: str,
    declared: dict[str, float] | None = None,
) -> AnnData:
    """A table annotating the shapes ``keys`` of ``sdata`` with patches cut and embedded as for the training data.

    ``embeds``: ``[(obsm key, embed_patches keyword arguments), ...]`` (the main representation, then each context
    representation); ``patch_kwargs``: the training patch geometry for :func:`morphst.pp.extract_patches`;
    ``stain``: the stain reference to normalise the images to first (or ``None``); ``declared``: ``{coordinate
    system: µm per unit}`` declared for the patches where ``sdata`` declares nothing. ``sdata`` is not modified.
    """
    import anndata as ad
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    from ...pp import extract_patches
    from .._embed import embed_patches

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
    tmp_table = ad.AnnData(obs=obs_df, obsm={Key.SPATIAL: np.vstack(xy).astype(np.float64)})
    tmp_table = TableModel.parse(tmp_table, region=keys, region_key="region", instance_key="instance_id")
    work = SpatialData(
        images=dict(sdata.images.items()),
        shapes={k: sdata.shapes[k] for k in keys},
        tables={table_key: tmp_table},
    )
    work.attrs.update(sdata.attrs)  # unit declarations and reader metadata (spatialdata_io_reader)
    if declared:  # a new dict: the declarations of sdata stay as they are
        own = dict(work.attrs.get(ATTRS_KEY, {}))
        work.attrs[ATTRS_KEY] = {**own, "coordinate_systems": {**declared, **own.get("coordinate_systems", {})}}
    if stain is not None:  # the training images were normalised to this reference: so is this one
        _normalise_stains(work, keys, image_key, stain)
    extract_patches(
        work, image_key=image_key, table_key=table_key, um_per_unit=um_per_unit, um_per_px=um_per_px, **patch_kwargs
    )
    for key, kw in embeds:
        if kw.get("activations"):  # the translator was fit on cached activations (regressor="finetune")
            _activations(work, key, kw, table_key=table_key, batch_size=batch_size, device=device)
            continue
        embed_patches(work, table_key=table_key, key_added=key, batch_size=batch_size, device=device, dtype=dtype, **kw)
    return work.tables[table_key]


def _activations(work: SpatialData, key: str, kw: dict, *, table_key: str, batch_size: int, device) -> None:
    """:func:`morphst.tl.cache_activations` on the new section, refused if its weights are not the training's."""
    from .._finetune import cache_activations

    cache_activations(
        work, kw["model"], weights=kw["weights"], table_key=table_key, context_index=kw["context_index"],
        n_blocks=kw["n_blocks"], batch_size=batch_size, device=device, key_added=key,
    )  # fmt: skip
    got = work.tables[table_key].uns[key]["params"].get("weights_sha256")
    if kw["weights_sha256"] is not None and got != kw["weights_sha256"]:
        msg = (
            f"The activations `obsm[{key!r}]` of the training data came from weights with sha256 "
            f"{str(kw['weights_sha256'])[:12]}..., these from {str(got)[:12]}...: pass `weights=` naming the file "
            "the translator was fit with."
        )
        raise ValueError(msg)


def predict_shapes(
    tr,
    sdata: SpatialData,
    *,
    shapes_key: str | Sequence[str] | None,
    image_key: str | None,
    table_key: str,
    model: str | None,
    weights: str | os.PathLike | None,
    patch_size: float | None,
    target_px: int | None,
    context_sizes_um: Sequence[float] | None,
    um_per_unit: float | None,
    um_per_px: float | None,
    batch_size: int,
    device: str | None,
    dtype: str,
    overwrite: bool,
    inplace: bool,
) -> AnnData | None:
    """:meth:`Translator.predict_sdata` (see there): cut, embed and predict the shapes ``shapes_key`` of ``sdata``."""
    from spatialdata.models import TableModel

    check_sdata(sdata, "Translator.predict_sdata")
    keys = shapes_keys(sdata, shapes_key)
    if table_key in sdata.tables and not overwrite and inplace:
        msg = f"Table {table_key!r} already exists; pass `overwrite=True` or another `table_key`."
        raise ValueError(msg)
    ekw = embed_kwargs(tr.embed_params, tr.use_rep, model, weights)
    embeds = [(tr.use_rep, ekw)] + [
        (k, embed_kwargs(tr.context_embed_params.get(k, {}), k, model, weights)) for k in tr.context_rep
    ]
    pkw = patch_kwargs(tr.patch_params, patch_size, target_px, context_sizes_um)
    start = logg.info(f"predicting {len(tr.genes)} genes for shapes {keys}")
    t = embed_section(
        sdata, keys, image_key=image_key, table_key=table_key, embeds=embeds, patch_kwargs=pkw,
        stain=tr.stain_reference, um_per_unit=um_per_unit, um_per_px=um_per_px, batch_size=batch_size,
        device=device, dtype=dtype, declared=_tile_scales(sdata, keys),
    )  # fmt: skip
    extra = {
        "shapes_key": keys,
        "image_key": image_key,
        **patch_record(pkw),
        **{f"embed_{k}": v for k, v in ekw.items()},
        "dtype": dtype,
    }
    out = prediction_table(tr, t, "region", extra, uns={k: v for k, v in t.uns.items() if k != "spatialdata_attrs"})
    out = TableModel.parse(out, region=keys, region_key="region", instance_key="instance_id")
    summary = f"{out.n_obs} {obs_noun(out, out.n_obs)} x {out.n_vars} genes ({tr.target})"
    if not inplace:
        logg.info(f"    finished: {summary}; returned, not added", time=start)
        return out
    save_results(sdata, [("tables", table_key, out)], start=start, summary=summary)
    return None


def predict_on_grid(
    tr,
    sdata: SpatialData,
    spacing_um: float,
    *,
    shapes_key: str | Sequence[str] | None,
    image_key: str | None,
    max_distance_um: float | None,
    grid_suffix: str,
    table_key: str,
    overwrite: bool,
    **kwargs,
) -> None:
    """:meth:`Translator.predict_grid` (see there): add the grid shapes, then predict them with ``predict_sdata``.

    The patches of the grid are cut at the scale the grid was built with (``um_per_unit``): the rules that read
    the scale from the shapes' size (Visium spots, Visium HD bins, spatialdata-io readers) do not hold for grid
    circles. If the prediction fails, the grid shapes are taken out again (those they replaced are put back).
    """
    check_sdata(sdata, "Translator.predict_grid")
    keys = grid_keys(sdata, spacing_um, shapes_key, grid_suffix, table_key, overwrite)
    new_keys = [k + grid_suffix for k in keys]
    start = logg.info(f"building {spacing_um:g} µm grids around {keys}")
    grids, scales = grid_shapes(
        sdata, spacing_um, keys, grid_suffix=grid_suffix, max_distance_um=max_distance_um,
        um_per_unit=kwargs.get("um_per_unit"),
    )  # fmt: skip
    kwargs["um_per_unit"] = _one_scale(scales)
    before = {gk: sdata.shapes[gk] for gk in grids if gk in sdata.shapes}
    for gk, shapes in grids.items():
        sdata.shapes[gk] = shapes
    try:
        tr.predict_sdata(
            sdata, shapes_key=new_keys, image_key=image_key, table_key=table_key, overwrite=overwrite, **kwargs
        )
    except BaseException:
        for gk in grids:  # a failed call leaves the SpatialData as it was
            del sdata.shapes[gk]
            if gk in before:
                sdata.shapes[gk] = before[gk]
        raise
    save_results(sdata, [], start=start, written=[("shapes", k) for k in new_keys] + [("tables", table_key)])


def _one_scale(scales: dict[str, float]) -> float:
    """The one µm per unit of the grids' coordinate systems (``{shapes key: µm per unit}``), else a ``ValueError``."""
    values = np.array(list(scales.values()), dtype=float)
    if not np.allclose(values, values[0], rtol=1e-6):
        shown = ", ".join(f"{k}: {v:.6g}" for k, v in scales.items())
        msg = (
            f"The shapes have coordinate systems of different scales (µm per unit: {shown}); the patches of one "
            "prediction are cut at one scale. Predict a grid per scale (`shapes_key=`, `table_key=`)."
        )
        raise ValueError(msg)
    return float(values[0])


def shapes_keys(sdata: SpatialData, shapes_key: str | Sequence[str] | None) -> list[str]:
    """The shapes elements to predict (default: all), or a ``KeyError`` listing the available ones."""
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
    return keys


def grid_keys(
    sdata: SpatialData, spacing_um: float, shapes_key, grid_suffix: str, table_key: str, overwrite: bool
) -> list[str]:
    """The shapes elements a grid is built around (see :meth:`Translator.predict_grid`), checked before any work."""
    if not spacing_um > 0:
        msg = f"`spacing_um` must be positive (µm), got {spacing_um}."
        raise ValueError(msg)
    if shapes_key is None:
        keys = [k for k in sdata.shapes if not k.endswith(grid_suffix)]
    else:
        keys = [shapes_key] if isinstance(shapes_key, str) else list(shapes_key)
    keys = shapes_keys(sdata, keys)
    names = [k + grid_suffix for k in keys]
    if not overwrite and (any(g in sdata.shapes for g in names) or table_key in sdata.tables):
        msg = f"Grid shapes {names} or table {table_key!r} already exist; pass `overwrite=True`."
        raise ValueError(msg)
    return keys


def grid_shapes(
    sdata: SpatialData,
    spacing_um: float,
    keys: list[str],
    *,
    grid_suffix: str,
    max_distance_um: float | None,
    um_per_unit: float | None,
) -> tuple[dict, dict[str, float]]:
    """The grid circles of each shapes element (see :meth:`Translator.predict_grid`) and their scale.

    Returns ``({S + grid_suffix: shapes}, {S + grid_suffix: µm per unit of its coordinate system})``.
    """
    from sklearn.neighbors import NearestNeighbors
    from spatialdata import transform
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity, get_transformation

    grids, scales = {}, {}
    for k in keys:
        gk = k + grid_suffix
        tf = get_transformation(sdata.shapes[k], get_all=True)
        if not tf:
            msg = f"Shapes {k!r} have no coordinate system."
            raise ValueError(msg)
        images_cs = {c for im in sdata.images.values() for c in get_transformation(im, get_all=True)}
        cs = next((c for c in tf if c in images_cs), next(iter(tf)))
        units = resolve_um_per_unit(sdata, _table_annotating(sdata, k), k, cs, um_per_unit=um_per_unit)
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
        scales[gk] = float(u)
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
    return grids, scales


def _tile_scales(sdata: SpatialData, keys: list[str]) -> dict[str, float]:
    """``{coordinate system: µm per unit}`` that :func:`morphst.pp.tile_tissue` recorded for the tiles among ``keys``.

    The rules that read the scale from the shapes' size (a Visium spot's diameter) do not hold for tiles.
    """
    out = {}
    for k in keys:
        rec = _table_annotating(sdata, k).uns.get("tiles")
        if isinstance(rec, dict) and "coordinate_system" in rec and "um_per_unit" in rec:
            out[str(rec["coordinate_system"])] = float(rec["um_per_unit"])
    return out


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
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    from ..._utils._quiet import import_squidpy
    from ...pp._patches import normalize_stains_checked, stain_images

    sqe = import_squidpy().experimental.im

    ref = sqe.StainReference(**{k: (v if k == "method" else np.asarray(v)) for k, v in state.items()})
    for name in stain_images(work, shapes_keys, image_key):  # the images extract_patches reads, checked first
        logg.info(f"    normalising the stains of {name!r} to the translator's {ref.method} reference (squidpy)")
        da = normalize_stains_checked(work, name, ref)
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


def embed_kwargs(params: dict, rep: str, model, weights) -> dict:
    """``embed_patches`` arguments that made ``obsm[rep]`` for the training data, ``model``/``weights`` first.

    ``params``: ``uns[rep]['params']`` of the training table as :func:`morphst.tl.embed_patches` wrote it (``{}``:
    not embedded by morphst, then ``model=`` is needed). Keys absent from it were ``None`` (not recorded). Written by
    :func:`morphst.tl.cache_activations` instead: its arguments, marked ``"activations": True``.
    """
    if params and "activation_shape" in params:  # written by cache_activations: the trunk runs again
        return {
            "activations": True,
            "model": params["model"] if model is None else model,
            "weights": weights,
            "weights_sha256": params.get("weights_sha256"),
            "context_index": params.get("context_index"),
            "n_blocks": int(params.get("n_blocks") or 1),
        }
    if model is None:
        if not params or params["model_is_callable"]:
            msg = (
                f"The translator does not know how `obsm[{rep!r}]` was made (no embedding parameters "
                "were stored with the training data); pass `model=` (and `weights=`) as given to "
                "`mst.tl.embed_patches`."
            )
            raise ValueError(msg)
        model = params["model"]
    if weights is None and params:
        path = params.get("weights_path")
        if params["weights_random"]:
            weights = "random"
        elif path is not None and os.path.exists(str(path)):
            weights = str(path)
    rs = params.get("random_state")
    return {
        "model": model,
        "weights": weights,
        "context_index": params.get("context_index"),
        "random_state": 0 if rs is None else int(rs),
    }


def patch_kwargs(patch_params: dict, patch_size_um, target_px, context_sizes_um) -> dict:
    """``extract_patches`` arguments of the training patch geometry, the given values first.

    ``patch_params``: ``uns['patches']['params']`` of the training table as :func:`morphst.pp.extract_patches`
    wrote it (``{}``: no patches there, then the defaults of ``extract_patches``). Keys absent were ``None``.
    """
    pp = patch_params or {"patch_size": DEFAULT_PATCH_SIZE_UM, "target_px": DEFAULT_TARGET_PX}
    out = {
        "patch_size": float(patch_size_um if patch_size_um is not None else pp["patch_size"]),
        "target_px": int(target_px if target_px is not None else pp["target_px"]),
        "context_sizes_um": context_sizes_um if context_sizes_um is not None else (pp.get("context_sizes_um") or None),
    }
    # the training image's scale (um_per_px / um_per_unit) is not carried: the new object's is resolved on it
    for k in ("channels", "intensity_range", "fill_value"):
        if pp.get(k) is not None:
            out[k] = tuple(pp[k]) if k == "intensity_range" else pp[k]
    return out


def patch_record(pkw: dict) -> dict:
    """The patch geometry of :func:`patch_kwargs` as recorded in the prediction table (``patch_size_um``, ...)."""
    return {("patch_size_um" if k == "patch_size" else k): v for k, v in pkw.items()}
