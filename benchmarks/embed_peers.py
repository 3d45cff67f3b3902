"""Patch embedding side by side with peers: morphst vs LazySlide and sopa, same model, same patches, same data.

One process, the same torch threads for every library. Data: HER2ST C3 (180 spots, H&E 9,270 × 9,936 px at
0.687 µm/px). Patches: 224 × 224 px at the image's own resolution (154 µm), centred on the spots. Model: one
``torch.nn.Module`` handed to every library: ImageNet normalisation of float RGB in [0, 1], then ResNet-18
(torchvision) with random weights (seed 0; the forward cost is that of the trained network), 512-d output.

- ``morphst``: :func:`morphst.pp.extract_patches` (``patch_size`` = 224 px in µm, ``target_px=224``) +
  :func:`morphst.tl.embed_patches` with the module as the model, from the SpatialData that
  :func:`morphst.datasets.her2st` loads (an in-memory pyramid).
- ``LazySlide`` (``lazyslide.tl.feature_extraction``): the same 224-px squares (a shapes element of the spot
  squares in level-0 pixels), read by ``wsidata`` through ``tiffslide`` from a tiled pyramidal TIFF of the same
  pixels (uncompressed, written before timing), the module as a callable with a ``transform`` that scales uint8 to
  [0, 1] (its loader's default ``num_workers=0``).
- ``sopa`` (``sopa.patches.compute_embeddings``): its own 224-px grid at level 0 of the same SpatialData, only the
  patches that touch a spot square (``roi_key``); sopa tiles a grid, so its patches are not the spot squares and
  their number differs: rates are per patch.

Each library's time is end to end (patch geometry, reading, preprocessing, model, writing the features), the best
of ``--repeats`` runs, alternating libraries; ``forward`` is the module alone on tensors in memory. The printed
ratio is morphst's patches/s over the peer's. ``max_rel_diff``: the largest per-spot relative L2 difference between
morphst's and LazySlide's features of the same squares (the same pixels and model: near 0 unless the windows
differ by a pixel).

Install the peers apart from morphst's environment, e.g. ``pip install --no-deps --target DIR lazyslide
lazyslide-models wsidata sopa opencv-python-headless legendkit tiffslide openslide-python openslide-bin`` and pass
``--peers-dir DIR`` (prepended to ``sys.path``). A peer that does not import or fails is reported as
``not run: <reason>`` and the other rows still run.

Usage: ``python benchmarks/embed_peers.py [--peers-dir DIR] [--threads 2] [--repeats 2] [--batch-size 64]
[--device cpu]`` (``--smoke``: 12 cells of a synthetic H&E section, one repeat; peers skipped if absent; seconds,
figures meaningless). Last line: ``RESULT model=resnet18_random n_patches=<n> morphst_per_s=<x>
lazyslide_per_s=<x|nan> sopa_per_s=<x|nan> ratio_lazyslide=<m/l|nan> ratio_sopa=<m/s|nan> forward_per_s=<x>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MORPHST_DATA_DIR", REPO.parent / "shared" / "data"))
PATCH_PX = 224


def make_model():
    """ImageNet normalisation + torchvision ResNet-18 (random weights, seed 0), ``(B, 3, H, W)`` in [0, 1] -> ``(B, 512)``."""
    import torch
    import torchvision

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torchvision.models.resnet18(weights=None)
            self.net.fc = torch.nn.Identity()
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        def forward(self, x):
            return self.net((x - self.mean) / self.std)

    return Net().eval()


def load(smoke: bool):
    """``(sdata, image_key, µm/px)``: HER2ST C3, or a synthetic H&E section of 12 cells for ``--smoke``."""
    import morphst as mst

    if smoke:
        sdata = mst.datasets.xenium_like(12, he=True, n_genes=5, chunk_px=512, n_levels=2)
        return sdata, "he_image", 0.2125
    sdata = mst.datasets.her2st(library_id="C3", data_dir=DATA_DIR)
    return sdata, "C3_he", 0.68737638


def image_rgb(sdata, image_key: str) -> np.ndarray:
    """Level 0 of the image as ``(y, x, 3)`` uint8."""
    from spatialdata.models import get_axes_names

    el = sdata.images[image_key]
    arr = el["scale0"]["image"] if hasattr(el, "children") and "scale0" in el.children else el
    assert tuple(get_axes_names(arr)) == ("c", "y", "x")
    return np.ascontiguousarray(np.moveaxis(np.asarray(arr.data), 0, -1)[..., :3]).astype(np.uint8)


def write_tiff(rgb: np.ndarray, path: Path, um_per_px: float) -> None:
    """A tiled (256 px), uncompressed pyramidal TIFF (levels 1, 1/2, 1/4, 1/8 as sub-IFDs) that tiffslide reads."""
    import tifffile

    res = (1e4 / um_per_px, 1e4 / um_per_px)  # pixels per cm
    levels = [rgb[:: 2**i, :: 2**i] for i in range(4) if min(rgb.shape[:2]) // 2**i >= 256]
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        kw = {"tile": (256, 256), "photometric": "rgb", "resolutionunit": "CENTIMETER"}
        tif.write(levels[0], subifds=len(levels) - 1, resolution=res, **kw)
        for i, lev in enumerate(levels[1:], 1):
            tif.write(lev, subfiletype=1, resolution=(res[0] / 2**i, res[1] / 2**i), **kw)


def squares(cx: np.ndarray, cy: np.ndarray):
    """224-px squares centred on ``(cx, cy)`` (level-0 px) with integer corners, as morphst rounds its windows."""
    import geopandas as gpd
    from shapely.geometry import box

    x0, y0 = np.round(cx - PATCH_PX / 2), np.round(cy - PATCH_PX / 2)
    return gpd.GeoDataFrame(geometry=[box(x, y, x + PATCH_PX, y + PATCH_PX) for x, y in zip(x0, y0, strict=True)])


def run_morphst(sdata, image_key, um_per_px, net, batch_size, device):
    import morphst as mst

    t0 = time.perf_counter()
    mst.pp.extract_patches(sdata, image_key=image_key, patch_size=PATCH_PX * um_per_px, target_px=PATCH_PX)
    mst.tl.embed_patches(sdata, net, key_added="X_peer_bench", batch_size=batch_size, device=device)
    dt = time.perf_counter() - t0
    t = sdata.tables["table"]
    return t.n_obs / dt, np.asarray(t.obsm["X_peer_bench"])


def run_lazyslide(wsi, net, batch_size, device):
    import lazyslide as zs
    import torch

    def to_float(tile):  # (y, x, 3) uint8 -> (3, y, x) float in [0, 1]
        return torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1).float().div_(255.0)

    n = len(wsi.shapes["spot_squares"])
    t0 = time.perf_counter()
    feats = zs.tl.feature_extraction(
        wsi, net, model_name="resnet18_random", transform=to_float, tile_key="spot_squares", device=device,
        batch_size=batch_size, pbar=False, return_features=True,
    )  # fmt: skip
    return n / (time.perf_counter() - t0), np.asarray(feats)


def run_sopa(sdata, image_key, net, batch_size, device):
    import sopa

    t0 = time.perf_counter()
    key = sopa.patches.compute_embeddings(
        sdata, net, PATCH_PX, level=0, image_key=image_key, batch_size=batch_size, device=device,
        roi_key="spot_squares", key_added="sopa_bench",
    )  # fmt: skip
    dt = time.perf_counter() - t0
    n = sdata.tables[key].n_obs
    return n / dt, n


def forward_rate(net, sdata, batch_size: int) -> float:
    """The module alone on the morphst patches already in memory (float, [0, 1])."""
    import torch

    import morphst as mst

    x = torch.from_numpy(mst.pp.get_patches(sdata)).permute(0, 3, 1, 2).float().div(255.0)
    with torch.inference_mode():
        net(x[:batch_size])
        t0 = time.perf_counter()
        for i in range(0, len(x), batch_size):
            net(x[i : i + batch_size])
    return len(x) / (time.perf_counter() - t0)


def prepare_peers(sdata, image_key, um_per_px, workdir: Path) -> dict:
    """Import the peers and build their inputs (not timed): ``{name: input or 'not run: <reason>'}``."""
    import morphst as mst

    out: dict = {}
    mst.pp.extract_patches(sdata, image_key=image_key, patch_size=PATCH_PX * um_per_px, target_px=PATCH_PX)
    t = sdata.tables["table"]
    sq = squares(t.obs["patch_x_px"].to_numpy(), t.obs["patch_y_px"].to_numpy())
    try:
        import lazyslide  # noqa: F401
        from spatialdata.models import ShapesModel
        from wsidata import open_wsi

        path = workdir / "image.tiff"
        write_tiff(image_rgb(sdata, image_key), path, um_per_px)
        wsi = open_wsi(path, reader="tiffslide")
        wsi.shapes["spot_squares"] = ShapesModel.parse(sq.copy())
        out["lazyslide"] = wsi
    except Exception as e:  # ImportError or a failing reader: say which
        out["lazyslide"] = f"not run: {type(e).__name__}: {str(e)[:160]}"
    try:
        import sopa  # noqa: F401
        from spatialdata.models import ShapesModel
        from spatialdata.transformations import get_transformation

        tr = get_transformation(sdata.images[image_key], get_all=True)
        sdata.shapes["spot_squares"] = ShapesModel.parse(sq.copy(), transformations=tr)
        out["sopa"] = sdata
    except Exception as e:
        out["sopa"] = f"not run: {type(e).__name__}: {str(e)[:160]}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers-dir", default=os.environ.get("MORPHST_PEERS_DIR"), help="folder the peers live in")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="12 synthetic cells, one repeat (seconds)")
    args = ap.parse_args()
    if args.peers_dir:
        sys.path.insert(0, args.peers_dir)
    if args.smoke:
        args.repeats, args.batch_size = 1, 8
    import torch

    import morphst as mst

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    mst.settings.progress_bar = False
    mst._logging.logger.setLevel("WARNING")
    sdata, image_key, um_per_px = load(args.smoke)
    net = make_model().to(args.device)
    with tempfile.TemporaryDirectory(prefix="morphst_peers_") as tmp:
        peers = prepare_peers(sdata, image_key, um_per_px, Path(tmp))
        best = {"morphst": 0.0, "lazyslide": 0.0, "sopa": 0.0}
        n_sopa, feats = 0, {}
        for _ in range(args.repeats):  # alternate: the machine may be shared
            best["morphst"] = max(
                best["morphst"], (r := run_morphst(sdata, image_key, um_per_px, net, args.batch_size, args.device))[0]
            )
            feats["morphst"] = r[1]
            if not isinstance(peers["lazyslide"], str):
                try:
                    rate, feats["lazyslide"] = run_lazyslide(peers["lazyslide"], net, args.batch_size, args.device)
                    best["lazyslide"] = max(best["lazyslide"], rate)
                except Exception as e:
                    peers["lazyslide"] = f"not run: {type(e).__name__}: {str(e)[:160]}"
            if not isinstance(peers["sopa"], str):
                try:
                    rate, n_sopa = run_sopa(peers["sopa"], image_key, net, args.batch_size, args.device)
                    best["sopa"] = max(best["sopa"], rate)
                except Exception as e:
                    peers["sopa"] = f"not run: {type(e).__name__}: {str(e)[:160]}"
        fwd = forward_rate(net, sdata, args.batch_size)
    n = sdata.tables["table"].n_obs
    rel = float("nan")
    if "lazyslide" in feats and not isinstance(peers["lazyslide"], str):
        a, b = feats["morphst"], feats["lazyslide"]
        rel = float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max())
    print(
        f"{'synthetic (--smoke)' if args.smoke else 'HER2ST C3'}: {n} patches of {PATCH_PX} px at {um_per_px:.3f} µm/px, "
        f"ResNet-18 (random weights), batch {args.batch_size}, torch threads {torch.get_num_threads()}, device "
        f"{args.device}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':<12}{'patches':>9}{'patches/s':>11}{'morphst / peer':>16}")
    print(f"{'forward':<12}{n:>9}{fwd:>11.1f}")
    print(f"{'morphst':<12}{n:>9}{best['morphst']:>11.1f}")
    ratio = {}
    for name, count in (("lazyslide", n), ("sopa", n_sopa)):
        if isinstance(peers[name], str):
            print(f"{name:<12}{peers[name]}")
            best[name] = ratio[name] = float("nan")
            continue
        ratio[name] = best["morphst"] / best[name]
        print(f"{name:<12}{count:>9}{best[name]:>11.1f}{ratio[name]:>16.2f}")
    print(f"max per-spot relative L2 difference, morphst vs LazySlide features of the same squares: {rel:.2e}")
    print(
        f"RESULT model=resnet18_random n_patches={n} morphst_per_s={best['morphst']:.1f} "
        f"lazyslide_per_s={best['lazyslide']:.1f} sopa_per_s={best['sopa']:.1f} "
        f"ratio_lazyslide={ratio['lazyslide']:.2f} ratio_sopa={ratio['sopa']:.2f} forward_per_s={fwd:.1f} "
        f"max_rel_diff={rel:.2e}"
    )


if __name__ == "__main__":
    main()
