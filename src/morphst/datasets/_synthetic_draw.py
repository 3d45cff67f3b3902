"""A synthetic Xenium-like section of any size: lazy DAPI (and H&E) pyramid, cell/nucleus polygons, sparse counts.

Everything is drawn from ``random_state``, never from real data. Cells sit on a jittered square grid
(``cell_spacing_um`` apart); each grid row has its own random stream
(``numpy.random.default_rng((random_state, what, row))``), so any part of the section (an image chunk, a block of polygons, a block of counts) is computed from the rows it touches alone and
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
CELL_RADIUS = 0.44
CELL_VERTICES = 12
NUCLEUS_VERTICES = 10


@dataclass(frozen=True)
class Layout:
    """Everything that fixes the section: small and picklable (it travels inside the dask graph)."""

    n_cells: int
    n_cols: int
    n_rows: int
    spacing: float  # µm
    margin: float  # µm of empty slide around the cells
    um_per_px: float  # µm/px of the DAPI level 0 (Xenium: 0.2125)
    random_state: int
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


def layout(n_cells: int, random_state: int, spacing: float, um_per_px: float, n_domains: int) -> Layout:
    n_cols = int(np.ceil(np.sqrt(n_cells)))
    n_rows = int(np.ceil(n_cells / n_cols))
    rng = np.random.default_rng((random_state, _LAYOUT))
    side = np.array([n_cols, n_rows], float) * spacing
    margin = 3 * spacing
    return Layout(
        n_cells=int(n_cells),
        n_cols=n_cols,
        n_rows=n_rows,
        spacing=float(spacing),
        margin=float(margin),
        um_per_px=float(um_per_px),
        random_state=int(random_state),
        domain_xy=margin + rng.uniform(0.1, 0.9, size=(n_domains, 2)) * side,
        # domains differ in nucleus size, shape and brightness: morphology carries signal about them
        nucleus_radius=np.linspace(0.2, 0.32, n_domains)[rng.permutation(n_domains)] * spacing,
        aspect=np.linspace(0.55, 0.95, n_domains)[rng.permutation(n_domains)],
        brightness=np.linspace(0.6, 1.0, n_domains)[rng.permutation(n_domains)],
    )


def _domain(lay: Layout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Synthetic domain of points (µm): the nearest domain centre after a smooth sinusoidal warp."""
    wl = max(lay.width_um, lay.height_um) / 3.0
    amp = wl / 6.0
    xw = x + amp * np.sin(2 * np.pi * y / wl)
    yw = y + amp * np.sin(2 * np.pi * x / wl + 1.0)
    d = (xw[..., None] - lay.domain_xy[:, 0]) ** 2 + (yw[..., None] - lay.domain_xy[:, 1]) ** 2
    return np.argmin(d, axis=-1).astype(np.int16)


def row_cells(lay: Layout, r0: int, r1: int) -> dict[str, np.ndarray]:
    """Attributes of the cells of grid rows ``r0:r1``, arrays of shape ``(r1 - r0, n_cols)``; ``valid`` marks cells."""
    n = r1 - r0
    shape = (n, lay.n_cols)
    jx, jy, za, zb, th, ph, zi = (np.empty(shape) for _ in range(7))
    for k, r in enumerate(range(r0, r1)):
        rng = np.random.default_rng((lay.random_state, _CELLS, r))
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


def _render(lay: Layout, i0: int, j0: int, h: int, w: int, aff: np.ndarray, px_um: float, key: int):
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
    c = row_cells(lay, r_lo, r_hi) if r_hi > r_lo else None
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


def dapi_block(block_info=None, *, lay: Layout, factor: tuple[float, float], level: int) -> np.ndarray:
    (_c0, _c1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    px_x, px_y = lay.um_per_px * factor[0], lay.um_per_px * factor[1]
    aff = np.array([[px_x, 0, 0], [0, px_y, 0], [0, 0, 1]])
    val, tissue, noise = _render(lay, y0, x0, y1 - y0, x1 - x0, aff, max(px_x, px_y), lay.random_state * 64 + level)
    img = 120.0 + 280.0 * tissue + 9000.0 * val + (25.0 + 60.0 * val) * noise
    return np.clip(img, 0, 65535).astype(np.uint16)[None]


def he_block(block_info=None, *, lay: Layout, factor: tuple[float, float], he_to_global: np.ndarray) -> np.ndarray:
    (c0, c1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    # level px -> H&E level-0 px -> global (DAPI px) -> µm
    aff = np.diag([lay.um_per_px, lay.um_per_px, 1.0]) @ he_to_global @ np.diag([factor[0], factor[1], 1.0])
    px_um = lay.um_per_px * np.hypot(he_to_global[0, 0], he_to_global[1, 0]) * max(factor)
    level = round(np.log2(max(factor)))
    val, tissue, noise = _render(lay, y0, x0, y1 - y0, x1 - x0, aff, px_um, lay.random_state * 64 + 32 + level)
    nuc = np.clip(val, 0, 1)[..., None]
    glass = np.array([244.0, 244.0, 246.0], np.float32)
    eosin = np.array([232.0, 160.0, 196.0], np.float32)
    haem = np.array([88.0, 52.0, 140.0], np.float32)
    t = tissue[..., None]
    rgb = (glass * (1 - t) + eosin * t) * (1 - nuc) + haem * nuc + 6.0 * noise[..., None]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)[c0:c1]


def pyramid(shape0: tuple[int, int], n_c: int, n_levels: int, chunk_px: int, draw, dtype, c_coords, transform):
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


def row_counts(lay: Layout, n_genes: int, counts_per_cell: float, r0: int, r1: int, cells: dict):
    """Sparse counts (CSR, float32) of the valid cells of grid rows ``r0:r1`` (row-major).

    Expression follows the synthetic domains (each has its marker genes, 2.7× up) and, for the first 10 % of genes,
    the nucleus size and brightness (so a morphology model can predict them); Poisson noise, library size
    log-normal.
    """
    from scipy import sparse

    rng0 = np.random.default_rng((lay.random_state, _COUNTS))
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
        rng = np.random.default_rng((lay.random_state, _COUNTS, r))
        lib = counts_per_cell * np.exp(0.3 * rng.standard_normal(len(dom)))
        rate = np.exp(logr)
        rate *= (lib / rate.sum(1))[:, None]
        blocks.append(sparse.csr_matrix(rng.poisson(rate).astype(np.float32)))
    return sparse.vstack(blocks, format="csr") if blocks else sparse.csr_matrix((0, n_genes), dtype=np.float32)


def polygons(cx, cy, rx, ry, theta, n_vert: int, wobble: np.ndarray | None = None):
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
