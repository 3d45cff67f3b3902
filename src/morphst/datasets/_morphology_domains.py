"""`morphology_domains`: a synthetic spot section in which part of the domain structure is visible only in the image."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .._constants import Key

#: Per domain: marker programme of the expression (domains 3 and 4 share one), haematoxylin and eosin optical
#: density (Beer–Lambert, as :func:`skimage.color.hed2rgb` reads them) and the grain of the nuclear texture (µm).
DOMAINS = {
    "D0": {"programme": 0, "haematoxylin": 0.060, "eosin": 0.034, "grain_um": 3.0},
    "D1": {"programme": 1, "haematoxylin": 0.070, "eosin": 0.030, "grain_um": 3.0},
    "D2": {"programme": 2, "haematoxylin": 0.055, "eosin": 0.038, "grain_um": 3.0},
    "D3": {"programme": 3, "haematoxylin": 0.065, "eosin": 0.032, "grain_um": 2.0},
    "D4": {"programme": 3, "haematoxylin": 0.065, "eosin": 0.045, "grain_um": 8.0},
}


def _domain_of(x_um: np.ndarray, y_um: np.ndarray, centres: np.ndarray, labels: np.ndarray, warp: float) -> np.ndarray:
    """Domain index of points: nearest Voronoi centre after a smooth sinusoidal warp of the coordinates (µm)."""
    xw = x_um + warp * np.sin(y_um / 400.0)
    yw = y_um + warp * np.sin(x_um / 330.0 + 1.0)
    best = np.full(x_um.shape, np.inf)
    out = np.zeros(x_um.shape, dtype=np.int64)
    for (cx, cy), lab in zip(centres, labels, strict=True):
        d = (xw - cx) ** 2 + (yw - cy) ** 2
        closer = d < best
        best[closer] = d[closer]
        out[closer] = lab
    return out


def morphology_domains(
    n_rows: int = 40,
    n_cols: int = 40,
    *,
    random_state: int = 0,
    n_genes: int = 200,
    spot_spacing_um: float = 100.0,
    spot_diameter_um: float = 55.0,
    um_per_px: float = 2.0,
    counts_per_spot: float = 3000.0,
    marker_log_fold: float = 1.2,
    gradient_log_fold: float = 0.5,
    gradient_stain: float = 0.8,
    gradient_density: float = 1.0,
    stain_noise: float = 1.0,
    n_sections: int = 1,
    stain_field: float = 0.3,
    stain_field_um: float = 300.0,
    section_stain: float = 0.15,
    nonlinear_shared: float = 0.5,
    deep_features: int | None = None,
):
    """**Synthetic** spot sections with a known truth in which two domains differ only in the image.

    Not real data: spots, counts and pixels are drawn from ``random_state`` (for tests and for benchmarks of learned
    integration features, Box 1 of Chelebian, Avenel & Wählby, Nat. Commun. 2025, eq. 13–14). Spots lie on a
    hexagonal grid (Visium-like) of ``n_rows × n_cols``, ``spot_spacing_um`` apart, in five domains ``D0``–``D4``
    (a warped Voronoi partition of 12 centres, each domain given at least one). **The truth:**

    - Expression: counts ``~ Poisson`` of a per-gene baseline profile times ``counts_per_spot``. Genes 0–59 form
      four marker programmes of 15 genes each (``exp(marker_log_fold)`` fold): ``D0`` -> genes 0–14, ``D1`` -> 15–29,
      ``D2`` -> 30–44, and **``D3`` and ``D4`` share programme 45–59**: their expression has the same distribution,
      so no method can tell them apart from expression alone.
    - Image (H&E-like RGB, ``uint8``, ``um_per_px`` µm/px, Beer–Lambert mixture of haematoxylin and eosin): each
      domain has its own haematoxylin and eosin density and nuclear texture grain (:data:`DOMAINS`); ``D3``
      (fine 2 µm grain, paler eosin) and ``D4`` (coarse 8 µm grain, more eosin) differ **only in the image**.
      ``D0``–``D2`` differ in both modalities (shared information).
    - A nuisance shared by both modalities and unrelated to the domains: a left-to-right gradient ``g`` in [-1, 1]
      raises genes 60–79 by ``exp(gradient_log_fold * g)`` and the haematoxylin density by a factor
      ``1 + gradient_stain * g`` and the nuclear density (the threshold of the nuclear texture shifts by
      ``gradient_density * g`` standard deviations). Raw morphology features carry it; features that share little
      with expression should not.
    - A nuisance of the image alone, unrelated to domains and expression: the haematoxylin and eosin densities are
      each multiplied by ``1 + stain_noise * f``, ``f`` an independent smooth random field (Gaussian, 60 µm scale,
      unit standard deviation), so neighbouring spots (``spot_spacing_um`` apart) vary almost independently.
    - Harder parts (each a trap for learned integration features): a **smooth image-only stain field**, both
      densities times ``exp(stain_field * F)``, ``F`` a Gaussian field of ``stain_field_um`` scale (unit sd; obs
      ``"stain_field"``): spatially coherent, image-only and unrelated to the domains, so a criterion that only
      rewards spatial coherence ranks it next to D3/D4. **Sections** (``n_sections``, side by side in one image,
      each its own layout): per-section stain offsets ``exp(section_stain * N(0, 1))`` per density, which a method
      must not mistake for structure. A **non-linear shared channel**: eosin times ``1 + nonlinear_shared * (g² -
      1/3)``: shared with expression (``g``) but linearly uncorrelated with it; decorrelation alone keeps it.
      ``deep_features``: ``obsm["X_deep"]``, a random two-layer ReLU map of the per-spot latent (domain, ``F``, the
      section offsets, ``g``, ``g²``) plus noise to that many dimensions: more features than spots per section, as
      CNN embeddings.

    Parameters
    ----------
    n_rows, n_cols
        Rows and columns of the spot grid.
    random_state
        Seed; the same seed gives the same layout, counts and pixels.
    n_genes
        Genes (at least 80: the four marker programmes and the gradient genes).
    spot_spacing_um
        Centre-to-centre distance of neighbouring spots, µm.
    spot_diameter_um
        Spot diameter, µm (the radius of ``shapes["spots"]``).
    um_per_px
        Resolution of the image, µm/px.
    counts_per_spot
        Mean total counts per spot.
    marker_log_fold
        Natural-log fold change of a domain's marker genes.
    gradient_log_fold
        Natural-log fold change of the gradient genes at the right edge (``g = 1``) relative to the centre.
    gradient_stain
        Relative change of the haematoxylin density at the right edge.
    gradient_density
        Shift of the nuclear texture threshold at the right edge, in standard deviations of the texture field.
    stain_noise
        Amplitude of the random stain variation (relative density per standard deviation of the field).
    n_sections
        Sections (``obs["section"]``: ``S0``, ``S1``, ...).
    stain_field, stain_field_um
        Log-amplitude and scale (µm) of the smooth stain field (0: off).
    section_stain, nonlinear_shared
        Standard deviation of the per-section log stain offsets; strength of the non-linear shared channel.
    deep_features
        Width of ``obsm["X_deep"]``; ``None``: not made.

    Returns
    -------
    A :class:`~spatialdata.SpatialData` (in memory) with

    - ``images["he"]``: ``(3, y, x)`` uint8, channels ``r, g, b``;
    - ``shapes["spots"]``: circles, centres and radius in image px;
    - ``tables["table"]``: raw counts (CSR float32, ``n_spots × n_genes``, genes ``gene_000``...), annotating
      ``"spots"``; ``obs["truth"]`` (categorical ``D0``–``D4``), ``obs["expression_programme"]`` (``P0``–``P3``, the
      best any expression-only method can recover), ``obs["gradient"]`` (``g``), ``obs["stain_field"]``,
      ``obs["section"]``;
      ``obsm["spatial"]`` (image px); ``obsm["X_deep"]`` (``deep_features``); ``uns["morphst_dataset"]`` with
      ``random_state``, ``um_per_px`` and ``section_stain_offsets`` ``(n_sections, 2)`` (log, H and E).

    Both coordinate system ``"global"`` (µm, ``Scale(um_per_px)``) and the image's pixel space are declared, so
    :func:`morphst.pp.extract_patches` needs no unit argument.

    Raises
    ------
    ValueError
        A size not positive, ``n_genes < 80``, or a negative amplitude.
    """
    _check_arguments(
        n_rows=n_rows,
        n_cols=n_cols,
        spot_spacing_um=spot_spacing_um,
        spot_diameter_um=spot_diameter_um,
        um_per_px=um_per_px,
        counts_per_spot=counts_per_spot,
        n_sections=n_sections,
        stain_field_um=stain_field_um,
        n_genes=n_genes,
        amplitudes={"stain_field": stain_field, "section_stain": section_stain, "nonlinear_shared": nonlinear_shared},
        deep_features=deep_features,
    )
    rng = np.random.default_rng(random_state)
    opts = _ImageOptions(
        gradient_stain, gradient_density, stain_noise, stain_field, stain_field_um, nonlinear_shared, (0.0, 0.0)
    )
    lays, programmes, counts, imgs, latents, offs = [], [], [], [], [], []
    # per section the draws come in this order (layout, expression, image): the same seed gives the same sections
    for _ in range(int(n_sections)):
        lay = _layout(rng, n_rows, n_cols, spot_spacing_um)
        prog, cnt = _expression(rng, lay, n_genes, counts_per_spot, marker_log_fold, gradient_log_fold)
        offsets = tuple(float(v) for v in section_stain * rng.normal(size=2)) if n_sections > 1 else (0.0, 0.0)
        img, field_at_spots = _image(rng, lay, um_per_px, replace(opts, section_offsets=offsets))
        lays.append(lay)
        programmes.append(prog)
        counts.append(cnt)
        imgs.append(img)
        latents.append(_latent(lay, field_at_spots, offsets))
        offs.append(offsets)
    lay, img = _side_by_side(lays, imgs, um_per_px)
    deep = None if deep_features is None else _deep(rng, np.vstack(latents), int(deep_features))
    sdata = _to_sdata(
        lay, np.concatenate(programmes), np.vstack(counts), img, random_state, um_per_px, spot_diameter_um,
        np.repeat([f"S{i}" for i in range(int(n_sections))], [len(x.x_um) for x in lays]),
        np.concatenate([la[:, 5] for la in latents]),
    )  # fmt: skip
    sdata.tables[Key.TABLE].uns[Key.DATASET]["section_stain_offsets"] = np.asarray(offs)
    if deep is not None:
        sdata.tables[Key.TABLE].obsm["X_deep"] = deep
    return sdata


def _check_arguments(*, n_genes: int, amplitudes: dict, deep_features, **sizes: float) -> None:
    """Raise a ``ValueError`` for a size that is not positive, a negative amplitude or fewer than 80 genes."""
    for name, v in amplitudes.items():
        if not (np.isfinite(v) and v >= 0):
            msg = f"`{name}` must be a finite number >= 0, got {v}."
            raise ValueError(msg)
    if deep_features is not None and (not isinstance(deep_features, int | np.integer) or deep_features < 1):
        msg = f"`deep_features` must be a positive integer or None, got {deep_features!r}."
        raise ValueError(msg)
    for name, v in sizes.items():
        if not v > 0:
            msg = f"`{name}` must be positive, got {v}."
            raise ValueError(msg)
    if n_genes < 80:
        msg = (
            f"`n_genes` must be at least 80 (four marker programmes of 15 genes and 20 gradient genes), got {n_genes}."
        )
        raise ValueError(msg)


@dataclass
class _Layout:
    """Spot centres (µm) on the hexagonal grid, the section's size (µm) and its warped Voronoi domains."""

    x_um: np.ndarray
    y_um: np.ndarray
    width_um: float
    height_um: float
    centres: np.ndarray  # (12, 2) Voronoi centres, µm
    labels: np.ndarray  # domain index of each centre
    warp: float  # amplitude of the coordinate warp, µm
    domain: np.ndarray  # domain index of each spot
    gradient: np.ndarray  # g in [-1, 1] of each spot, left to right

    def domain_of(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        return _domain_of(x_um, y_um, self.centres, self.labels, self.warp)


def _layout(rng: np.random.Generator, n_rows: int, n_cols: int, spot_spacing_um: float) -> _Layout:
    """Hexagonal grid of spots (µm) and warped Voronoi domains of 12 centres, each domain given at least one."""
    names = list(DOMAINS)
    dy = spot_spacing_um * np.sqrt(3) / 2
    r, c = np.mgrid[0:n_rows, 0:n_cols]
    x_um = (c + 0.5 * (r % 2)).ravel() * spot_spacing_um + spot_spacing_um
    y_um = r.ravel() * dy + spot_spacing_um
    width_um = (n_cols + 1.5) * spot_spacing_um
    height_um = (n_rows - 1) * dy + 2 * spot_spacing_um
    n_centres = 12
    labels = np.concatenate([np.arange(len(names)), rng.integers(0, len(names), n_centres - len(names))])
    centres = rng.uniform([0, 0], [width_um, height_um], size=(n_centres, 2))
    warp = 0.08 * max(width_um, height_um)
    domain = _domain_of(x_um, y_um, centres, labels, warp)
    gradient = 2.0 * (x_um - x_um.min()) / max(np.ptp(x_um), 1e-9) - 1.0
    return _Layout(x_um, y_um, width_um, height_um, centres, labels, warp, domain, gradient)


def _expression(
    rng: np.random.Generator,
    lay: _Layout,
    n_genes: int,
    counts_per_spot: float,
    marker_log_fold: float,
    gradient_log_fold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Marker programme of each spot and Poisson counts ``(n_spots, n_genes)`` float32 (marker and gradient genes)."""
    names = list(DOMAINS)
    n = len(lay.x_um)
    base = rng.lognormal(mean=0.0, sigma=1.0, size=n_genes)
    log_rate = np.tile(np.log(base / base.sum()), (n, 1))
    programme = np.array([DOMAINS[names[d]]["programme"] for d in lay.domain])
    for p in range(4):
        log_rate[programme == p, 15 * p : 15 * (p + 1)] += marker_log_fold
    log_rate[:, 60:80] += gradient_log_fold * lay.gradient[:, None]
    rate = np.exp(log_rate)
    rate /= rate.sum(axis=1, keepdims=True)
    size = counts_per_spot * rng.lognormal(0.0, 0.2, size=n)
    counts = rng.poisson(rate * size[:, None]).astype(np.float32)
    return programme, counts


@dataclass(frozen=True)
class _ImageOptions:
    """The image nuisances of :func:`morphology_domains` (see its docstring)."""

    gradient_stain: float
    gradient_density: float
    stain_noise: float
    stain_field: float
    stain_field_um: float
    nonlinear_shared: float
    section_offsets: tuple[float, float]  # log offsets of the haematoxylin and eosin densities


def _smooth_field(rng: np.random.Generator, h_px: int, w_px: int, um_per_px: float, scale_um: float) -> np.ndarray:
    """Unit-sd Gaussian random field of ``scale_um`` smoothing, drawn on a coarse grid and interpolated to pixels."""
    from scipy.ndimage import gaussian_filter, zoom

    cell_um = max(scale_um / 8.0, um_per_px)
    gh, gw = int(np.ceil(h_px * um_per_px / cell_um)) + 1, int(np.ceil(w_px * um_per_px / cell_um)) + 1
    f = gaussian_filter(rng.normal(size=(gh, gw)), sigma=scale_um / cell_um, mode="wrap")
    f = zoom(f, (h_px / gh, w_px / gw), order=1)[:h_px, :w_px]
    return (f - f.mean()) / max(f.std(), 1e-12)


def _image(rng: np.random.Generator, lay: _Layout, um_per_px: float, o: _ImageOptions) -> tuple[np.ndarray, np.ndarray]:
    """``(3, y, x)`` uint8 H&E-like image (domain densities and texture grain, the nuisances of ``o``), and the
    smooth stain field at the spots."""
    from scipy.ndimage import gaussian_filter
    from skimage.color import hed2rgb

    names = list(DOMAINS)
    h_px, w_px = int(np.ceil(lay.height_um / um_per_px)), int(np.ceil(lay.width_um / um_per_px))
    yy, xx = np.mgrid[0:h_px, 0:w_px].astype(np.float64) * um_per_px
    pix_dom = lay.domain_of(xx, yy)
    pix_grad = np.clip(2.0 * (xx - lay.x_um.min()) / max(np.ptp(lay.x_um), 1e-9) - 1.0, -1.5, 1.5)
    del yy, xx
    texture = np.zeros((h_px, w_px))
    for grain in sorted({d["grain_um"] for d in DOMAINS.values()}):
        field = gaussian_filter(rng.normal(size=(h_px, w_px)), sigma=grain / um_per_px / 2)
        field /= field.std()
        here = np.isin(pix_dom, [i for i, k in enumerate(names) if DOMAINS[k]["grain_um"] == grain])
        texture[here] = field[here]
    # soft nuclei where the field is high; more of them towards the right edge
    nuclei = 1.0 / (1.0 + np.exp(-3.0 * (texture - 0.5 + o.gradient_density * pix_grad)))
    del texture

    def stain_field():
        f = gaussian_filter(rng.normal(size=(h_px, w_px)), sigma=60.0 / um_per_px)
        return np.clip(1.0 + o.stain_noise * f / max(f.std(), 1e-12), 0.2, None)

    h_od = np.array([DOMAINS[k]["haematoxylin"] for k in names])[pix_dom] * (1 + o.gradient_stain * pix_grad)
    h_od *= stain_field()
    e_od = np.array([DOMAINS[k]["eosin"] for k in names])[pix_dom] * stain_field()
    smooth = np.zeros((h_px, w_px))
    if o.stain_field > 0:
        smooth = _smooth_field(rng, h_px, w_px, um_per_px, o.stain_field_um)
    h_od *= np.exp(o.stain_field * smooth + o.section_offsets[0])
    e_od *= np.exp(o.stain_field * smooth + o.section_offsets[1]) * (1 + o.nonlinear_shared * (pix_grad**2 - 1 / 3))
    iy = np.clip(np.round(lay.y_um / um_per_px).astype(int), 0, h_px - 1)
    ix = np.clip(np.round(lay.x_um / um_per_px).astype(int), 0, w_px - 1)
    at_spots = smooth[iy, ix]
    del pix_dom, pix_grad, smooth
    hed = np.stack(
        [
            np.clip(h_od * (0.3 + 1.4 * nuclei), 0, None),
            e_od * (0.8 + 0.4 * (1 - nuclei)) + 0.003 * rng.normal(size=(h_px, w_px)),
            np.zeros((h_px, w_px)),
        ],
        axis=-1,
    )
    del h_od, e_od, nuclei
    rgb = hed2rgb(np.clip(hed, 0, None))
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8).transpose(2, 0, 1), at_spots


def _latent(lay: _Layout, field_at_spots: np.ndarray, offsets: tuple[float, float]) -> np.ndarray:
    """Per spot: domain one-hot (5), the smooth stain field, the two section offsets, ``g`` and ``g²`` ``(n, 10)``."""
    onehot = np.eye(len(DOMAINS))[lay.domain]
    g = lay.gradient
    off = np.tile(np.asarray(offsets), (len(g), 1))
    return np.column_stack([onehot, field_at_spots, off, g, g**2])


def _deep(rng: np.random.Generator, latent: np.ndarray, width: int) -> np.ndarray:
    """A deep-feature-like embedding: a random two-layer ReLU map of the standardised latent, plus noise."""
    z = (latent - latent.mean(0)) / np.where(latent.std(0) > 0, latent.std(0), 1.0)
    h = np.maximum(z @ rng.normal(size=(z.shape[1], 64)) + 0.5 * rng.normal(size=(len(z), 64)), 0)
    out = h @ rng.normal(size=(64, width)) / 8.0
    return (out + rng.normal(size=out.shape)).astype(np.float32)


def _side_by_side(lays: list[_Layout], imgs: list[np.ndarray], um_per_px: float) -> tuple[_Layout, np.ndarray]:
    """Sections placed left to right in one image (spot x shifted by the widths before); one layout of all spots."""
    if len(lays) == 1:
        return lays[0], imgs[0]
    h = max(im.shape[1] for im in imgs)
    padded = [np.pad(im, ((0, 0), (0, h - im.shape[1]), (0, 0)), constant_values=255) for im in imgs]
    shifts = np.concatenate([[0], np.cumsum([im.shape[2] for im in imgs])[:-1]]) * um_per_px
    cat = np.concatenate
    lay = replace(
        lays[0],
        x_um=cat([la.x_um + sh for la, sh in zip(lays, shifts, strict=True)]),
        y_um=cat([la.y_um for la in lays]),
        width_um=float(sum(im.shape[2] for im in imgs) * um_per_px),
        height_um=float(h * um_per_px),
        domain=cat([la.domain for la in lays]),
        gradient=cat([la.gradient for la in lays]),
    )
    return lay, np.concatenate(padded, axis=2)


def _to_sdata(
    lay: _Layout,
    programme: np.ndarray,
    counts: np.ndarray,
    img: np.ndarray,
    random_state: int,
    um_per_px: float,
    spot_diameter_um: float,
    section: np.ndarray,
    stain_at_spots: np.ndarray,
):
    """The SpatialData: image ``"he"``, circles ``"spots"`` and the table, in ``"global"`` (µm) and image px."""
    import anndata as ad
    import pandas as pd
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Scale

    names = list(DOMAINS)
    n, n_genes = counts.shape
    tf = {"global": Scale([um_per_px, um_per_px], axes=("x", "y"))}
    xy_px = np.column_stack([lay.x_um, lay.y_um]) / um_per_px
    obs = pd.DataFrame(
        {
            "truth": pd.Categorical([names[d] for d in lay.domain], categories=names),
            "expression_programme": pd.Categorical(
                [f"P{p}" for p in programme], categories=[f"P{p}" for p in range(4)]
            ),
            "gradient": lay.gradient,
            "stain_field": stain_at_spots,
            "section": pd.Categorical(section),
            "region": pd.Categorical(["spots"] * n),
            "instance_id": np.arange(n),
        },
        index=[f"spot_{i:05d}" for i in range(n)],
    )
    var = pd.DataFrame(index=[f"gene_{g:03d}" for g in range(n_genes)])
    var["programme"] = pd.Categorical(
        [f"P{g // 15}" if g < 60 else ("gradient" if g < 80 else "background") for g in range(n_genes)]
    )
    adata = ad.AnnData(sparse.csr_matrix(counts), obs=obs, var=var)
    adata.obsm["spatial"] = xy_px
    adata.uns[Key.DATASET] = {
        "name": "morphology_domains",
        "synthetic": True,
        "description": "synthetic spot section (mst.datasets.morphology_domains); not real data; D3/D4 differ only "
        "in the image",
        "random_state": int(random_state),
        "um_per_px": {"global": float(um_per_px)},
        "coordinate_systems": {"global": "micrometres"},
    }
    shapes = ShapesModel.parse(
        xy_px,
        geometry=0,
        radius=np.full(n, spot_diameter_um / 2 / um_per_px),
        index=np.arange(n),
        transformations=tf,
    )
    image = Image2DModel.parse(img, dims=("c", "y", "x"), c_coords=["r", "g", "b"], transformations=tf)
    table = TableModel.parse(adata, region="spots", region_key="region", instance_key="instance_id")
    sdata = SpatialData(images={"he": image}, shapes={"spots": shapes}, tables={Key.TABLE: table})
    sdata.attrs["morphst_synthetic"] = {
        "generator": "mst.datasets.morphology_domains",
        "random_state": int(random_state),
    }
    return sdata
