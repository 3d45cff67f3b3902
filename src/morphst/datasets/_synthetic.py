"""A synthetic Xenium-like section of any size: lazy DAPI (and H&E) pyramid, cell/nucleus polygons, sparse counts.

Everything is drawn from the seed, never from real data. Cells sit on a jittered square grid (``cell_spacing_um``
apart); each grid row has its own random stream (``numpy.random.default_rng((seed, what, row))``), so any part of
the section (an image chunk, a block of polygons, a block of counts) is computed from the rows it touches alone and
is the same however the section is cut. Pixels are drawn per chunk by ``dask.array.map_blocks`` when read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Streams of the per-row random generators.
_CELLS, _COUNTS, _NOISE, _LAYOUT = 1, 2, 3, 4
#: Nucleus semi-axes and jitter are clipped so that a nucleus stays inside its grid square (one lookup per pixel).
_JITTER = 0.12
_MAX_SEMI_AXIS = 0.36
#: Cell boundary radius (fraction of the spacing) and polygon vertices.
_CELL_RADIUS = 0.44
_CELL_VERTICES = 12
_NUCLEUS_VERTICES = 10


@dataclass(frozen=True)
class _Layout:
    """Everything that fixes the section: small and picklable (it travels inside the dask graph)."""

    n_cells: int
    n_cols: int
    n_rows: int
    spacing: float  # µm
    margin: float  # µm of empty slide around the cells
    pixel_size: float  # µm/px of the DAPI level 0 (Xenium: 0.2125)
    seed: int
    domain_xy: np.ndarray = field(repr=False)  # (K, 2) µm, centres of the synthetic domains
    nucleus_radius: np.ndarray = field(repr=False)  # (K,) µm, mean semi-major axis per domain
    aspect: np.ndarray = field(repr=False)  # (K,) minor / major
    brightness: np.ndarray = field(repr=False)  # (K,) DAPI intensity factor

    @property
    def width_um(self) -> float:
        return self.n_cols * self.spacing + 2 * self.margin

    @property
    def height_um(self) -> float:
        return self.n_rows * self.spacing + 2 * self.margin


def _layout(n_cells: int, seed: int, spacing: float, pixel_size: float, n_domains: int) -> _Layout:
    n_cols = int(np.ceil(np.sqrt(n_cells)))
    n_rows = int(np.ceil(n_cells / n_cols))
    rng = np.random.default_rng((seed, _LAYOUT))
    side = np.array([n_cols, n_rows], float) * spacing
    margin = 3 * spacing
    return _Layout(
        n_cells=int(n_cells),
        n_cols=n_cols,
        n_rows=n_rows,
        spacing=float(spacing),
        margin=float(margin),
        pixel_size=float(pixel_size),
        seed=int(seed),
        domain_xy=margin + rng.uniform(0.1, 0.9, size=(n_domains, 2)) * side,
        # domains differ in nucleus size, shape and brightness: morphology carries signal about them
        nucleus_radius=np.linspace(0.2, 0.32, n_domains)[rng.permutation(n_domains)] * spacing,
        aspect=np.linspace(0.55, 0.95, n_domains)[rng.permutation(n_domains)],
        brightness=np.linspace(0.6, 1.0, n_domains)[rng.permutation(n_domains)],
    )


def _domain(lay: _Layout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Synthetic domain of points (µm): the nearest domain centre after a smooth sinusoidal warp."""
    wl = max(lay.width_um, lay.height_um) / 3.0
    amp = wl / 6.0
    xw = x + amp * np.sin(2 * np.pi * y / wl)
    yw = y + amp * np.sin(2 * np.pi * x / wl + 1.0)
    d = (xw[..., None] - lay.domain_xy[:, 0]) ** 2 + (yw[..., None] - lay.domain_xy[:, 1]) ** 2
    return np.argmin(d, axis=-1).astype(np.int16)


def _cells(lay: _Layout, r0: int, r1: int) -> dict[str, np.ndarray]:
    """Attributes of the cells of grid rows ``r0:r1``, arrays of shape ``(r1 - r0, n_cols)``; ``valid`` marks cells."""
    n = r1 - r0
    shape = (n, lay.n_cols)
    jx, jy, za, zb, th, ph, zi = (np.empty(shape) for _ in range(7))
    for k, r in enumerate(range(r0, r1)):
        rng = np.random.default_rng((lay.seed, _CELLS, r))
        u = rng.standard_normal((7, lay.n_cols))
        jx[k], jy[k], za[k], zb[k], th[k], ph[k], zi[k] = u
    rows = np.arange(r0, r1)[:, None]
    cols = np.arange(lay.n_cols)[None, :]
    s = lay.spacing
    lim = _JITTER * s
    cx = lay.margin + (cols + 0.5) * s + np.clip(jx * lim / 2, -lim, lim)
    cy = lay.margin + (rows + 0.5) * s + np.clip(jy * lim / 2, -lim, lim)
    dom = _domain(lay, cx, cy)
    a = np.clip(lay.nucleus_radius[dom] * np.exp(0.12 * za), 0.12 * s, _MAX_SEMI_AXIS * s)
    b = np.clip(a * lay.aspect[dom] * np.exp(0.08 * zb), 0.08 * s, a)
    return {
        "x": cx,
        "y": cy,
        "domain": dom,
        "a": a,
        "b": b,
        "theta": np.pi * (th - np.floor(th)),  # any orientation
        "phase": 2 * np.pi * (ph - np.floor(ph)),  # chromatin texture phase
        "intensity": lay.brightness[dom] * np.exp(0.15 * zi),
        "valid": (rows * lay.n_cols + cols) < lay.n_cells,
    }


def _kernel():
    """The per-pixel renderer, compiled once with numba (cached on disk): ~10 ns per pixel."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import numba

    @numba.njit(cache=True, nogil=True)
    def render(i0, j0, h, w, aff, margin, spacing, r_lo, n_cols, cells, edge, key, val, tissue, noise):
        # pixel (i, j) -> point (µm) = aff @ (j + 0.5, i + 0.5, 1); cells[r - r_lo, c] = (x, y, cos, sin, 1/a, 1/b,
        # b, intensity, phase, valid)
        nr = cells.shape[0]
        for i in range(h):
            py = i0 + i + 0.5
            for j in range(w):
                px = j0 + j + 0.5
                xu = aff[0, 0] * px + aff[0, 1] * py + aff[0, 2]
                yu = aff[1, 0] * px + aff[1, 1] * py + aff[1, 2]
                c = int(np.floor((xu - margin) / spacing))
                r = int(np.floor((yu - margin) / spacing)) - r_lo
                v = 0.0
                t = 0.0
                if 0 <= c < n_cols and 0 <= r < nr and cells[r, c, 9] > 0:
                    t = 1.0
                    dx = xu - cells[r, c, 0]
                    dy = yu - cells[r, c, 1]
                    u = dx * cells[r, c, 2] + dy * cells[r, c, 3]
                    q = -dx * cells[r, c, 3] + dy * cells[r, c, 2]
                    rho = np.sqrt((u * cells[r, c, 4]) ** 2 + (q * cells[r, c, 5]) ** 2)
                    cov = 0.5 + (1.0 - rho) * cells[r, c, 6] / edge
                    if cov > 0:
                        cov = min(cov, 1.0)
                        v = cov * (0.8 + 0.2 * np.sin(u * 1.7 + q * 1.3 + cells[r, c, 8])) * cells[r, c, 7]
                val[i, j] = v
                tissue[i, j] = t
                # deterministic noise from a hash of (key, pixel): the sum of two uniforms, centred, sd ~ 1
                z = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15) + np.uint64((i0 + i) * 1_000_003 + (j0 + j))
                z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
                z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
                z = z ^ (z >> np.uint64(31))
                u1 = float(z & np.uint64(0xFFFFFFFF)) / 4294967296.0
                u2 = float(z >> np.uint64(32)) / 4294967296.0
                noise[i, j] = (u1 + u2 - 1.0) * 2.449

    _KERNEL = render
    return render


_KERNEL = None


def _render(lay: _Layout, i0: int, j0: int, h: int, w: int, aff: np.ndarray, px_um: float, key: int):
    """Nucleus signal (0 outside nuclei, ~intensity inside), tissue mask and noise of a block of pixels.

    ``aff`` maps pixel coordinates (continuous, of the level) to µm. Each point looks up the one grid square it lies
    in (nuclei never leave their square); the nucleus edge is a linear ramp half a pixel wide (at least 0.25 µm),
    which approximates the area average of a coarser pyramid level.
    """
    corners = aff @ np.array([[j0, j0 + w, j0, j0 + w], [i0, i0, i0 + h, i0 + h], [1, 1, 1, 1]], float)
    r_lo = max(0, int(np.floor((corners[1].min() - lay.margin) / lay.spacing)) - 1)
    r_hi = min(lay.n_rows, int(np.floor((corners[1].max() - lay.margin) / lay.spacing)) + 2)
    val = np.zeros((h, w), np.float32)
    tissue = np.zeros((h, w), np.float32)
    noise = np.zeros((h, w), np.float32)
    if r_hi <= r_lo:
        r_lo, r_hi = 0, 0
    c = _cells(lay, r_lo, r_hi) if r_hi > r_lo else None
    if c is None:
        cells = np.zeros((0, lay.n_cols, 10))
    else:
        cells = np.stack(
            [
                c["x"],
                c["y"],
                np.cos(c["theta"]),
                np.sin(c["theta"]),
                1.0 / c["a"],
                1.0 / c["b"],
                c["b"],
                c["intensity"],
                c["phase"],
                c["valid"].astype(float),
            ],
            axis=-1,
        )
    edge = max(0.25, 0.5 * px_um)
    _kernel()(
        i0,
        j0,
        h,
        w,
        np.asarray(aff, float),
        lay.margin,
        lay.spacing,
        r_lo,
        lay.n_cols,
        cells,
        edge,
        key,
        val,
        tissue,
        noise,
    )
    return val, tissue, noise


def _dapi_block(block_info=None, *, lay: _Layout, factor: tuple[float, float], level: int) -> np.ndarray:
    (_c0, _c1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    px_x, px_y = lay.pixel_size * factor[0], lay.pixel_size * factor[1]
    aff = np.array([[px_x, 0, 0], [0, px_y, 0], [0, 0, 1]])
    val, tissue, noise = _render(lay, y0, x0, y1 - y0, x1 - x0, aff, max(px_x, px_y), lay.seed * 64 + level)
    img = 120.0 + 280.0 * tissue + 9000.0 * val + (25.0 + 60.0 * val) * noise
    return np.clip(img, 0, 65535).astype(np.uint16)[None]


def _he_block(block_info=None, *, lay: _Layout, factor: tuple[float, float], he_to_global: np.ndarray) -> np.ndarray:
    (c0, c1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    # level px -> H&E level-0 px -> global (DAPI px) -> µm
    aff = np.diag([lay.pixel_size, lay.pixel_size, 1.0]) @ he_to_global @ np.diag([factor[0], factor[1], 1.0])
    px_um = lay.pixel_size * np.hypot(he_to_global[0, 0], he_to_global[1, 0]) * max(factor)
    level = round(np.log2(max(factor)))
    val, tissue, noise = _render(lay, y0, x0, y1 - y0, x1 - x0, aff, px_um, lay.seed * 64 + 32 + level)
    nuc = np.clip(val, 0, 1)[..., None]
    glass = np.array([244.0, 244.0, 246.0], np.float32)
    eosin = np.array([232.0, 160.0, 196.0], np.float32)
    haem = np.array([88.0, 52.0, 140.0], np.float32)
    t = tissue[..., None]
    rgb = (glass * (1 - t) + eosin * t) * (1 - nuc) + haem * nuc + 6.0 * noise[..., None]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)[c0:c1]


def _pyramid(shape0: tuple[int, int], n_c: int, n_levels: int, chunk_px: int, draw, dtype, c_coords, transform):
    """A spatialdata multiscale image whose every level is drawn lazily at its own resolution."""
    import dask.array as da
    import xarray as xr
    from spatialdata.models import Image2DModel

    h0, w0 = shape0
    trees = {}
    for k in range(n_levels):
        h, w = h0 // 2**k, w0 // 2**k
        if min(h, w) < 16:
            break
        factor = (w0 / w, h0 / h)
        arr = da.map_blocks(
            draw(k, factor),
            dtype=dtype,
            chunks=da.core.normalize_chunks((n_c, chunk_px, chunk_px), (n_c, h, w)),
            name=f"morphst-xenium-like-{draw.__name__}-{k}-{h}x{w}-{id(draw)}",
            meta=np.empty((0, 0, 0), dtype),
        )
        level = xr.DataArray(
            arr,
            dims=("c", "y", "x"),
            coords={"c": c_coords, "y": (np.arange(h) + 0.5) * factor[1], "x": (np.arange(w) + 0.5) * factor[0]},
        )
        trees[f"scale{k}"] = xr.Dataset({"image": level})
    tree = xr.DataTree.from_dict(trees)
    # set the transformation on every level (scale k carries its downscale as spatialdata does) and validate
    from spatialdata.transformations import Scale, Sequence, set_transformation

    for k, name in enumerate(trees):
        f = (w0 / tree[name]["image"].shape[-1], h0 / tree[name]["image"].shape[-2])
        t = transform if k == 0 else Sequence([Scale(list(f), axes=("x", "y")), transform])
        set_transformation(tree[name]["image"], {"global": t}, set_all=True)
    Image2DModel().validate(tree)
    return tree


def _counts(lay: _Layout, n_genes: int, counts_per_cell: float, r0: int, r1: int, cells: dict):
    """Sparse counts (CSR, float32) of the valid cells of grid rows ``r0:r1`` (row-major).

    Expression follows the synthetic domains (each has its marker genes, 2.7× up) and, for the first 10 % of genes,
    the nucleus size and brightness (so a morphology model can predict them); Poisson noise, library size
    log-normal.
    """
    from scipy import sparse

    rng0 = np.random.default_rng((lay.seed, _COUNTS))
    k = len(lay.domain_xy)
    base = rng0.dirichlet(np.full(n_genes, 0.6))
    markers = np.zeros((k, n_genes))
    per = max(1, n_genes // (2 * k))
    perm = rng0.permutation(n_genes)
    for d in range(k):
        markers[d, perm[d * per : (d + 1) * per]] = 1.0
    n_morph = max(1, n_genes // 10)
    morph_genes = perm[-n_morph:]
    beta = rng0.choice([-1.0, 1.0], n_morph) * rng0.uniform(0.5, 1.0, n_morph)
    blocks = []
    for k_row, r in enumerate(range(r0, r1)):
        ok = cells["valid"][k_row]
        if not ok.any():
            continue
        dom = cells["domain"][k_row][ok]
        size = np.log(cells["a"][k_row][ok] * cells["b"][k_row][ok] / lay.spacing**2)
        size = (size - np.log(0.07)) / 0.3
        logr = np.log(base)[None, :] + markers[dom]
        drive = 0.6 * size + 0.6 * np.log(cells["intensity"][k_row][ok])
        logr[:, morph_genes] += drive[:, None] * beta[None, :]
        rng = np.random.default_rng((lay.seed, _COUNTS, r))
        lib = counts_per_cell * np.exp(0.3 * rng.standard_normal(len(dom)))
        rate = np.exp(logr)
        rate *= (lib / rate.sum(1))[:, None]
        blocks.append(sparse.csr_matrix(rng.poisson(rate).astype(np.float32)))
    return sparse.vstack(blocks, format="csr") if blocks else sparse.csr_matrix((0, n_genes), dtype=np.float32)


def _polygons(cx, cy, rx, ry, theta, n_vert: int, wobble: np.ndarray | None = None):
    import shapely

    t = np.linspace(0, 2 * np.pi, n_vert, endpoint=False)
    rr = 1.0 if wobble is None else 1.0 + 0.06 * np.sin(3 * t[None, :] + wobble[:, None])
    u = rx[:, None] * np.cos(t)[None, :] * rr
    v = ry[:, None] * np.sin(t)[None, :] * rr
    ct, st = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x = cx[:, None] + u * ct - v * st
    y = cy[:, None] + u * st + v * ct
    ring = np.stack([x, y], axis=-1)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)
    return shapely.polygons(ring)


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
