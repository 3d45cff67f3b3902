"""`xenium_like`: a synthetic Xenium-like SpatialData of any size (drawing in :mod:`._synthetic_draw`)."""

from __future__ import annotations

import warnings

import numpy as np

from .._constants import Key
from .._docs import doc_random_state, inject_docs
from ._synthetic_draw import (
    CELL_RADIUS,
    CELL_VERTICES,
    NUCLEUS_VERTICES,
    Layout,
    dapi_block,
    he_block,
    layout,
    polygons,
    pyramid,
    row_cells,
    row_counts,
)


@inject_docs(random_state=doc_random_state)
def xenium_like(
    n_cells: int = 10_000,
    *,
    random_state: int = 0,
    n_genes: int = 300,
    he: bool = False,
    cells_as_circles: bool = False,
    um_per_px: float = 0.2125,
    cell_spacing_um: float = 10.0,
    counts_per_cell: float = 80.0,
    n_domains: int = 5,
    chunk_px: int = 4096,
    n_levels: int = 5,
    rows_per_block: int = 256,
    pixel_size: float | None = None,
):
    """A **synthetic** section laid out as :func:`spatialdata_io.xenium` reads a 10x Xenium output folder.

    Not real data: nuclei, cells and counts are drawn from ``random_state`` (for tests, benchmarks and tutorials that
    need a cell-level dataset of a given size). Cells lie on a jittered square grid ``cell_spacing_um`` apart in a few
    synthetic tissue domains (a warped Voronoi partition) that differ in nucleus size, elongation and DAPI
    brightness, and in marker genes; the first 10 % of genes also follow nucleus size and brightness, so
    morphology predicts part of the expression. The layout follows spatialdata-io 0.7 (``readers/xenium.py``):

    - ``images["morphology_focus"]``: DAPI, ``uint16``, ``(1, y, x)`` with channel ``"DAPI"``, a multiscale
      pyramid (``n_levels``, factor 2) in chunks of ``chunk_px``, ``Identity`` to ``"global"`` (the coordinate
      system is in morphology-image pixels, as the reader writes it). Lazy: each chunk of each level is drawn at
      that level's resolution when read (``dask.array.map_blocks``, deterministic per chunk), so building a
      1,000,000-cell section allocates no pixels.
    - ``shapes["cell_boundaries"]`` (index ``cell_id``) and ``shapes["nucleus_boundaries"]`` (integer index, column
      ``cell_id``): polygons in µm with ``Scale(1 / um_per_px)`` to ``"global"``; built block by block.
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
    {random_state}
        It draws the pixels, polygons and counts.
    n_genes
        Genes in the panel.
    he
        Add an aligned H&E-like image.
    cells_as_circles
        Add ``shapes["cell_circles"]`` and annotate them with the table (spatialdata-io's ``cells_as_circles``).
    um_per_px
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
    pixel_size
        Former name of ``um_per_px`` (``FutureWarning``).

    Returns
    -------
    A :class:`~spatialdata.SpatialData` (in memory; the images lazy). Write it with ``sdata.write(path)`` to get a
    zarr-backed object, e.g. for :func:`morphst.tl.embed_patches` on a dask cluster.

    Raises
    ------
    ValueError
        ``n_cells``, ``n_genes`` or a size not positive.
    """
    if pixel_size is not None:
        warnings.warn(
            "`mst.datasets.xenium_like(pixel_size=...)` is deprecated; pass `um_per_px=` (the same value, µm per "
            "pixel). `pixel_size` will be removed in the next release.",
            FutureWarning,
            stacklevel=2,
        )
        um_per_px = pixel_size
    for name, v in (
        ("n_cells", n_cells),
        ("n_genes", n_genes),
        ("um_per_px", um_per_px),
        ("cell_spacing_um", cell_spacing_um),
        ("counts_per_cell", counts_per_cell),
        ("n_domains", n_domains),
        ("chunk_px", chunk_px),
        ("n_levels", n_levels),
    ):
        if not v > 0:
            msg = f"`{name}` must be positive, got {v}."
            raise ValueError(msg)
    from spatialdata import SpatialData

    lay = layout(int(n_cells), int(random_state), float(cell_spacing_um), float(um_per_px), int(n_domains))
    drawn = _draw_cells(lay, int(n_genes), float(counts_per_cell), int(rows_per_block))
    shapes, region, areas = _cell_shapes(lay, drawn, cells_as_circles)
    table = _table(drawn, areas, region, int(n_genes))
    table.uns[Key.DATASET] = {
        "name": "xenium_like",
        "synthetic": True,
        "description": "synthetic Xenium-like section (mst.datasets.xenium_like); not real data",
        "random_state": int(random_state),
        "um_per_px": float(um_per_px),
        "cell_spacing_um": float(cell_spacing_um),
    }
    images = _images(lay, int(n_levels), int(chunk_px), he)
    sdata = SpatialData(images=images, shapes=shapes, tables={Key.TABLE: table})
    sdata.attrs["spatialdata_io_reader"] = "xenium"
    sdata.attrs["morphst_synthetic"] = {"generator": "mst.datasets.xenium_like", "random_state": int(random_state)}
    return sdata


def _draw_cells(lay: Layout, n_genes: int, counts_per_cell: float, rows_per_block: int) -> dict:
    """Cells, nuclei and counts, block by block of grid rows: centres (µm), polygons, domains, areas, counts."""
    from scipy import sparse

    xs, ys, doms, nareas, tot = [], [], [], [], []
    cell_polys, nuc_polys, blocks = [], [], []
    for r0 in range(0, lay.n_rows, rows_per_block):
        r1 = min(r0 + rows_per_block, lay.n_rows)
        c = row_cells(lay, r0, r1)
        ok = c["valid"]
        x, y, a, b, th = (c[k][ok] for k in ("x", "y", "a", "b", "theta"))
        rad = np.full(len(x), CELL_RADIUS * lay.spacing)
        cell_polys.append(polygons(x, y, rad, rad, np.zeros(len(x)), CELL_VERTICES, wobble=c["phase"][ok]))
        nuc_polys.append(polygons(x, y, a, b, th, NUCLEUS_VERTICES))
        X = row_counts(lay, n_genes, counts_per_cell, r0, r1, c)
        blocks.append(X)
        xs.append(x)
        ys.append(y)
        doms.append(c["domain"][ok])
        nareas.append(np.pi * a * b)
        tot.append(np.asarray(X.sum(1)).ravel())
    return {
        "xy": np.column_stack([np.concatenate(xs), np.concatenate(ys)]),
        "cell_geom": np.concatenate(cell_polys),
        "nuc_geom": np.concatenate(nuc_polys),
        "domain": np.concatenate(doms),
        "nucleus_area": np.concatenate(nareas),
        "transcript_counts": np.concatenate(tot),
        "counts": sparse.vstack(blocks, format="csr"),
    }


def _cell_ids(n: int):
    """Xenium-style cell ids of ``n`` cells (spatialdata-io's encoding), as a ``cell_id`` index."""
    import pandas as pd
    from spatialdata_io.readers.xenium import cell_id_str_from_prefix_suffix_uint32

    ids = cell_id_str_from_prefix_suffix_uint32(np.arange(1, n + 1, dtype=np.uint32), np.ones(n, np.uint32))
    return pd.Index(ids.astype(str), name="cell_id")


def _cell_shapes(lay: Layout, drawn: dict, cells_as_circles: bool) -> tuple[dict, str, np.ndarray]:
    """The shapes elements (cell and nucleus polygons, optional circles), the region the table annotates, cell areas."""
    import geopandas as gpd
    import pandas as pd
    import shapely
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Scale

    areas = shapely.area(drawn["cell_geom"])
    n = lay.n_cells
    ids = _cell_ids(n)
    to_global = Scale([1.0 / lay.um_per_px, 1.0 / lay.um_per_px], axes=("x", "y"))
    cells_gdf = gpd.GeoDataFrame({"geometry": drawn["cell_geom"]}, index=ids)
    nuc_gdf = gpd.GeoDataFrame(
        {"geometry": drawn["nuc_geom"], "cell_id": ids.to_numpy()}, index=pd.RangeIndex(1, n + 1, name="label_id")
    )
    shapes = {
        "cell_boundaries": ShapesModel.parse(cells_gdf, transformations={"global": to_global}),
        "nucleus_boundaries": ShapesModel.parse(nuc_gdf, transformations={"global": to_global}),
    }
    region = "cell_circles" if cells_as_circles else "cell_boundaries"
    if cells_as_circles:
        shapes["cell_circles"] = ShapesModel.parse(
            drawn["xy"], geometry=0, radius=np.sqrt(areas / np.pi), index=ids, transformations={"global": to_global}
        )
    return shapes, region, areas


def _table(drawn: dict, areas: np.ndarray, region: str, n_genes: int):
    """The table of counts annotating ``region`` (instance key ``cell_id``), with ``obsm["spatial"]`` in µm."""
    import anndata as ad
    import pandas as pd
    from spatialdata.models import TableModel

    ids = _cell_ids(len(areas)).to_numpy()
    obs = pd.DataFrame(
        {
            "cell_id": ids,
            "transcript_counts": drawn["transcript_counts"].astype(np.int64),
            "cell_area": areas,
            "nucleus_area": drawn["nucleus_area"],
            "synthetic_domain": pd.Categorical([f"D{d}" for d in drawn["domain"]]),
            "region": pd.Categorical([region] * len(ids)),
        },
        index=pd.Index(ids, dtype=object),
    )
    var = pd.DataFrame(
        {"gene_ids": [f"SYN{g:05d}" for g in range(n_genes)], "feature_types": "Gene Expression"},
        index=[f"gene_{g:03d}" for g in range(n_genes)],
    )
    adata = ad.AnnData(drawn["counts"], obs=obs, var=var)
    adata.obsm[Key.SPATIAL] = drawn["xy"]
    return TableModel.parse(adata, region=region, region_key="region", instance_key="cell_id")


def _images(lay: Layout, n_levels: int, chunk_px: int, he: bool) -> dict:
    """The lazy DAPI pyramid and, with ``he``, the rotated and shifted H&E-like pyramid."""
    from spatialdata.transformations import Affine, Identity

    h0 = int(np.ceil(lay.height_um / lay.um_per_px))
    w0 = int(np.ceil(lay.width_um / lay.um_per_px))

    def dapi(level, factor):
        def draw(block_info=None):
            return dapi_block(block_info, lay=lay, factor=factor, level=level)

        return draw

    dapi.__name__ = "dapi"
    images = {"morphology_focus": pyramid((h0, w0), 1, n_levels, chunk_px, dapi, np.uint16, ["DAPI"], Identity())}
    if he:
        he_px = 0.3638  # µm/px of the H&E, rotated 2° and shifted against the DAPI
        s = he_px / lay.um_per_px
        ang = np.deg2rad(2.0)
        m = np.array([[s * np.cos(ang), -s * np.sin(ang), -40.0], [s * np.sin(ang), s * np.cos(ang), -25.0], [0, 0, 1]])
        # H&E extent: the DAPI frame mapped back into H&E px
        corners = np.linalg.inv(m) @ np.array([[0, w0, 0, w0], [0, 0, h0, h0], [1, 1, 1, 1]], float)
        hw = (int(np.ceil(corners[1].max())) + 1, int(np.ceil(corners[0].max())) + 1)

        def he_draw(level, factor):
            def draw(block_info=None):
                return he_block(block_info, lay=lay, factor=factor, he_to_global=m)

            return draw

        he_draw.__name__ = "he"
        images["he_image"] = pyramid(
            hw,
            3,
            n_levels,
            chunk_px,
            he_draw,
            np.uint8,
            ["r", "g", "b"],
            Affine(m, input_axes=("x", "y"), output_axes=("x", "y")),
        )
    return images
