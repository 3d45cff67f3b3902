"""`xenium_like`: a synthetic Xenium-like SpatialData of any size (drawing in :mod:`._synthetic_draw`)."""

from __future__ import annotations

import numpy as np

from ._synthetic_draw import (
    _CELL_RADIUS,
    _CELL_VERTICES,
    _NUCLEUS_VERTICES,
    _cells,
    _counts,
    _dapi_block,
    _he_block,
    _layout,
    _polygons,
    _pyramid,
)


def xenium_like(
    n_cells: int = 10_000,
    *,
    seed: int = 0,
    n_genes: int = 300,
    he: bool = False,
    cells_as_circles: bool = False,
    pixel_size: float = 0.2125,
    cell_spacing_um: float = 10.0,
    counts_per_cell: float = 80.0,
    n_domains: int = 5,
    chunk_px: int = 4096,
    n_levels: int = 5,
    rows_per_block: int = 256,
):
    """A **synthetic** section laid out as :func:`spatialdata_io.xenium` reads a 10x Xenium output folder.

    Not real data: nuclei, cells and counts are drawn from ``seed`` (for tests, benchmarks and tutorials that need
    a cell-level dataset of a given size). Cells lie on a jittered square grid ``cell_spacing_um`` apart in a few
    synthetic tissue domains (a warped Voronoi partition) that differ in nucleus size, elongation and DAPI
    brightness, and in marker genes; the first 10 % of genes also follow nucleus size and brightness, so
    morphology predicts part of the expression. The layout follows spatialdata-io 0.7 (``readers/xenium.py``):

    - ``images["morphology_focus"]``: DAPI, ``uint16``, ``(1, y, x)`` with channel ``"DAPI"``, a multiscale
      pyramid (``n_levels``, factor 2) in chunks of ``chunk_px``, ``Identity`` to ``"global"`` (the coordinate
      system is in morphology-image pixels, as the reader writes it). Lazy: each chunk of each level is drawn at
      that level's resolution when read (``dask.array.map_blocks``, deterministic per chunk), so building a
      1,000,000-cell section allocates no pixels.
    - ``shapes["cell_boundaries"]`` (index ``cell_id``) and ``shapes["nucleus_boundaries"]`` (integer index, column
      ``cell_id``): polygons in µm with ``Scale(1 / pixel_size)`` to ``"global"``; built block by block.
      With ``cells_as_circles``, also ``shapes["cell_circles"]`` (centroid, radius from the cell area).
    - ``tables["table"]``: counts (CSR, float32, ``n_cells × n_genes``, genes ``gene_000``...), ``obs``
      ``cell_id`` (Xenium-style strings), ``region``, ``transcript_counts``, ``cell_area`` and ``nucleus_area``
      (µm²), ``synthetic_domain`` (the truth; not in real data); ``obsm["spatial"]`` (µm). The table annotates
      ``"cell_boundaries"`` (instance key ``cell_id``) so that patches centre on the cell polygons' centroids; with
      ``cells_as_circles`` it annotates ``"cell_circles"``, as the reader does.
    - with ``he``: ``images["he_image"]``, an H&E-like RGB ``uint8`` pyramid at 0.3638 µm/px, rotated by 2° and
      shifted, with an ``Affine`` to ``"global"`` (as ``xenium_aligned_image`` reads an alignment CSV).
    - ``sdata.attrs["spatialdata_io_reader"] = "xenium"``: morphst then knows the shapes are in µm (see
      :func:`morphst.pp.extract_patches`).

    Parameters
    ----------
    n_cells
        Number of cells.
    seed
        Random seed; the same seed gives the same pixels, polygons and counts.
    n_genes
        Genes in the panel.
    he
        Add an aligned H&E-like image.
    cells_as_circles
        Add ``shapes["cell_circles"]`` and annotate them with the table (spatialdata-io's ``cells_as_circles``).
    pixel_size
        µm per pixel of the DAPI image's finest level (Xenium: 0.2125).
    cell_spacing_um
        Centre-to-centre distance of the cell grid, µm.
    counts_per_cell
        Mean total counts per cell.
    n_domains
        Number of synthetic tissue domains.
    chunk_px
        Image chunk side, px (spatialdata-io's default is 4096).
    n_levels
        Pyramid levels (spatialdata-io's default ``scale_factors=[2, 2, 2, 2]``: 5).
    rows_per_block
        Grid rows of cells built at once (memory of the polygon/count construction).

    Returns
    -------
    A :class:`~spatialdata.SpatialData` (in memory; the images lazy). Write it with ``sdata.write(path)`` to get a
    zarr-backed object, e.g. for :func:`morphst.tl.embed_patches` on a dask cluster.

    Raises
    ------
    ValueError
        ``n_cells``, ``n_genes`` or a size not positive.
    """
    import anndata as ad
    import geopandas as gpd
    import pandas as pd
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Affine, Identity, Scale

    for name, v in (
        ("n_cells", n_cells),
        ("n_genes", n_genes),
        ("pixel_size", pixel_size),
        ("cell_spacing_um", cell_spacing_um),
        ("counts_per_cell", counts_per_cell),
        ("n_domains", n_domains),
        ("chunk_px", chunk_px),
        ("n_levels", n_levels),
    ):
        if not v > 0:
            msg = f"`{name}` must be positive, got {v}."
            raise ValueError(msg)
    lay = _layout(int(n_cells), int(seed), float(cell_spacing_um), float(pixel_size), int(n_domains))

    # --- cells, block by block of grid rows ---
    xs, ys, doms, nareas, tot = [], [], [], [], []
    cell_polys, nuc_polys, counts = [], [], []
    for r0 in range(0, lay.n_rows, rows_per_block):
        r1 = min(r0 + rows_per_block, lay.n_rows)
        c = _cells(lay, r0, r1)
        ok = c["valid"]
        x, y, a, b, th = (c[k][ok] for k in ("x", "y", "a", "b", "theta"))
        rad = np.full(len(x), _CELL_RADIUS * lay.spacing)
        cell_polys.append(_polygons(x, y, rad, rad, np.zeros(len(x)), _CELL_VERTICES, wobble=c["phase"][ok]))
        nuc_polys.append(_polygons(x, y, a, b, th, _NUCLEUS_VERTICES))
        X = _counts(lay, int(n_genes), float(counts_per_cell), r0, r1, c)
        counts.append(X)
        xs.append(x)
        ys.append(y)
        doms.append(c["domain"][ok])
        nareas.append(np.pi * a * b)
        tot.append(np.asarray(X.sum(1)).ravel())
    import shapely

    cell_geom = np.concatenate(cell_polys)
    nuc_geom = np.concatenate(nuc_polys)
    areas = shapely.area(cell_geom)
    from spatialdata_io.readers.xenium import cell_id_str_from_prefix_suffix_uint32

    n = lay.n_cells
    ids = cell_id_str_from_prefix_suffix_uint32(np.arange(1, n + 1, dtype=np.uint32), np.ones(n, np.uint32))
    ids = pd.Index(ids.astype(str), name="cell_id")
    to_global = Scale([1.0 / lay.pixel_size, 1.0 / lay.pixel_size], axes=("x", "y"))
    cells_gdf = gpd.GeoDataFrame({"geometry": cell_geom}, index=ids)
    nuc_gdf = gpd.GeoDataFrame(
        {"geometry": nuc_geom, "cell_id": ids.to_numpy()}, index=pd.RangeIndex(1, n + 1, name="label_id")
    )
    shapes = {
        "cell_boundaries": ShapesModel.parse(cells_gdf, transformations={"global": to_global}),
        "nucleus_boundaries": ShapesModel.parse(nuc_gdf, transformations={"global": to_global}),
    }
    xy = np.column_stack([np.concatenate(xs), np.concatenate(ys)])
    region = "cell_circles" if cells_as_circles else "cell_boundaries"
    if cells_as_circles:
        shapes["cell_circles"] = ShapesModel.parse(
            xy, geometry=0, radius=np.sqrt(areas / np.pi), index=ids, transformations={"global": to_global}
        )

    obs = pd.DataFrame(
        {
            "cell_id": ids.to_numpy(),
            "transcript_counts": np.concatenate(tot).astype(np.int64),
            "cell_area": areas,
            "nucleus_area": np.concatenate(nareas),
            "synthetic_domain": pd.Categorical([f"D{d}" for d in np.concatenate(doms)]),
            "region": pd.Categorical([region] * n),
        },
        index=pd.Index(ids.to_numpy(), dtype=object),
    )
    var = pd.DataFrame(
        {"gene_ids": [f"SYN{g:05d}" for g in range(n_genes)], "feature_types": "Gene Expression"},
        index=[f"gene_{g:03d}" for g in range(n_genes)],
    )
    adata = ad.AnnData(sparse.vstack(counts, format="csr"), obs=obs, var=var)
    adata.obsm["spatial"] = xy
    adata.uns["morphst_dataset"] = {
        "name": "xenium_like",
        "synthetic": True,
        "description": "synthetic Xenium-like section (mst.datasets.xenium_like); not real data",
        "seed": int(seed),
        "pixel_size_um": float(pixel_size),
        "cell_spacing_um": float(cell_spacing_um),
    }
    table = TableModel.parse(adata, region=region, region_key="region", instance_key="cell_id")

    # --- images: lazy pyramids ---
    h0 = int(np.ceil(lay.height_um / lay.pixel_size))
    w0 = int(np.ceil(lay.width_um / lay.pixel_size))

    def dapi(level, factor):
        def draw(block_info=None):
            return _dapi_block(block_info, lay=lay, factor=factor, level=level)

        return draw

    dapi.__name__ = "dapi"
    images = {
        "morphology_focus": _pyramid((h0, w0), 1, int(n_levels), int(chunk_px), dapi, np.uint16, ["DAPI"], Identity())
    }
    if he:
        he_px = 0.3638  # µm/px of the H&E, rotated 2° and shifted against the DAPI
        s = he_px / lay.pixel_size
        ang = np.deg2rad(2.0)
        m = np.array([[s * np.cos(ang), -s * np.sin(ang), -40.0], [s * np.sin(ang), s * np.cos(ang), -25.0], [0, 0, 1]])
        # H&E extent: the DAPI frame mapped back into H&E px
        corners = np.linalg.inv(m) @ np.array([[0, w0, 0, w0], [0, 0, h0, h0], [1, 1, 1, 1]], float)
        hw = (int(np.ceil(corners[1].max())) + 1, int(np.ceil(corners[0].max())) + 1)

        def he_draw(level, factor):
            def draw(block_info=None):
                return _he_block(block_info, lay=lay, factor=factor, he_to_global=m)

            return draw

        he_draw.__name__ = "he"
        images["he_image"] = _pyramid(
            hw,
            3,
            int(n_levels),
            int(chunk_px),
            he_draw,
            np.uint8,
            ["r", "g", "b"],
            Affine(m, input_axes=("x", "y"), output_axes=("x", "y")),
        )
    sdata = SpatialData(images=images, shapes=shapes, tables={"table": table})
    sdata.attrs["spatialdata_io_reader"] = "xenium"
    sdata.attrs["morphst_synthetic"] = {"generator": "mst.datasets.xenium_like", "seed": int(seed)}
    return sdata
