"""A trained graph encoder for spatial domains: expression on the spatial graph, morphology on its edges.

Next to :func:`morphst.tl.fuse` (fixed smoothing), :func:`graph_encoder` *trains* the integration encoder (graph
contrastive as GraphST, or a graph attention autoencoder as STAGATE) on each section's spatial kNN graph; its
output goes to :func:`morphst.tl.domains`. Graph and tiles: ``_encoder_graph``; models and training:
``_encoder_models``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

import numpy as np

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, doc_library_key, doc_random_state, inject_docs
from ..._utils import check_coordinates, check_obsm, get_adata, records_params, save_results
from ..._utils._graph import sections
from ..._utils._hints import rep_hint
from ..._utils._sections import resolve_library_key, section_groups
from ._encoder_graph import halo, morphology_weights, row_pointer, spatial_graph, subgraph, tiles

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

EncoderMethod = Literal["contrastive", "autoencoder"]
_METHODS = ("contrastive", "autoencoder")
#: training steps (one per tile) that ``n_epochs=None`` aims at
_DEFAULT_STEPS = 300


@inject_docs(data=doc_data, library_key=doc_library_key, random_state=doc_random_state, copy=doc_copy)
def graph_encoder(
    data: SpatialData | AnnData,
    use_rep: str = "X_pca",
    *,
    morphology_rep: str | None = None,
    method: EncoderMethod = "contrastive",
    morph_weight: float = 1.0,
    n_neighs: int = 6,
    n_latent: int = 32,
    n_hidden: int = 128,
    n_epochs: int | None = None,
    learning_rate: float = 1e-3,
    tile_size: int = 20_000,
    spatial_key: str = Key.SPATIAL,
    library_key: str | None = Key.LIBRARY,
    table_key: str = Key.TABLE,
    key_added: str = "X_graph_encoder",
    random_state: int = 0,
    device: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Train a graph encoder on the spatial neighbour graph; its representation is input for spatial domains.

    Nodes are spots (or cells) with features ``obsm[use_rep]`` (e.g. the PCA of log-normalised expression), centred
    within each section (the alignment of several sections: a section's mean is removed, so a shift between
    sections does not become a domain) and scaled by one overall factor to unit mean variance per feature. Edges
    join each spot to its ``n_neighs`` nearest spots within its section (symmetrised; sections never link). With
    ``morphology_rep``, an edge between spots that look different is down-weighted,
    ``w = exp(−morph_weight · d_m² / 2σ_m²)`` (``d_m`` the distance of the standardised morphology features,
    ``σ_m`` its median over edges): the idea of STAIG (Yang et al., *Nat. Commun.* 2025), which uses
    image-embedding distances to decide which edges to keep, as a soft weight.

    - ``"contrastive"`` (default): one graph-convolution layer ``Z = Â X W`` (``Â`` the symmetric-normalised
      weighted graph with self-loops), trained as deep graph infomax with a local summary, as GraphST (Long et al.,
      *Nat. Commun.* 2023): a bilinear discriminator tells each spot's ``ReLU(Z)`` from that of features permuted
      across spots, against the sigmoid of its neighbourhood's mean; plus 10 × the MSE of a graph-convolution
      decoder's reconstruction of ``X``. Representation: ``Z``.
    - ``"autoencoder"``: a graph attention autoencoder with tied weights and attention, as STAGATE (Dong & Zhang,
      *Nat. Commun.* 2022): ``Z = ELU(Σ α_ij X_j W1) W2``, ``α`` the softmax over a spot's edges of
      ``σ(a_s·h_i + a_d·h_j)`` times the edge weight; trained on the MSE of the reconstruction. Representation: ``Z``.

    Training is full-batch per tile (Adam): a section of more than ``tile_size`` observations is cut into compact
    spatial tiles, one step per tile, so the memory of a step does not grow with the section; the representation is
    then computed tile by tile with each tile's one-hop neighbours, which equals the whole-graph result. Seeded by
    ``random_state``; on the CPU two runs are bit-identical.

    Parameters
    ----------
    {data}
    use_rep
        ``obsm`` key of the node features, shape ``(n_obs, n_features)`` (e.g. ``"X_pca"`` from ``sc.pp.pca``).
    morphology_rep
        ``obsm`` key of morphology features (e.g. ``"X_<model>"`` from :func:`morphst.tl.embed_patches`) that
        weight the edges; ``None``: all edges weigh 1.
    method
        ``"contrastive"`` or ``"autoencoder"``, see above.
    morph_weight
        How strongly morphological dissimilarity down-weights an edge (>= 0; 0 ignores ``morphology_rep``).
    n_neighs
        Spatial neighbours per observation within its section (6 on Visium's hexagonal grid); capped at the section
        size - 1.
    n_latent
        Width of the representation.
    n_hidden
        ``"autoencoder"``: width of the attention layer.
    n_epochs
        Passes over all tiles (one Adam step per tile). ``None``: ``ceil(300 / n_tiles)``, i.e. 300 epochs for one
        section that fits one tile, and about 300 steps in all for a larger input.
    learning_rate
        Adam's learning rate.
    tile_size
        Most observations per training tile (>= 2).
    spatial_key
        ``obsm`` key of the coordinates, shape ``(n_obs, 2)``, any unit.
    {library_key}
    key_added
        ``obsm`` and ``uns`` key of the result.
    {random_state}
        It seeds the initial weights, the corruption and the order of tiles.
    device
        Torch device (``"cuda"``, ``"cpu"``, …). ``None``: the CPU.
    {copy}

    Returns
    -------
    ``None``, or with ``copy=True`` the modified AnnData. Sets:

    ``.obsm[key_added]`` : ndarray, shape ``(n_obs, n_latent)``, float32
        The representation, e.g. for ``mst.tl.domains(adata, use_rep=key_added, method="gmm")``.
    ``.uns[key_added]["loss"]`` : ndarray, shape ``(n_epochs,)``
        The training curve: mean loss per epoch.
    ``.uns[key_added]["params"]`` : dict
        The parameters, the number of edges and tiles, ``sigma_morph``, the training time (s) and the final loss.

    Raises
    ------
    KeyError
        If ``use_rep``, ``morphology_rep``, ``spatial_key`` or ``library_key`` is missing (the message lists what
        is there).
    ValueError
        If a representation holds NaN/inf, a section holds a single observation (it has no neighbour), or
        ``method``, ``morph_weight``, ``n_neighs``, ``n_latent``, ``n_hidden``, ``n_epochs``, ``learning_rate`` or
        ``tile_size`` are out of range. Nothing is written.
    """
    adata = get_adata(data, table_key)
    n_epochs = _check_options(method, morph_weight, n_neighs, n_latent, n_hidden, n_epochs, learning_rate, tile_size)
    x, morph, coords, groups, lib = _check_inputs(adata, use_rep, morphology_rep, spatial_key, library_key)
    dev = _device(device)
    start = logg.info(f"training a graph encoder ({method}) on {use_rep!r}")  # after every check: no log on error

    t0 = time.perf_counter()
    z, curve, info = _fit(
        x, morph, coords, groups, method=method, morph_weight=morph_weight, n_neighs=n_neighs, n_latent=n_latent,
        n_hidden=n_hidden, n_epochs=n_epochs, lr=learning_rate, tile_size=tile_size, seed=random_state, device=dev,
    )  # fmt: skip
    params = records_params(
        use_rep=use_rep, morphology_rep=morphology_rep, method=method,
        morph_weight=float(morph_weight) if morph is not None else 0.0, n_neighs=n_neighs, n_latent=n_latent,
        n_hidden=n_hidden if method == "autoencoder" else None, learning_rate=learning_rate,
        tile_size=tile_size, spatial_key=spatial_key, library_key=lib, random_state=random_state, device=str(dev),
        seconds=round(time.perf_counter() - t0, 2), final_loss=float(curve[-1]), **info,
    )  # fmt: skip

    added = [("obsm", key_added, z), ("uns", key_added, {"params": params, "loss": curve})]
    return save_results(adata, added, copy=copy, start=start)


def _check_options(method, morph_weight, n_neighs, n_latent, n_hidden, n_epochs, lr, tile_size) -> int | None:
    """Check the scalar options; return ``n_epochs`` as an int (``None`` stays ``None``: it depends on the tiles)."""
    if method not in _METHODS:
        msg = f"`method` must be one of {list(_METHODS)}, got {method!r}."
        raise ValueError(msg)
    for name, v, low in (("n_neighs", n_neighs, 1), ("n_latent", n_latent, 1), ("n_hidden", n_hidden, 1)) + (
        ("n_epochs", 1 if n_epochs is None else n_epochs, 1),
        ("tile_size", tile_size, 2),
    ):
        if int(v) != v or v < low:
            msg = f"`{name}` must be an integer >= {low}, got {v!r}."
            raise ValueError(msg)
    if not (np.isfinite(morph_weight) and morph_weight >= 0):
        msg = f"`morph_weight` must be >= 0, got {morph_weight!r}."
        raise ValueError(msg)
    if not (np.isfinite(lr) and lr > 0):
        msg = f"`learning_rate` must be > 0, got {lr!r}."
        raise ValueError(msg)
    return None if n_epochs is None else int(n_epochs)


def _check_inputs(adata, use_rep, morphology_rep, spatial_key, library_key):
    """Features, morphology (or ``None``), coordinates, sections; raise before anything is computed or written."""
    x = check_obsm(adata, use_rep, hint=rep_hint(use_rep))
    morph = None if morphology_rep is None else check_obsm(adata, morphology_rep, hint=rep_hint(morphology_rep))
    coords = check_coordinates(adata, spatial_key)
    lib = resolve_library_key(adata, library_key)
    groups = section_groups(adata, lib)
    single = [lab for lab, idx in sections(groups, adata.n_obs) if idx.size < 2]
    if single:
        where = f"section(s) {single[:5]} of `obs[{lib!r}]`" if lib is not None else "the table"
        msg = f"{where} hold a single observation, which has no spatial neighbour; drop them first."
        raise ValueError(msg)
    return x, morph, coords, groups, lib


def _device(device):
    import torch

    return torch.device("cpu") if device is None else torch.device(device)


def _features(x: np.ndarray, groups) -> np.ndarray:
    """Centred per section, then one overall scale so that the mean variance per feature is 1."""
    x = np.array(x, dtype=np.float32, copy=True)
    for _, idx in sections(groups, x.shape[0]):
        x[idx] -= x[idx].mean(axis=0)
    scale = float(np.sqrt(np.mean(x.var(axis=0))))
    return x / scale if scale > 0 else x


def _batches(feats, graph, parts, device, *, with_halo: bool):
    """Yield one :class:`Batch` per tile (with its one-hop halo for inference); edge values from the whole graph."""
    import torch

    from ._encoder_models import Batch

    deg = np.bincount(graph.rows, weights=graph.weight, minlength=graph.n) + 1.0
    w_sym = graph.weight / np.sqrt(deg[graph.rows] * deg[graph.cols])
    indptr = row_pointer(graph)
    for idx in parts:
        nodes = halo(graph, indptr, idx) if with_halo else idx
        r, c, pos = subgraph(graph, indptr, nodes)
        loop = np.arange(nodes.size)
        rows, cols = np.concatenate([r, loop]), np.concatenate([c, loop])
        ws = np.concatenate([w_sym[pos], 1.0 / deg[nodes]])
        wm = np.concatenate([graph.weight[pos], np.ones(nodes.size)])
        wm = wm / np.bincount(rows, weights=wm, minlength=nodes.size)[rows]

        def t(a, dtype=torch.float32):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

        yield Batch(
            t(feats[nodes]), t(rows, torch.long), t(cols, torch.long), t(ws), t(wm), t(np.arange(idx.size), torch.long)
        )


def _fit(x, morph, coords, groups, *, method, morph_weight, n_neighs, n_latent, n_hidden, n_epochs, lr, tile_size,
         seed, device):  # fmt: skip
    """Build the graph and tiles, train, embed; returns ``(z, loss curve, info)``."""
    import torch

    from ._encoder_models import Autoencoder, Contrastive, embed_all, train

    graph = spatial_graph(coords, groups, n_neighs)
    sigma = None
    if morph is not None and morph_weight > 0:
        graph, sigma = morphology_weights(graph, morph, morph_weight)
    feats = _features(x, groups)
    parts = tiles(coords, groups, tile_size)
    n_epochs = int(np.ceil(_DEFAULT_STEPS / len(parts))) if n_epochs is None else n_epochs
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if method == "contrastive":
            model = Contrastive(feats.shape[1], n_latent)
        else:
            model = Autoencoder(feats.shape[1], n_hidden, n_latent)
    model = model.to(device)
    gen = torch.Generator().manual_seed(seed)
    curve = train(model, list(_batches(feats, graph, parts, device, with_halo=False)), n_epochs, lr, 0.0, gen)
    z = embed_all(model, _batches(feats, graph, parts, device, with_halo=True), x.shape[0], parts)
    info = {"n_epochs": n_epochs, "n_edges": graph.n_edges, "n_tiles": len(parts), "sigma_morph": sigma}
    return z, curve, info


__all__ = ["graph_encoder"]
