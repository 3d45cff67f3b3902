"""Cell-level scale: a synthetic Xenium-like section of ``n`` cells through the whole pipeline (issue 13 §4).

Steps, each with wall seconds and peak RSS:

1. ``generate``: :func:`morphst.datasets.xenium_like` (lazy DAPI pyramid; polygons, counts built in blocks).
2. ``extract``: :func:`morphst.pp.extract_patches` on the DAPI, cell-scale patches (``--patch-um`` µm at
   ``--patch-px`` px; default 32 µm at 64 px, 0.5 µm/px: the cell and its neighbours; the 112 µm default is the
   field of view of a Visium spot, ~11 cells across).
3. ``embed``: :func:`morphst.tl.embed_patches` ``model="handcrafted"`` on every cell, with ``checkpoint=``.
4. ``cnn_subset`` (not in ``seconds_total``): ``--cnn`` (EfficientNet-Lite0) end to end on ``--cnn-n`` cells of
   another section of the same density, and its forward rate on the same patches already in memory; the time for
   ``n`` cells is extrapolated from the end-to-end rate.
5. ``translate``: :func:`morphst.pp.normalize`, :func:`morphst.pp.select_genes` (100 genes),
   :func:`morphst.tl.predict_expression` (ridge, 3 spatial-block folds) from the handcrafted features.
6. ``fuse``: PCA of the log counts (scanpy, 30 comps) and :func:`morphst.tl.fuse` ``method="graph"``.
7. ``domains``: :func:`morphst.tl.domains` ``method="kmeans"``, 5 domains (ARI against the synthetic truth); then,
   not in ``seconds_total``: ``gmm`` (tied, 2 starts), ``leiden`` (resolution 0.1, no search) and
   :func:`morphst.tl.evaluate_domains` of the k-means domains (``domains_extra``).
8. ``quadrants``: :func:`morphst.tl.quadrants` (the embedding, 50 genes, annotation = domains; relevance on its
   default seeded subsample of 20,000 cells with a stability check on a second one, shared information on every
   cell); then ``gene_quadrants``: :func:`morphst.tl.gene_quadrants` of the predicted genes against the domains
   (its PCC null on every cell, 100 permutations).
9. checks (not in ``seconds_total``) on a ``--check-n``-cell section written to zarr: a run killed with SIGKILL
   (subprocess) and resumed from its checkpoint equals an uninterrupted run (``resume_identical``), and a
   ``distributed.LocalCluster`` of 2 worker processes equals the single process (``distributed_identical``).

Each step prints its seconds, the peak RSS of the step itself (and how far above the RSS at its start: what the
step itself adds) and the process's peak RSS so far. Peaks are the
kernel's (``VmHWM`` of ``/proc/self/status``, reset at each step through ``/proc/self/clear_refs``), so a peak
inside a long C call is not missed as a sampling thread would miss it (that is how an earlier version reported
8,089 MiB for a Leiden step that reached 9,920). Child processes are reported apart: a process started from this
one (the checks' killed run) inherits its peak in ``ru_maxrss``, which is not memory it used.

``--quadrants-target``: only the issue-13 target of :func:`morphst.tl.quadrants`, 50 genes × 1,280 features
(float32, as an EfficientNet embedding) at ``n`` cells on a synthetic table, timed in this process.

Measured here (2 cores, nothing else running, load average 1.3 at start; 2026-12-01), ``1000000``: generate 26 s
(3123 MiB), extract 5 s, embed 666 s (1,502 cells/s, 4312 MiB), translate 47 s (6817 MiB), fuse 35 s (6726 MiB),
kmeans 10 s (ARI 0.998 against the synthetic truth), quadrants 44 s (stability agreement 1.000), gene_quadrants 153 s
(7639 MiB); not in the total: gmm 21 s (ARI 0.615: two starts land in a local optimum), leiden 215 s (7755 MiB, the
peak), evaluate_domains 10 s; CNN EfficientNet-Lite0 31 cells/s end to end (0.93 of its forward rate):
``RESULT n_cells=1000000 model=handcrafted seconds_total=986 peak_rss_mb=7755 embed_per_s=1502 quadrants_s=44.1
gene_quadrants_s=153.2 resume_identical=1 distributed_identical=1 cnn_e2e_per_s=30.9 cnn_forward_per_s=33.3
cnn_ratio=0.93``. An earlier run the same hour, before gene_quadrants cut its prediction layer per fold:
``seconds_total=859 peak_rss_mb=8085 embed_per_s=1864 gene_quadrants_s=162.6`` (gene_quadrants set the peak then;
the embedding rate varies by ~20 % between runs on this shared machine).
2026-12-04, with the worker-thread reader (issue 20), 4 sessions sharing the 2 cores: ``200000`` at load 8-11:
``seconds_total=708 peak_rss_mb=3655`` (the CNN subset step; embed 235 s, 850 cells/s, 2,519 MiB; leiden 365 s,
3,353 MiB; gene_quadrants 349 s, 3,256 MiB; resume and distributed identical; cnn_ratio 0.87); ``1000000 --skip cnn
checks domains_extra quadrants`` at load 9.6 falling to 4.4: embed 1,066 s (938 cells/s, 4,183 MiB), translate 76 s
(6,725 MiB, the peak of those steps), fuse 29 s, kmeans 11 s. The whole run next to a CPU hog, ``1000000 --hog 2
--skip cnn checks`` (two busy-loop processes, other jobs beside them, load 5–9): ``seconds_total=3366
peak_rss_mb=7591 embed_per_s=388 quadrants_s=75.8 gene_quadrants_s=354.7`` (peak in gene_quadrants; Leiden 533 s,
7,539 MiB). "largest child process" printed 5,520 MiB, the parent's RSS at the k-means step: most likely a short
child forked there, whose ``ru_maxrss`` counts the pages it shares with the parent, not memory in use.
Before this session's changes (2026-11-30): handcrafted 447 cells/s (per-patch features), quadrants below 20,000
cells with scikit-learn's trees, leiden 10,009 MiB. ``--quadrants-target`` at 1,000,000 cells: 104 s, peak
7403 MiB (5.1 GB of it the features themselves).

2026-12-05, 2-core CPU shared with other jobs, ``1000000 --workdir <fixed> --resume`` (the embedding read back
from a complete checkpoint), load 5.2 at start, 6.1 at the end: every step below 7 GiB, ``RESULT ... seconds_total=369
peak_rss_mb=7010 embed_per_s=0 quadrants_s=47.5 gene_quadrants_s=124.8 resume_identical=1 distributed_identical=1
cnn_e2e_per_s=24.4 cnn_forward_per_s=26.2 cnn_ratio=0.93``. Step peaks (MiB; in brackets, above the step's start):
generate 3,009, extract 3,718, embed 3,072 (resumed), cnn_subset 5,013 (+1,940), predict 5,684 (+1,899), fuse
6,747 (+1,445), kmeans 5,889, gmm 6,006, leiden 6,768 (+1,106; 267 s), evaluate 6,452 (+1,012), quadrants 6,918
(+767), gene_quadrants 7,010 (+854, the peak; 125 s), checks 6,155. The same command before this day's changes,
embedding computed in the run (1,991 s at load 6-8; it leaves the RSS ~300 MiB higher than a resumed one), load 0.4
at start: ``seconds_total=2609 peak_rss_mb=7799``, predict 7,083 (+2,989), fuse 7,002 (+1,445), leiden 7,799
(+2,235; 741 s), quadrants 7,286 (+953), gene_quadrants 7,314 (+981; 369 s). What changed: the prediction layer is
allocated after the fold fits; Leiden reads the kNN graph without building pynndescent's search index, clusters one
edge per neighbour pair (scanpy adds two; labels identical on a 200,000-cell test, same ARI 0.998 here) and hands
freed heap back; quadrants keeps float32 expression float32.

2026-12-05, later, nothing else running (load 0.3 at start), ``1000000`` with the embedding computed in the run:
``seconds_total=615 peak_rss_mb=7707`` (gene_quadrants; quadrants 7,565, leiden 7,093). The library's heavy steps
then hand freed heap back on entry and gene_quadrants standardises its float32 copy in place: ``seconds_total=607
peak_rss_mb=7729 embed_per_s=2557 quadrants_s=24.5 gene_quadrants_s=107.8 resume_identical=1
distributed_identical=1 cnn_e2e_per_s=111.4 cnn_forward_per_s=131.4 cnn_ratio=0.85``: quadrants 6,955,
gene_quadrants 7,080, but leiden 7,729 (+2,335 over its start). Without the release on entry to ``domains`` (the
code then), beside a test run: ``seconds_total=955 peak_rss_mb=7752`` (leiden; gene_quadrants 7,193). The Leiden
step's peak varied over five runs (6,946-7,752 MiB): the first NN-descent fit of the process leaves reference cycles
that kept large arrays alive until a full garbage collection ran (``--hog 2`` reproduced 7,539 and 7,560). With the
cycles collected after the kNN graph and gene_quadrants' PCC null computed one fold group at a time, every step
below 7 GiB, nothing else running: ``RESULT n_cells=1000000 model=handcrafted hog=0 seconds_total=554
peak_rss_mb=6920 embed_per_s=2653 quadrants_s=24.5 gene_quadrants_s=74.3 resume_identical=1 distributed_identical=1
cnn_e2e_per_s=114.7 cnn_forward_per_s=152.3 cnn_ratio=0.75`` (leiden 6,920, quadrants 6,899, gene_quadrants 6,355;
with ``--resume --hog 2``: leiden 6,738; beside a test-suite run, load 2.6-3.6: ``seconds_total=1141
peak_rss_mb=6933``, quadrants 6,933, leiden 6,915).

Usage: ``python benchmarks/cell_scale.py 1000000 [--workdir /tmp/cells] [--resume] [--hog 2]`` (``--resume`` continues the
embedding of an interrupted run from its checkpoint in ``workdir``; ``--smoke``: every step but the checks at 300 cells,
seconds, figures meaningless). After the steps it names the step that sets the peak RSS. Last line:
``RESULT n_cells=<n> seconds_total=<s> peak_rss_mb=<MiB> embed_per_s=<handcrafted cells/s> quadrants_s=<s>
gene_quadrants_s=<s> resume_identical=<0|1> distributed_identical=<0|1>`` plus the CNN figures.
"""

from __future__ import annotations

import argparse
import atexit
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np


def _read_hwm_mb() -> float:
    """The kernel's peak resident set size of this process (``VmHWM``) since the last reset, MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _read_rss_mb() -> float:
    """This process's resident set size now (``VmRSS``), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_hwm() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``/proc/self/clear_refs``, value 5); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_PEAK = {"process": 0.0}  # the largest step peak so far: this process's own RSS, children not included


def rss_mb() -> float:
    """This process's peak RSS so far, MiB (the largest step peak; every step is measured by the kernel)."""
    return max(_PEAK["process"], _read_hwm_mb())


def children_rss_mb() -> float:
    """Peak RSS of the largest child process waited for (the checks' killed run and dask workers), MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB


ROWS: list[tuple[str, float, float, str]] = []
_STEP = {"peak": 0.0, "start": 0.0}


def step_start() -> float:
    """Start a step: reset the kernel's peak-RSS counter; return the start time."""
    _PEAK["process"] = rss_mb()
    _STEP["start"] = _read_rss_mb()
    if not _reset_hwm():
        msg = "cannot reset the peak RSS counter (/proc/self/clear_refs): per-step peaks need Linux >= 4.0"
        raise SystemExit(msg)
    return time.perf_counter()


def step(name: str, t0: float, note: str = "") -> float:
    dt = time.perf_counter() - t0
    _STEP["peak"] = _read_hwm_mb()
    _PEAK["process"] = max(_PEAK["process"], _STEP["peak"])
    ROWS.append((name, dt, _STEP["peak"], note))
    print(
        f"  {name:<12} {dt:9.1f} s   step peak RSS {_STEP['peak']:8.0f} MiB (+{_STEP['peak'] - _STEP['start']:.0f} over "
        f"its start)   peak so far {rss_mb():8.0f} MiB   {note}",
        flush=True,
    )
    return dt


def run_quadrants(adata, rep: str, genes) -> tuple[float | None, str]:
    """:func:`morphst.tl.quadrants` in this process: ``(seconds or None, message)``."""
    import morphst as mst

    t0 = time.perf_counter()
    try:
        mst.tl.quadrants(adata, rep, "domain", genes=list(genes), n_jobs=2)
    except Exception as e:  # report the failure in the RESULT line
        return None, f"error {type(e).__name__}: {e}"
    dt = time.perf_counter() - t0
    q = adata.uns["quadrants"]
    msg = "ok " + ", ".join(f"{k} {v:.0%}" for k, v in q["shares"].items())
    st = q.get("stability")
    if st:
        msg += f"; stability: agreement {st['agreement']:.3f}, max share diff {st['max_share_difference']:.3f}"
    return dt, msg


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    import morphst as mst
    from spatialdata import read_zarr

    mst.settings.checkpoint_block_size = int(sys.argv[3])
    mst.settings.progress_bar = False
    sdata = read_zarr(sys.argv[1])
    mst.pp.extract_patches(sdata, image_key="morphology_focus", patch_size=float(sys.argv[4]), target_px=int(sys.argv[5]))
    mst.tl.embed_patches(sdata, "handcrafted", checkpoint=sys.argv[2])
    """
)


def identity_checks(n: int, workdir: Path, patch_um: float, patch_px: int, block: int = 256) -> tuple[int, int, str]:
    """Resume after SIGKILL and LocalCluster(2) against an uninterrupted single-process run (``block`` patches per
    checkpoint block; the check needs at least 3 blocks)."""
    import distributed
    import zarr
    from spatialdata import read_zarr

    import morphst as mst

    path = workdir / "check.zarr"
    if path.exists():
        shutil.rmtree(path)
    mst.datasets.xenium_like(n, random_state=7, n_genes=20).write(path)
    sdata = read_zarr(path)
    mst.pp.extract_patches(sdata, image_key="morphology_focus", patch_size=patch_um, target_px=patch_px)
    t = sdata.tables["table"]
    old = mst.settings.checkpoint_block_size
    mst.settings.checkpoint_block_size = block
    try:
        mst.tl.embed_patches(sdata, "handcrafted", key_added="plain")
        ckpt = workdir / "check_embed.zarr"
        if ckpt.exists():
            shutil.rmtree(ckpt)
        script = workdir / "kill_me.py"
        script.write_text(KILL_SCRIPT)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(ckpt), str(block), str(patch_um), str(patch_px)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        n_done = 0
        t0 = time.time()
        while time.time() - t0 < 600 and proc.poll() is None:
            try:
                n_done = int(zarr.open_group(str(ckpt), mode="r")["done"][:].sum())
            except Exception:  # not created yet
                n_done = 0
            if n_done >= 2:
                break
            time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()  # a run that ended before the kill resumes every block: res_ok = 0 below
        n_blocks = int(np.ceil(n / block))
        mst.tl.embed_patches(sdata, "handcrafted", checkpoint=ckpt, key_added="resumed")
        resumed = t.uns["resumed"]["params"]["checkpoint_blocks_resumed"]
        res_ok = int(np.array_equal(t.obsm["resumed"], t.obsm["plain"]) and 0 < resumed < n_blocks)
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            mst.tl.embed_patches(sdata, "handcrafted", client=client, key_added="dist")
        dist_ok = int(np.array_equal(t.obsm["dist"], t.obsm["plain"]))
    finally:
        mst.settings.checkpoint_block_size = old
    note = f"killed after {n_done} blocks done, {resumed} of {n_blocks} resumed"
    return res_ok, dist_ok, note


def cnn_rate(n: int, model: str, patch_um: float, patch_px: int) -> tuple[float, float]:
    """End-to-end and forward-only cells/s of ``model`` on ``n`` cells (same density, another seed)."""
    import torch

    import morphst as mst
    from morphst.tl.models import get_model

    sdata = mst.datasets.xenium_like(n, random_state=11, n_genes=10)
    mst.pp.extract_patches(sdata, image_key="morphology_focus", patch_size=patch_um, target_px=patch_px)
    # warm the image chunks' drawing out of the timing? no: end to end includes reading, as for a user
    t0 = time.perf_counter()
    mst.tl.embed_patches(sdata, model)
    e2e = n / (time.perf_counter() - t0)
    enc = get_model(model)
    enc.channels_last()
    patches = torch.from_numpy(mst.pp.get_patches(sdata)).permute(0, 3, 1, 2)
    ac = mst.settings.resolve_autocast("cpu")
    with torch.inference_mode():
        x = enc.transform(patches).contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast("cpu", dtype=ac) if ac is not None else torch.autocast("cpu", enabled=False)
        with ctx:
            enc.encode(x[:64])
            t0 = time.perf_counter()
            for i in range(0, len(x), 64):
                enc.encode(x[i : i + 64])
            fwd = len(x) / (time.perf_counter() - t0)
    return e2e, fwd


def channel_stats(x):
    """A cheap stand-in model (``--model channel_stats``): per channel mean, std, max and 3 quantiles of a patch."""
    import torch

    flat = x.flatten(2)
    q = torch.quantile(flat, torch.tensor([0.1, 0.5, 0.9], dtype=flat.dtype), dim=2).permute(1, 0, 2).flatten(1)
    return torch.cat([flat.mean(2), flat.std(2), flat.amax(2), q], dim=1)


def quadrants_target(n: int, n_genes: int = 50, n_features: int = 1280) -> None:
    """Issue 13 §3: quadrants at ``n`` cells, 50 genes × 1,280 features (float32), 8 annotation categories."""
    import anndata as ad
    import pandas as pd

    import morphst as mst

    mst.settings.progress_bar = False
    rng = np.random.default_rng(0)
    t0 = step_start()
    label = rng.integers(0, 8, n)
    genes = rng.normal(size=(n, n_genes)).astype(np.float32)
    genes[:, :10] += label[:, None].astype(np.float32) * 0.3
    feats = np.empty((n, n_features), dtype=np.float32)
    for s in range(0, n, 65_536):  # features: 1/4 follow genes, 1/4 follow labels, the rest noise
        m = min(s + 65_536, n) - s
        f = rng.standard_normal((m, n_features), dtype=np.float32)
        f[:, : n_features // 4] += np.repeat(genes[s : s + m, :10], n_features // 40, axis=1)[:, : n_features // 4]
        f[:, n_features // 4 : n_features // 2] += 0.2 * label[s : s + m, None]
        feats[s : s + m] = f
    a = ad.AnnData(genes, obs=pd.DataFrame({"cluster": pd.Categorical(label.astype(str))}))
    a.var_names = [f"g{i}" for i in range(n_genes)]
    a.var["highly_variable"] = True
    a.obsm["X_cnn"] = feats
    del feats, genes
    step("build", t0, f"{n} cells, {n_genes} genes, {n_features} float32 features")
    t0 = step_start()
    mst.tl.quadrants(a, "X_cnn", "cluster", n_jobs=2)
    dt = step("quadrants", t0)
    q = a.uns["quadrants"]
    st = q["stability"] if "stability" in q else {}
    print("shares", {k: round(v, 3) for k, v in q["shares"].items()}, "stability", st)
    print(
        f"RESULT quadrants_target n_cells={n} n_genes={n_genes} n_features={n_features} quadrants_s={dt:.1f} "
        f"peak_rss_mb={rss_mb():.0f} relevance_subsample={q['params'].get('relevance_subsample', n)} "
        f"stability_agreement={st.get('agreement', float('nan')):.3f} "
        f"load_avg={os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=100_000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--patch-um", type=float, default=32.0)
    ap.add_argument("--patch-px", type=int, default=64)
    ap.add_argument(
        "--model",
        default="handcrafted",
        help="model of the embed step: 'handcrafted', or 'channel_stats' (cheap stand-in, to measure the pipeline)",
    )
    ap.add_argument("--cnn", default="efficientnet_lite0")
    ap.add_argument("--cnn-n", type=int, default=1000)
    ap.add_argument("--check-n", type=int, default=3000)
    ap.add_argument(
        "--quadrants-target",
        action="store_true",
        help="only time mst.tl.quadrants on 50 genes x 1,280 float32 features at n synthetic cells",
    )
    ap.add_argument(
        "--skip",
        nargs="*",
        default=[],
        help="steps to skip: cnn, checks, quadrants, domains_extra (gmm, leiden, evaluate)",
    )
    ap.add_argument(
        "--hog",
        type=int,
        default=0,
        help="start this many busy-loop processes for the whole run (a machine busy with other work; issue 20)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep <workdir>/handcrafted.zarr: an interrupted run's embedding continues where it stopped "
        "(seconds_total then counts only this run's share of the embedding)",
    )
    ap.add_argument("--smoke", action="store_true", help="300 cells, CNN on 16, no checks (seconds)")
    args = ap.parse_args()
    if args.smoke:  # the checks' SIGKILL/resume and LocalCluster runs are tests/test_embed_resume.py's
        args.n, args.cnn_n, args.skip = 300, 16, [*args.skip, "checks"]
    if args.quadrants_target:
        quadrants_target(args.n)
        return

    import scanpy as sc
    import torch
    from sklearn.metrics import adjusted_rand_score

    import morphst as mst

    mst.settings.progress_bar = False
    n = args.n
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL) for _ in range(args.hog)
    ]
    atexit.register(lambda: [h.kill() for h in hogs])
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="morphst_cells_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"cell_scale: n={n}, patches {args.patch_um:g} µm -> {args.patch_px} px, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at start, "
        f"{args.hog} busy-loop processes beside it",
        flush=True,
    )
    total = 0.0

    t0 = step_start()
    sdata = mst.datasets.xenium_like(n, random_state=0)
    img = sdata.images["morphology_focus"]["scale0"]["image"]
    total += step("generate", t0, f"image {img.shape[-1]} x {img.shape[-2]} px (lazy), {n} polygons x 2")

    t0 = step_start()
    mst.pp.extract_patches(sdata, image_key="morphology_focus", patch_size=args.patch_um, target_px=args.patch_px)
    total += step("extract", t0)

    model = channel_stats if args.model == "channel_stats" else args.model
    rep = f"X_{args.model}"
    ckpt = workdir / f"{args.model}.zarr"
    if ckpt.exists() and not args.resume:
        shutil.rmtree(ckpt)
    t0 = step_start()
    mst.tl.embed_patches(sdata, model, checkpoint=ckpt)
    t = sdata.tables["table"]
    params = t.uns[rep]["params"]
    n_new = n - min(n, params["checkpoint_blocks_resumed"] * (mst.settings.checkpoint_block_size // 64) * 64)
    dt = step(
        "embed",
        t0,
        f"{args.model}, checkpointed; {params['checkpoint_blocks_resumed']} of {params['n_blocks']} blocks resumed "
        f"from {ckpt}, ~{n_new} cells embedded in this run",
    )
    total += dt
    embed_per_s = n_new / dt

    cnn_e2e = cnn_fwd = float("nan")
    if "cnn" not in args.skip:
        t0 = step_start()
        cnn_e2e, cnn_fwd = cnn_rate(args.cnn_n, args.cnn, args.patch_um, args.patch_px)
        step(
            "cnn_subset",
            t0,
            f"{args.cnn} on {args.cnn_n} cells: {cnn_e2e:.0f} cells/s end to end, forward {cnn_fwd:.0f}/s "
            f"(ratio {cnn_e2e / cnn_fwd:.2f}); {n} cells ~ {n / cnn_e2e / 3600:.2f} h",
        )

    t0 = step_start()
    t1 = step_start()
    mst.pp.normalize(t)
    step("  normalize", t1)
    parts_peak = _STEP["peak"]
    t1 = step_start()
    mst.pp.select_genes(t, n_top_genes=100)
    step("  select", t1, "100 genes, Pearson residuals")
    parts_peak = max(parts_peak, _STEP["peak"])
    t1 = step_start()
    mst.tl.predict_expression(t, rep, cv="spatial_block", n_splits=3, library_key=None)
    step("  predict", t1, "ridge, 3 spatial-block folds")
    parts_peak = max(parts_peak, _STEP["peak"])
    r = t.var["predicted_pcc"] if "predicted_pcc" in t.var else None
    dt = time.perf_counter() - t0  # the translate line: its parts' time, and the largest of their peaks
    ROWS.append(("translate", dt, parts_peak, ""))
    total += dt
    print(
        f"  {'translate':<12} {dt:9.1f} s   step peak RSS {parts_peak:8.0f} MiB   peak so far {rss_mb():8.0f} MiB   "
        + ("" if r is None else f"median Pearson r {np.nanmedian(r):.3f} (100 genes)"),
        flush=True,
    )

    t0 = step_start()

    sc.pp.pca(t, n_comps=30, layer=mst._constants.Key.TARGET)
    mst.tl.fuse(t, ("X_pca", rep), method="graph", n_comps=30, n_neighs=6)
    total += step("fuse", t0, "graph")

    t0 = step_start()
    mst.tl.domains(t, "X_fused", method="kmeans", n_domains=5)
    ari = adjusted_rand_score(t.obs["synthetic_domain"], t.obs["domain"])
    total += step("domains", t0, f"kmeans, ARI vs synthetic truth {ari:.3f}")

    if "domains_extra" not in args.skip:  # not in seconds_total: memory and time of the other methods
        t0 = step_start()
        mst.tl.domains(t, "X_fused", method="gmm", n_domains=5, n_init=2, key_added="domain_gmm")
        ari = adjusted_rand_score(t.obs["synthetic_domain"], t.obs["domain_gmm"])
        step("gmm", t0, f"tied covariance, n_init=2, ARI {ari:.3f}")
        t0 = step_start()
        mst.tl.domains(t, "X_fused", method="leiden", resolution=0.1, key_added="domain_leiden")
        n_l = t.obs["domain_leiden"].nunique()
        ari = adjusted_rand_score(t.obs["synthetic_domain"], t.obs["domain_leiden"])
        step("leiden", t0, f"resolution 0.1 (no search): {n_l} domains, ARI {ari:.3f}")
        t0 = step_start()
        mst.tl.evaluate_domains(
            t, "domain", "synthetic_domain", n_markers=2, layer=mst._constants.Key.TARGET, normalize=False
        )
        ev = t.uns["domain_evaluation"]
        step("evaluate", t0, f"ARI {ev['ari']:.3f}, mean Moran's I {ev['mean_moran_I']:.3f} (10 markers)")

    quad = "skipped"
    gq_s = float("nan")
    if "quadrants" not in args.skip:
        genes = t.var_names[t.var[mst._constants.Key.MORPH_TARGET].to_numpy(bool)][:50]
        t0 = step_start()
        qs, msg = run_quadrants(t, rep, genes)
        step("quadrants", t0, msg[:160])
        if qs is not None:
            total += qs
        quad = f"{qs:.1f}" if qs is not None else "failed"
        t0 = step_start()
        mst.tl.gene_quadrants(t, annotation_key="domain")
        gq = t.uns["gene_quadrants"]
        shares = ", ".join(f"{k} {v:.0%}" for k, v in gq["shares"].items())
        gq_s = step("gene_quadr.", t0, f"{len(gq['genes'])} predicted genes against the k-means domains: {shares}")
        total += gq_s

    res_ok = dist_ok = -1
    if "checks" not in args.skip:
        t0 = step_start()
        res_ok, dist_ok, note = identity_checks(args.check_n, workdir, args.patch_um, args.patch_px)
        step("checks", t0, f"{args.check_n} cells: resume {res_ok}, distributed {dist_ok}; {note}")

    top = max(ROWS, key=lambda r: r[2])
    print(f"the peak RSS is set by the step {top[0].strip()!r}: {top[2]:.0f} MiB (per-step peaks above)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[2]:.1f} (15 min)")
    print(f"largest child process (checks: the killed run, dask workers): {children_rss_mb():.0f} MiB peak RSS")
    print(
        f"RESULT n_cells={n} model={args.model} hog={args.hog} seconds_total={total:.0f} peak_rss_mb={rss_mb():.0f} embed_per_s={embed_per_s:.0f} "
        f"quadrants_s={quad} gene_quadrants_s={gq_s:.1f} resume_identical={res_ok} distributed_identical={dist_ok} "
        f"cnn_e2e_per_s={cnn_e2e:.1f} cnn_forward_per_s={cnn_fwd:.1f} cnn_ratio={cnn_e2e / cnn_fwd:.2f}"
    )


if __name__ == "__main__":
    main()
