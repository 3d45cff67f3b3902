"""Accept ``SpatialData | AnnData`` through one helper, and validate keys with actionable errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import Key

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def list_keys(keys) -> str:
    """Format available keys for an error message."""
    keys = sorted(map(str, keys))
    return "[" + ", ".join(repr(k) for k in keys) + "]" if keys else "[] (none)"


def did_you_mean(key: Any, keys) -> str:
    """``" Did you mean 'X_handcrafted'?"`` for the names in ``keys`` close to ``key`` (difflib), else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(key), [str(k) for k in keys], n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def get_adata(data: SpatialData | AnnData, table_key: str = Key.TABLE) -> AnnData:
    """Return the AnnData of ``data``: itself, or ``data.tables[table_key]`` for a SpatialData.

    Raises
    ------
    ValueError
        If ``table_key`` is not a table of the SpatialData (the message lists the tables).
    TypeError
        If ``data`` is neither an AnnData nor a SpatialData.
    """
    import sys

    from anndata import AnnData

    if isinstance(data, AnnData):
        return data
    # an AnnData-only session never imports spatialdata (seconds): a SpatialData exists only if it was imported
    sd = sys.modules.get("spatialdata")
    if sd is not None and isinstance(data, sd.SpatialData):
        if table_key not in data.tables:
            msg = (
                f"Table {table_key!r} not found in the SpatialData. Available tables: {list_keys(data.tables)}."
                f"{did_you_mean(table_key, data.tables)}"
            )
            raise ValueError(msg)
        return data.tables[table_key]
    msg = f"Expected an AnnData or a SpatialData, got {type(data).__name__}."
    raise TypeError(msg)


def check_coordinates(adata: AnnData, spatial_key: str, *, needed_by: str = "") -> np.ndarray:
    """Return the spatial coordinates ``adata.obsm[spatial_key][:, :2]`` as float64, shape ``(n_obs, 2)``.

    Raises
    ------
    KeyError
        If ``spatial_key`` is not in ``obsm`` (the message lists what is; ``needed_by`` says which option needs it).
    ValueError
        If the coordinates hold NaN/inf or have fewer than 2 columns.
    """
    if spatial_key not in adata.obsm:
        why = f" (needed by {needed_by})" if needed_by else ""
        msg = (
            f"Spatial coordinates {spatial_key!r} not found in `adata.obsm`{why}. Available: "
            f"{list_keys(adata.obsm.keys())}. Pass `spatial_key=` (coordinates of shape (n_obs, 2))."
        )
        raise KeyError(msg)
    coords = check_obsm(adata, spatial_key)
    if coords.shape[1] < 2:
        msg = f"`adata.obsm[{spatial_key!r}]` must have 2 columns (x, y), got shape {coords.shape}."
        raise ValueError(msg)
    return np.asarray(coords[:, :2], dtype=np.float64)


def check_obsm(adata: AnnData, use_rep: str, *, hint: str = "") -> np.ndarray:
    """Return ``adata.obsm[use_rep]`` as a 2-D float array, or raise a helpful error.

    Raises
    ------
    KeyError
        If ``use_rep`` is not in ``obsm`` (the message lists what is, and ``hint``).
    ValueError
        If the representation holds NaN or infinite values.
    """
    if use_rep not in adata.obsm:
        msg = f"{use_rep!r} not found in `adata.obsm`. Available: {list_keys(adata.obsm.keys())}."
        msg += did_you_mean(use_rep, adata.obsm.keys())
        if hint:
            msg += f" {hint}"
        raise KeyError(msg)
    x = adata.obsm[use_rep]
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x)
    if x.ndim == 1:
        x = x[:, None]
    if x.dtype.kind not in "fiu":
        msg = f"`adata.obsm[{use_rep!r}]` must be numeric, got dtype {x.dtype}."
        raise ValueError(msg)
    # in row blocks of ~64 MB: a boolean temporary of the whole matrix is 1.3 GB at 1,000,000 x 1,280
    step = max(1, (64 << 20) // max(1, x.shape[1] * x.itemsize))
    if x.dtype.kind == "f" and not all(np.isfinite(x[i : i + step]).all() for i in range(0, len(x), step)):
        n = int(sum((~np.isfinite(x[i : i + step])).any(axis=1).sum() for i in range(0, len(x), step)))
        msg = f"`adata.obsm[{use_rep!r}]` contains NaN or infinite values in {n} rows; drop or impute them first."
        raise ValueError(msg)
    return x


def check_obs_column(adata: AnnData, key: str, *, min_categories: int | None = None, hint: str = "") -> Any:
    """Return ``adata.obs[key]``, or raise a helpful error.

    Raises
    ------
    KeyError
        If ``key`` is not an ``obs`` column (the message lists the columns, then ``hint``).
    ValueError
        If ``min_categories`` is given and the column has fewer distinct non-missing values.
    """
    if key not in adata.obs.columns:
        msg = f"{key!r} not found in `adata.obs`. Available columns: {list_keys(adata.obs.columns)}."
        msg += did_you_mean(key, adata.obs.columns)
        raise KeyError(f"{msg} {hint}" if hint else msg)
    col = adata.obs[key]
    if min_categories is not None:
        n = col.dropna().nunique()
        if n < min_categories:
            msg = f"`adata.obs[{key!r}]` has {n} distinct value(s); at least {min_categories} are needed."
            raise ValueError(msg)
    return col


def image_levels(image) -> list:
    """Return the pyramid levels of an image element as a list of ``xarray.DataArray`` (finest first)."""
    from xarray import DataArray, DataTree

    if isinstance(image, DataArray):
        return [image]
    if isinstance(image, DataTree):
        out = []
        for name in sorted(image.children, key=lambda s: int(s.replace("scale", "") or 0)):
            node = image[name]
            da = next(iter(node.ds.data_vars.values()))
            out.append(da)
        return out
    msg = f"Unsupported image element type {type(image).__name__}."
    raise TypeError(msg)


def bool_column(adata: AnnData, axis: str, key: str, *, meaning: str, missing: str) -> np.ndarray:
    """``adata.obs[key]`` / ``adata.var[key]`` (``axis``) as a boolean array; ``missing`` is the KeyError message.

    Raises
    ------
    KeyError
        If the column does not exist (with ``missing``).
    ValueError
        If it is not boolean (``meaning`` says what True means).
    """
    frame = getattr(adata, axis)
    if key not in frame.columns:
        raise KeyError(missing)
    col = frame[key]
    if col.dtype != bool:
        msg = f"`adata.{axis}[{key!r}]` must be boolean (True = {meaning}), got dtype {col.dtype}."
        raise ValueError(msg)
    return col.to_numpy(bool)


def affine_xy(element, coordinate_system: str) -> np.ndarray:
    """The 3 × 3 affine matrix (x, y) mapping ``element``'s own units into ``coordinate_system``."""
    from spatialdata.transformations import get_transformation

    t = get_transformation(element, to_coordinate_system=coordinate_system)
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def shape_centroids(gdf) -> np.ndarray:
    """Centres ``(n, 2)`` (x, y) of a shapes GeoDataFrame, in its own units: the points of circles, else centroids."""
    geom = gdf.geometry
    if (geom.geom_type == "Point").all():
        return np.column_stack([geom.x.to_numpy(float), geom.y.to_numpy(float)])
    c = geom.centroid
    return np.column_stack([c.x.to_numpy(float), c.y.to_numpy(float)])


def records_params(**params: Any) -> dict[str, Any]:
    """Make ``params`` storable in ``uns`` (h5ad/zarr): tuples to lists; ``None`` values are left out (as scanpy does).

    Readers take a missing key as ``None`` (``params.get(key)``). A ``None`` inside a list becomes NaN.
    """

    def conv(v):
        if v is None:
            return float("nan")
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items() if x is not None}
        if isinstance(v, str | int | float | bool | np.ndarray):
            return v
        return str(v)

    return {k: conv(v) for k, v in params.items() if v is not None}
