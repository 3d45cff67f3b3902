"""embed_patches checkpoints (resume after SIGKILL) and dask.distributed workers: identical features (issue 13 §2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import morphst as mst
from morphst.tl._embed import _distributed

BLOCK = 32  # patches per checkpoint block in these tests (the default, 2048, would be one block)


def slow_features(x):
    """Mean, std and max per channel: a deterministic model (the subprocess version sleeps per batch)."""
    import torch

    return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


@pytest.fixture(scope="module")
def cells_zarr(tmp_path_factory):
    """A 600-cell Xenium-like section written to zarr (small chunks, so reading order matters)."""
    path = tmp_path_factory.mktemp("cells") / "section.zarr"
    sdata = mst.datasets.xenium_like(600, n_genes=10, chunk_px=256, n_levels=3, random_state=2)
    sdata.write(path)
    return path


def _read(path):
    from spatialdata import read_zarr

    sdata = read_zarr(path)
    mst.pp.extract_patches(sdata, patch_size=12.0, target_px=16)
    return sdata


SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    import morphst as mst
    from spatialdata import read_zarr

    mst.settings.checkpoint_block_size = int(sys.argv[3])
    mst.settings.progress_bar = False

    def slow_features(x):
        time.sleep(0.03)
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    sdata = read_zarr(sys.argv[1])
    mst.pp.extract_patches(sdata, patch_size=12.0, target_px=16)
    mst.tl.embed_patches(sdata, slow_features, batch_size=8, dtype="float32", checkpoint=sys.argv[2])
    print("finished")
    """
)


def _done(path) -> tuple[int, int]:
    import zarr

    try:
        d = zarr.open_group(str(path), mode="r")["done"][:]
    except Exception:  # not created yet
        return 0, -1
    return int(d.sum()), len(d)


def test_sigkill_then_resume_is_identical_to_an_uninterrupted_run(cells_zarr, tmp_path, monkeypatch):
    monkeypatch.setattr(mst.settings, "checkpoint_block_size", BLOCK)
    ckpt = tmp_path / "emb.zarr"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(cells_zarr), str(ckpt), str(BLOCK)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        t0 = time.time()
        while time.time() - t0 < 240:
            n_done, n_blocks = _done(ckpt)
            if n_done >= 3 or proc.poll() is not None:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read().decode()
    assert proc.returncode == -signal.SIGKILL, out
    n_done, n_blocks = _done(ckpt)
    assert 3 <= n_done < n_blocks, (n_done, n_blocks, out)
    # resume in this process: the finished blocks are read back, the rest computed
    sdata = _read(cells_zarr)
    mst.tl.embed_patches(sdata, slow_features, batch_size=8, dtype="float32", checkpoint=ckpt, key_added="resumed")
    t = sdata.tables["table"]
    params = t.uns["resumed"]["params"]
    assert n_done <= params["checkpoint_blocks_resumed"] < params["n_blocks"] == n_blocks
    # an uninterrupted run without a checkpoint
    mst.tl.embed_patches(sdata, slow_features, batch_size=8, dtype="float32", key_added="plain")
    assert np.array_equal(t.obsm["resumed"], t.obsm["plain"])
    assert np.isfinite(t.obsm["plain"]).all()
    # a complete checkpoint: nothing is recomputed, same result
    mst.tl.embed_patches(sdata, slow_features, batch_size=8, dtype="float32", checkpoint=ckpt, key_added="again")
    assert t.uns["again"]["params"]["checkpoint_blocks_resumed"] == n_blocks
    assert np.array_equal(t.obsm["again"], t.obsm["plain"])


def test_checkpoint_of_another_call_is_refused(cells_zarr, tmp_path, monkeypatch):
    monkeypatch.setattr(mst.settings, "checkpoint_block_size", BLOCK)
    sdata = _read(cells_zarr)
    ckpt = tmp_path / "emb.zarr"
    mst.tl.embed_patches(sdata, slow_features, batch_size=8, dtype="float32", checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"different call \(batch_size: stored 8, now 16"):
        mst.tl.embed_patches(sdata, slow_features, batch_size=16, dtype="float32", checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"different call \(model: stored 'callable slow_features', now 'handcraf"):
        mst.tl.embed_patches(sdata, "handcrafted", batch_size=8, dtype="float32", checkpoint=ckpt)
    mst.pp.extract_patches(sdata, patch_size=14.0, target_px=16)
    with pytest.raises(ValueError, match=r"different call.*patch_size_um"):
        mst.tl.embed_patches(sdata, slow_features, batch_size=8, dtype="float32", checkpoint=ckpt)
    other = tmp_path / "not_a_checkpoint"
    other.mkdir()
    (other / "data.txt").write_text("user data")
    with pytest.raises(ValueError, match="not an embed_patches checkpoint"):
        mst.tl.embed_patches(sdata, slow_features, batch_size=8, checkpoint=other)
    assert (other / "data.txt").read_text() == "user data"


def test_distributed_workers_give_the_single_process_result(cells_zarr):
    distributed = pytest.importorskip("distributed")
    sdata = _read(cells_zarr)
    t = sdata.tables["table"]
    mst.tl.embed_patches(sdata, "handcrafted", batch_size=16, key_added="local_hc")
    mst.tl.embed_patches(sdata, slow_features, batch_size=16, dtype="float32", key_added="local_cb")

    def nested_features(x):  # the same model, nested: shipped by value, so workers need not import this module
        import torch

        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        mst.tl.embed_patches(sdata, "handcrafted", batch_size=16, key_added="dist_hc", client=client)
        mst.tl.embed_patches(sdata, nested_features, batch_size=16, dtype="float32", key_added="dist_cb", client="auto")
        # both workers took part, each built the handcrafted model once
        counts = client.run(lambda: len(_distributed._WORKER_MODELS))
        assert len(counts) == 2
        assert t.uns["dist_hc"]["params"]["client"] == cluster.scheduler_address
        # a SpatialData that is not backed by zarr: a clear error
        mem = mst.datasets.xenium_like(50, n_genes=5)
        with pytest.raises(ValueError, match=r"backed by a zarr store.*sdata.write"):
            mst.tl.embed_patches(mem, "handcrafted", client=client)
    assert np.array_equal(t.obsm["dist_hc"], t.obsm["local_hc"])
    assert np.array_equal(t.obsm["dist_cb"], t.obsm["local_cb"])


def test_client_argument_is_checked(cells_zarr):
    sdata = _read(cells_zarr)
    with pytest.raises(ValueError, match="'auto'"):
        mst.tl.embed_patches(sdata, "handcrafted", client="yes")
    with pytest.raises(TypeError, match=r"dask\.distributed Client"):
        mst.tl.embed_patches(sdata, "handcrafted", client=object())


def test_checkpointed_run_with_reader_threads_equals_the_plain_run(cells_zarr, tmp_path, monkeypatch):
    """Blocks written by the background writer while 2 reader threads read ahead: the store holds the plain run's
    features in plan order, and the result equals a single-thread run without a checkpoint."""
    import zarr

    monkeypatch.setattr(mst.settings, "checkpoint_block_size", BLOCK)
    sdata = _read(cells_zarr)
    t = sdata.tables["table"]
    monkeypatch.setattr(mst.settings, "n_jobs", 1)
    mst.tl.embed_patches(sdata, slow_features, batch_size=8, dtype="float32", key_added="plain")
    monkeypatch.setattr(mst.settings, "n_jobs", 2)
    ckpt = tmp_path / "threads.zarr"
    mst.tl.embed_patches(sdata, slow_features, batch_size=8, dtype="float32", checkpoint=ckpt, key_added="ckpt")
    assert np.array_equal(t.obsm["ckpt"], t.obsm["plain"])
    g = zarr.open_group(str(ckpt), mode="r")
    rows, feats = g["rows"][:], g["features"][:]
    assert g["done"][:].all()
    assert g["done"].shape == (int(np.ceil(t.n_obs / BLOCK)),)
    assert np.array_equal(feats[rows >= 0], t.obsm["plain"][rows[rows >= 0]])
    assert np.isnan(feats[rows < 0]).all()


def test_a_failed_block_write_raises_and_leaves_the_table_unchanged(cells_zarr, tmp_path, monkeypatch):
    """A write that fails in the background writer is raised by embed_patches; blocks before it stay done in the
    store, nothing is written to the table, and a second call resumes from those blocks to the plain result. The
    write fails because the encoder's features widen from block 3 on, which only the store notices."""
    import torch

    monkeypatch.setattr(mst.settings, "checkpoint_block_size", BLOCK)
    sdata = _read(cells_zarr)
    t = sdata.tables["table"]
    batches = {"seen": 0, "widen_from": 3 * BLOCK // 8}  # batches of 8 patches: block 3 starts at batch 12

    def widening_features(x):
        f = slow_features(x)
        batches["seen"] += 1
        return torch.cat([f, f[:, :1]], dim=1) if batches["seen"] > batches["widen_from"] else f

    ckpt = tmp_path / "fail.zarr"
    with pytest.raises(ValueError, match="The encoder returned 10 features, the checkpoint holds 9"):
        mst.tl.embed_patches(sdata, widening_features, batch_size=8, dtype="float32", checkpoint=ckpt, key_added="x")
    assert "x" not in t.obsm
    assert "x" not in t.uns
    n_done, n_blocks = _done(ckpt)
    assert 3 <= n_done < n_blocks  # blocks 0-2 for sure; later ones may have been written before the error came back
    batches["widen_from"] = np.inf  # the same encoder, now as it should be
    mst.tl.embed_patches(sdata, widening_features, batch_size=8, dtype="float32", checkpoint=ckpt, key_added="x")
    mst.tl.embed_patches(sdata, slow_features, batch_size=8, dtype="float32", key_added="plain")
    assert t.uns["x"]["params"]["checkpoint_blocks_resumed"] == n_done
    assert np.array_equal(t.obsm["x"], t.obsm["plain"])


def test_checkpoint_block_size_setting_is_checked():
    assert mst.settings.checkpoint_block_size == 2048  # the default
    for bad in (0, -8, True, 2.5, "32"):
        with pytest.raises(ValueError, match=r"`checkpoint_block_size` must be a positive integer"):
            mst.settings.checkpoint_block_size = bad
    assert mst.settings.checkpoint_block_size == 2048  # a refused value changes nothing
