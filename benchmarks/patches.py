"""Patch extraction throughput: morphst vs spatialdata's ImageTilesDataset vs squidpy's generate_spot_crops.

A synthetic 3 x 10,000 x 10,000 uint8 image (0.4 µm/px, 4-level pyramid, 1024 px zarr chunks, written to a temporary
folder outside the repository) with 5,000 circle spots. Every method produces 112 µm patches resampled to 224 px
(280 px at level 0). Each method runs in its own subprocess so its peak RSS is its own.

- morphst: ``extract_patches`` + ``PatchReader.iter_batches`` from the zarr-backed level (all 5,000 spots), resized
  to 224 px, and without resizing (``target_px`` = 280, the crop size), to compare like with like.
- spatialdata ``ImageTilesDataset(rasterize=True)`` on the same SpatialData (``--n-imagetiles`` spots: it is slow).
- squidpy ``ImageContainer.generate_spot_crops`` with the level-0 image **in memory** (``--n-squidpy`` spots),
  crops scaled to 224 px, and crops without resizing. ``vs_squidpy`` in the RESULT line compares the crops without
  resizing (squidpy's fast path) with morphst's; the table also shows the resized comparison.

Usage: ``python benchmarks/patches.py [--size 10000] [--n-spots 5000]`` (``--smoke``: a 1,024 px image with 12
spots, every method in one process, seconds). Last line:
``RESULT patches_per_s=<x> vs_imagetiles=<ratio> vs_squidpy=<ratio> peak_rss_mb=<y>``.

``--scaling`` (issue 20): the reader alone with ``n_jobs`` = 1 and 2, side by side in one process, repeated
alternately (``--repeats``), on a Xenium-like section with an H&E image (``mst.datasets.xenium_like(he=True)``,
``--n-cells`` cells, written to zarr and read back), 112 µm patches at 224 px (308 px windows resampled):
``PatchReader.iter_batches`` (the embed loop's reader on the CPU: batch ``--batch-size``, buffers reused) and ``get_patches``. Per run: wall
patches/s, CPU seconds per 1,000 patches and cores used (CPU time / wall time), with the load average, as the
machine may be shared: on a busy machine the wall rate follows the cores the scheduler gives, the CPU cost does
not. ``torch`` threads are set to ``n_jobs`` too. Last line: ``RESULT reader n_jobs1_per_s=<best> n_jobs2_per_s=<best>
speedup=<ratio> get_patches_vs_reader=<ratio> first_touch_ms_per_patch=<ms> load_avg=<1 min at the end>``.
``get_patches`` writes into a fresh array; the first write to fresh memory costs the kernel's page faults
(``first_touch_ms_per_patch``, timed apart on one thread), which the reader's reused buffers do not pay.

Measured (2026-12-04, 12,000 cells, nothing else running, load 0.6–0.9): reader 6,854/s with ``n_jobs=1``,
11,863/s with 2 (1.73×; 1.88–1.90 cores used); ``get_patches`` 3,551/s and 6,201/s (1.75×), 0.52 of the reader:
its extra CPU cost (0.29 vs 0.16 ms per patch) is the first touch of its 1.8 GB output (2.8 s for 12,000 patches on
one thread here, 0.23 ms per patch).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

UM_PER_PX = 0.4
PATCH_UM = 112.0
TARGET_PX = 224


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_data(path: Path, size: int, n_spots: int, seed: int = 0) -> None:
    import anndata as ad
    import dask.array as da
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Scale

    from morphst.pp import set_um_per_unit

    chunk = 1024

    def block(b, block_info=None):  # textured, compressible, deterministic per block
        _, (y0, y1), (x0, x1) = block_info[None]["array-location"]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        v = (128 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + ((xx * 7 + yy * 13) % 17)).astype(np.uint8)
        return np.stack([v, v // 2 + 60, 255 - v])[: b.shape[0]]

    arr = da.zeros((3, size, size), dtype=np.uint8, chunks=(3, chunk, chunk)).map_blocks(block, dtype=np.uint8)
    tf = {"global": Scale([UM_PER_PX, UM_PER_PX], axes=("x", "y"))}
    image = Image2DModel.parse(
        arr, dims=("c", "y", "x"), scale_factors=[2, 2, 2], chunks=(3, chunk, chunk), transformations=tf
    )
    rng = np.random.default_rng(seed)
    xy = rng.uniform(200, size - 200, size=(n_spots, 2))
    shapes = ShapesModel.parse(
        xy, geometry=0, radius=np.full(n_spots, 50.0 / UM_PER_PX / 2), index=np.arange(n_spots), transformations=tf
    )
    obs = pd.DataFrame({"region": pd.Categorical(["spots"] * n_spots), "instance_id": np.arange(n_spots)})
    obs.index = obs.index.astype(str)
    table = TableModel.parse(
        ad.AnnData(np.zeros((n_spots, 1), np.float32), obs=obs),
        region="spots",
        region_key="region",
        instance_key="instance_id",
    )
    sdata = SpatialData(images={"image": image}, shapes={"spots": shapes}, tables={"table": table})
    set_um_per_unit(sdata, "global", 1.0)  # "global" is in µm (the Scale above); kept in the zarr's attrs
    sdata.write(path)


def run_morphst(path: Path, n: int, target_px: int = TARGET_PX) -> dict:
    import spatialdata as sd
    import torch  # noqa: F401  (imported before timing, as the baselines import theirs)

    import morphst as mst
    from morphst.pp._patches import PatchReader

    mst.settings.progress_bar = False
    sdata = sd.read_zarr(path)
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    mst.pp.extract_patches(sdata, patch_size=PATCH_UM, target_px=target_px)
    reader = PatchReader(sdata)
    k = 0
    for _, p in reader.iter_batches(batch_size=64):
        k += len(p)
    dt = time.perf_counter() - t0
    return {"n": k, "seconds": dt, "per_s": k / dt, "peak_rss_mb": _rss_mb(), "rss_before_mb": rss_before}


def run_morphst_crop_only(path: Path, n: int) -> dict:
    return run_morphst(path, n, target_px=round(PATCH_UM / UM_PER_PX))


def run_imagetiles(path: Path, n: int) -> dict:
    import spatialdata as sd
    from spatialdata.dataloader import ImageTilesDataset

    sdata = sd.read_zarr(path)
    t0 = time.perf_counter()
    ds = ImageTilesDataset(
        sdata,
        regions_to_images={"spots": "image"},
        regions_to_coordinate_systems={"spots": "global"},
        tile_dim_in_units=PATCH_UM,
        rasterize=True,
        rasterize_kwargs={"target_width": TARGET_PX},
        table_name="table",
    )
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n):
        tile = ds[i]
    dt = time.perf_counter() - t0
    shape = tuple(tile.shape) if hasattr(tile, "shape") else str(type(tile))
    return {"n": n, "seconds": dt, "init_s": t_init, "per_s": n / dt, "peak_rss_mb": _rss_mb(), "shape": str(shape)}


def run_squidpy(path: Path, n: int, scale: bool = True) -> dict:
    import anndata as ad
    import spatialdata as sd
    import squidpy as sq

    sdata = sd.read_zarr(path)
    img = sdata.images["image"]["scale0"]["image"].to_numpy().transpose(1, 2, 0)  # in memory, (y, x, c)
    gdf = sdata.shapes["spots"]
    crop_px = PATCH_UM / UM_PER_PX
    adata = ad.AnnData(np.zeros((len(gdf), 1), np.float32))
    adata.obsm["spatial"] = np.column_stack([gdf.geometry.x, gdf.geometry.y])
    adata.uns["spatial"] = {"lib": {"scalefactors": {"spot_diameter_fullres": crop_px}}}
    ic = sq.im.ImageContainer(img, layer="image", library_id="lib")
    sub = adata[:n].copy()
    kw = {"scale": TARGET_PX / crop_px} if scale else {}
    t0 = time.perf_counter()
    k = 0
    shape = None
    for crop in ic.generate_spot_crops(sub, library_id="lib", as_array="image", **kw):
        k += 1
        shape = np.shape(crop)
    dt = time.perf_counter() - t0
    return {"n": k, "seconds": dt, "per_s": k / dt, "peak_rss_mb": _rss_mb(), "shape": str(shape)}


def run_squidpy_crop_only(path: Path, n: int) -> dict:
    return run_squidpy(path, n, scale=False)


PHASES = {
    "morphst": run_morphst,
    "morphst_crop": run_morphst_crop_only,
    "imagetiles": run_imagetiles,
    "squidpy": run_squidpy,
    "squidpy_crop": run_squidpy_crop_only,
}


def smoke() -> None:
    """--smoke: every method of the default mode on a 1,024 px image with 12 spots, in this process (no peak RSS
    per method: the figures only show that each path runs)."""
    with tempfile.TemporaryDirectory(prefix="morphst-bench-smoke-") as tmp:
        path = Path(tmp) / "synthetic.zarr"
        make_data(path, 1024, 12)
        res = {k: fn(path, 4 if k == "imagetiles" else 12) for k, fn in PHASES.items()}
    for k, v in res.items():
        print(f"{k:<14}{v['n']:>5} patches {v['per_s']:>9.1f}/s")
    if res["morphst"]["n"] != 12 or res["squidpy_crop"]["n"] != 12:
        raise SystemExit("smoke: a method did not return every patch")
    print(f"RESULT smoke patches_per_s={res['morphst']['per_s']:.0f}")


def _timed(fn) -> tuple[float, float, int]:
    """``(wall s, CPU s of this process, patches)`` of ``fn()``."""
    c0, t0 = time.process_time(), time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, time.process_time() - c0, n


def scaling(n_cells: int, repeats: int, batch_size: int) -> None:
    import spatialdata as sd
    import torch

    import morphst as mst
    from morphst.pp._patches import PatchReader

    mst.settings.progress_bar = False
    with tempfile.TemporaryDirectory(prefix="morphst-reader-") as tmp:
        s = mst.datasets.xenium_like(n_cells, he=True, n_genes=20, random_state=0)
        s = sd.SpatialData(
            images={"he_image": s.images["he_image"]},
            shapes={"cell_boundaries": s.shapes["cell_boundaries"]},
            tables={"table": s.tables["table"]},
            attrs=dict(s.attrs),  # the µm declaration of the coordinate system
        )
        s.write(f"{tmp}/x.zarr")
        s = sd.read_zarr(f"{tmp}/x.zarr")
        mst.pp.extract_patches(s, image_key="he_image", patch_size=PATCH_UM, target_px=TARGET_PX)
        w = s.tables["table"].uns["patches"]["regions"]["cell_boundaries"]["window_px"][0]
        print(
            f"xenium_like({n_cells}, he=True) from zarr: {PATCH_UM:g} µm patches, {w[0]} px windows -> {TARGET_PX} px; "
            f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f}",
            flush=True,
        )

        def reader_run() -> int:
            k = 0
            for _, p in PatchReader(s).iter_batches(batch_size=batch_size, reuse_buffers=True):
                k += len(p)
            return k

        def get_run() -> int:
            return len(mst.pp.get_patches(s, batch_size=batch_size))

        best: dict = {}
        print(f"{'run':<26}{'n_jobs':>7}{'patches/s':>11}{'CPU s/1k':>10}{'cores used':>12}{'load 1 min':>12}")
        for r in range(repeats):
            for what, fn in (("reader (embed loop)", reader_run), ("get_patches", get_run)):
                for nj in (1, 2):
                    mst.settings.n_jobs = nj
                    torch.set_num_threads(nj)
                    wall, cpu, n = _timed(fn)
                    best[(what, nj)] = max(best.get((what, nj), 0.0), n / wall)
                    print(
                        f"{what + f' #{r + 1}':<26}{nj:>7}{n / wall:>11.0f}{1000 * cpu / n:>10.3f}{cpu / wall:>12.2f}"
                        f"{os.getloadavg()[0]:>12.2f}",
                        flush=True,
                    )
    # get_patches returns a fresh array; the reader reuses its buffers. Writing a fresh array costs the kernel's
    # page faults (first touch), a cost of returning the patches rather than of reading them: measured apart here.
    t = time.perf_counter()
    fresh = np.empty((n_cells, TARGET_PX, TARGET_PX, 3), dtype=np.uint8)
    fresh[...] = 1
    touch = time.perf_counter() - t
    print(
        f"first touch of a fresh ({n_cells}, {TARGET_PX}, {TARGET_PX}, 3) uint8 array (what get_patches writes into): "
        f"{touch:.2f} s on one thread = {1000 * touch / n_cells:.3f} ms per patch"
    )
    del fresh
    r1, r2 = best[("reader (embed loop)", 1)], best[("reader (embed loop)", 2)]
    g2 = best[("get_patches", 2)]
    print(f"best of {repeats}: reader {r1:.0f}/s (n_jobs=1), {r2:.0f}/s (n_jobs=2); get_patches {g2:.0f}/s (n_jobs=2)")
    print(
        f"RESULT reader n_jobs1_per_s={r1:.0f} n_jobs2_per_s={r2:.0f} speedup={r2 / r1:.2f} "
        f"get_patches_vs_reader={g2 / r2:.2f} first_touch_ms_per_patch={1000 * touch / n_cells:.3f} "
        f"load_avg={os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--n-spots", type=int, default=5_000)
    ap.add_argument("--n-imagetiles", type=int, default=60)
    ap.add_argument("--n-squidpy", type=int, default=1_000)
    ap.add_argument("--phase", default=None)
    ap.add_argument("--path", default=None)
    ap.add_argument("--scaling", action="store_true", help="the reader alone with n_jobs = 1 and 2 (issue 20)")
    ap.add_argument("--n-cells", type=int, default=12_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--smoke", action="store_true", help="tiny image, every method in this process (seconds)")
    args = ap.parse_args()
    if args.smoke:
        smoke()
        return
    if args.scaling:
        scaling(args.n_cells, args.repeats, args.batch_size)
        return
    if args.phase is not None:
        print(json.dumps(PHASES[args.phase](Path(args.path), int(args.n_spots))))
        return
    with tempfile.TemporaryDirectory(prefix="morphst-bench-") as tmp:
        path = Path(tmp) / "synthetic.zarr"
        t0 = time.perf_counter()
        make_data(path, args.size, args.n_spots)
        print(
            f"data: 3 x {args.size} x {args.size} uint8 pyramid, {args.n_spots} spots, written in {time.perf_counter() - t0:.0f}s"
        )
        res = {}
        phases = [
            ("morphst", args.n_spots),
            ("morphst_crop", args.n_spots),
            ("imagetiles", args.n_imagetiles),
            ("squidpy", args.n_squidpy),
            ("squidpy_crop", args.n_squidpy),
        ]
        for phase, n in phases:
            out = subprocess.run(
                [sys.executable, __file__, "--phase", phase, "--path", str(path), "--n-spots", str(n)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            if out.returncode != 0:
                print(out.stderr[-3000:])
                raise SystemExit(f"phase {phase} failed")
            res[phase] = json.loads(out.stdout.strip().splitlines()[-1])
    image_mb = 3 * args.size**2 / 2**20
    print(f"\n{'method':<34}{'patches':>9}{'seconds':>9}{'patches/s':>11}{'peak RSS MB':>13}")
    labels = {
        "morphst": "morphst (zarr) -> 224 px",
        "morphst_crop": "morphst (zarr), no resize",
        "imagetiles": "spatialdata ImageTilesDataset",
        "squidpy": "squidpy crops -> 224 px (RAM)",
        "squidpy_crop": "squidpy spot crops, no resize (RAM)",
    }
    for k, v in res.items():
        print(f"{labels[k]:<34}{v['n']:>9}{v['seconds']:>9.2f}{v['per_s']:>11.1f}{v['peak_rss_mb']:>13.0f}")
    m = res["morphst"]
    print(
        f"level-0 image: {image_mb:.0f} MB. morphst RSS after imports and opening the zarr: "
        f"{m['rss_before_mb']:.0f} MB, peak while reading: {m['peak_rss_mb']:.0f} MB (+"
        f"{m['peak_rss_mb'] - m['rss_before_mb']:.0f} MB; decoded-chunk cache capped at 128 MB per level, "
        "independent of the image size)."
    )
    same = res["morphst"]["per_s"] / res["squidpy"]["per_s"]
    crop = res["morphst_crop"]["per_s"] / res["squidpy_crop"]["per_s"]
    print(f"vs squidpy, same work: resized to 224 px {same:.1f}x, crops without resizing {crop:.1f}x (used below)")
    print(
        f"RESULT patches_per_s={m['per_s']:.0f} vs_imagetiles={m['per_s'] / res['imagetiles']['per_s']:.0f} "
        f"vs_squidpy={crop:.1f} peak_rss_mb={m['peak_rss_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
