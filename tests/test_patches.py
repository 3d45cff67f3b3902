from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import morphst as mst


def _dark_centroid_and_mass(patches: np.ndarray):
    """Centroid (x, y) in px (continuous coordinates) and total darkness (px², 1 = one black pixel)."""
    w = 255.0 - patches.astype(float).mean(-1)
    t = patches.shape[1]
    yy, xx = np.mgrid[0:t, 0:t] + 0.5
    mass = w.sum((1, 2))
    return (w * xx).sum((1, 2)) / mass, (w * yy).sum((1, 2)) / mass, mass / 255.0


def _snapshot(sdata):
    t = sdata.tables["table"]
    return list(t.obs.columns), sorted(t.uns.keys()), sorted(t.obsm.keys())


@pytest.mark.parametrize(
    ("shapes_scale", "shapes_offset"), [(2.0, (10.0, -20.0)), (0.37, (-123.0, 45.5))], ids=["s2", "s0.37"]
)
def test_geometry_marks_centred_at_every_level(synthetic_factory, shapes_scale, shapes_offset):
    make_synthetic_sdata = synthetic_factory
    sdata, centres = make_synthetic_sdata(shapes_scale=shapes_scale, shapes_offset=shapes_offset)
    # 0.5 µm/px image, 3 levels (0.5, 1, 2 µm/px); 40 px output: 20 µm -> level 0, 40 µm -> 1, 80 µm -> 2
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40, context_sizes_um=(40.0, 80.0))
    t = sdata.tables["table"]
    np.testing.assert_allclose(t.obs[["patch_x_px", "patch_y_px"]].to_numpy(), centres, atol=1e-6)
    reg = t.uns["patches"]["regions"]["spots"]
    assert reg["image"] == "image"
    assert list(reg["level"]) == [0, 1, 2]
    np.testing.assert_allclose(reg["level_um_per_px"], [0.5, 1.0, 2.0])
    # window side at its level x level resolution == requested µm
    for size, w, r in zip([20, 40, 80], reg["window_px"], reg["level_um_per_px"], strict=True):
        assert w[0] * r == pytest.approx(size)
    np.testing.assert_allclose(t.obs["patch_valid_fraction"], 1.0)
    img0 = sdata.images["image"]["scale0"]["image"].to_numpy()
    mark_px = (img0[0] == 0).sum() / len(centres)
    for ctx, res in [(None, 0.5), (0, 1.0), (1, 2.0)]:
        p = mst.pp.get_patches(sdata, context_index=ctx)
        assert p.shape == (16, 40, 40, 3)
        assert p.dtype == np.uint8
        cx, cy, mass = _dark_centroid_and_mass(p)
        # centred: within one output pixel
        assert np.abs(cx - 20).max() <= 1.0
        assert np.abs(cy - 20).max() <= 1.0
        # physical size: a mark of A level-0 px (0.5 µm) covers A * (0.5 / res)² output px of darkness
        np.testing.assert_allclose(mass, mark_px * (0.5 / res) ** 2, rtol=0.15)


def test_edge_padding_valid_fraction(synthetic_factory):
    make_synthetic_sdata = synthetic_factory
    sdata, _ = make_synthetic_sdata()
    # 240 µm = 480 px at 0.5 µm/px around (102.4, 102.4): x0 = round(102.4 - 240) = -138, 342 px inside
    mst.pp.extract_patches(sdata, patch_size=240.0, target_px=480)
    t = sdata.tables["table"]
    assert t.uns["patches"]["regions"]["spots"]["level"][0] == 0
    assert t.obs["patch_valid_fraction"].iloc[0] == pytest.approx((342 / 480) ** 2)
    p = mst.pp.get_patches(sdata, ["s0"])
    assert (p[0, :138, :, :] == 255).all()  # padding is white (H&E)
    assert (p[0, :, :138, :] == 255).all()
    # no resampling here (480 px -> 480 px): the inside part is the image itself, shifted by the window corner
    img0 = sdata.images["image"]["scale0"]["image"].to_numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(p[0, 138:, 138:], img0[:342, :342])


def test_rgba_grey_uint16(synthetic_factory, with_image):
    make_synthetic_sdata = synthetic_factory
    sdata, _ = make_synthetic_sdata()
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40)
    ref = mst.pp.get_patches(sdata)
    rgb = np.asarray(sdata.images["image"]["scale0"]["image"].data.compute())
    # RGBA with a transparent background (RGB black there, as PNG exports often are): composited over white,
    # so it reads as the white RGB image, not as black (dense) tissue
    marks = rgb[:1] < 128
    rgba = np.concatenate([np.zeros_like(rgb), np.where(marks, 255, 0).astype(np.uint8)])
    s2 = with_image(make_synthetic_sdata()[0], rgba, ["r", "g", "b", "a"])
    mst.pp.extract_patches(s2, patch_size=20.0, target_px=40)
    np.testing.assert_array_equal(mst.pp.get_patches(s2), ref)
    assert s2.tables["table"].uns["patches"]["regions"]["spots"]["channel_mode"] == "rgba"
    # half-transparent mid-grey over white: 128 * 0.5 + 255 * 0.5 = 191.5 -> 192 everywhere
    half = np.concatenate([np.full_like(rgb, 128), np.full((1, *rgb.shape[1:]), 128, np.uint8)])
    s2b = with_image(make_synthetic_sdata()[0], half, ["r", "g", "b", "a"])
    mst.pp.extract_patches(s2b, patch_size=20.0, target_px=40)
    want = round(128 * 128 / 255 + 255 * (1 - 128 / 255))
    assert np.unique(mst.pp.get_patches(s2b)).tolist() == [want]
    # single-channel uint16 (DAPI-like, bright marks on black): mapped by the given range, replicated to RGB
    grey = ((255 - rgb[:1].astype(np.uint16)) * 16).astype(np.uint16)  # marks 4080, background 0
    s3 = with_image(make_synthetic_sdata()[0], grey, ["DAPI"])
    mst.pp.extract_patches(s3, patch_size=20.0, target_px=40, intensity_range=(0, 4080))
    p = mst.pp.get_patches(s3)
    assert s3.tables["table"].uns["patches"]["regions"]["spots"]["fill_value"] == 0
    np.testing.assert_array_equal(p[..., 0], p[..., 2])
    np.testing.assert_allclose(p[..., 0].astype(int), 255 - ref[..., 0].astype(int), atol=1)
    # two channels need an explicit choice
    two = np.concatenate([grey, grey])
    s4 = with_image(make_synthetic_sdata()[0], two, ["DAPI", "CD3"])
    with pytest.raises(ValueError, match="channels="):
        mst.pp.extract_patches(s4)
    mst.pp.extract_patches(s4, channels=["CD3"], patch_size=20.0, target_px=40, intensity_range=(0, 4080))
    np.testing.assert_array_equal(mst.pp.get_patches(s4), p)


def test_her2st_pairs_images_and_matches_direct_crop(her2st_copy):
    import torch
    from skimage.transform import resize

    sdata = her2st_copy
    mst.pp.extract_patches(sdata, context_sizes_um=(336.0,))
    t = sdata.tables["table"]
    regions = t.uns["patches"]["regions"]
    assert {r: v["image"] for r, v in regions.items()} == {f"C{i}_spots": f"C{i}_he" for i in range(2, 7)}
    assert {r: v["coordinate_system"] for r, v in regions.items()} == {f"C{i}_spots": f"C{i}" for i in range(2, 7)}
    for s, v in regions.items():
        mpp = t.uns["morphst_dataset"]["um_per_px"][s.split("_")[0]]
        assert v["um_per_px"][0] == pytest.approx(mpp)
        assert list(v["level"]) == [0, 1]  # 0.5 µm/px needs level 0 (0.69); 1.5 µm/px -> level 1 (1.38)
        assert v["window_px"][0][0] == round(112 / mpp)
    # shapes are in image pixels here: centres are the spot pixel coordinates
    np.testing.assert_allclose(t.obs[["patch_x_px", "patch_y_px"]].to_numpy(), t.obsm["spatial"], atol=1e-6)
    assert (t.obs["patch_valid_fraction"] == 1).all()
    assert t.uns["patches"]["params"]["patch_size"] == 112.0
    rows = [0, 300, 909]
    p = mst.pp.get_patches(sdata, rows)
    assert p.shape == (3, 224, 224, 3)
    # independent crop (xarray slicing of level 0) + skimage resize agrees
    for k, i in enumerate(rows):
        s = t.obs["section"].iloc[i]
        w = regions[f"{s}_spots"]["window_px"][0][0]
        x0 = round(t.obs["pixel_x"].iloc[i] - w / 2)
        y0 = round(t.obs["pixel_y"].iloc[i] - w / 2)
        crop = sdata.images[f"{s}_he"]["scale0"]["image"][:, y0 : y0 + w, x0 : x0 + w].to_numpy().transpose(1, 2, 0)
        ref = resize(crop, (224, 224), order=1, anti_aliasing=False, preserve_range=True)
        assert np.abs(p[k].astype(float) - ref).mean() < 2.0
    # context patch: its central 112/336 part is the main patch at a third of the size
    c = mst.pp.get_patches(sdata, rows, context_index=0)
    centre = c[:, 75:149, 75:149].astype(np.float32)
    small = torch.nn.functional.interpolate(
        torch.from_numpy(p).permute(0, 3, 1, 2).float(), size=(75, 75), mode="bilinear", antialias=True
    )
    small = small.permute(0, 2, 3, 1).numpy()[:, :74, :74]
    for k in range(3):
        assert np.corrcoef(centre[k].ravel(), small[k].ravel())[0, 1] > 0.9


def test_get_patches_selection_order(synthetic_sdata):
    sdata, _ = synthetic_sdata
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=32)
    allp = mst.pp.get_patches(sdata)
    np.testing.assert_array_equal(mst.pp.get_patches(sdata, ["s5", "s1"]), allp[[5, 1]])
    mask = np.zeros(16, bool)
    mask[[2, 9]] = True
    np.testing.assert_array_equal(mst.pp.get_patches(sdata, mask), allp[[2, 9]])
    with pytest.raises(KeyError, match="not found"):
        mst.pp.get_patches(sdata, ["nope"])


def _shift_shapes(sdata, dx_um):
    from spatialdata.transformations import Sequence, Translation, get_transformation, set_transformation

    tf = get_transformation(sdata.shapes["spots"], "global")
    set_transformation(
        sdata.shapes["spots"], Sequence([tf, Translation([dx_um, 0.0], axes=("x", "y"))]), to_coordinate_system="global"
    )


def _other_cs(sdata):
    from spatialdata.transformations import Identity, remove_transformation, set_transformation

    set_transformation(sdata.images["image"], Identity(), to_coordinate_system="elsewhere")
    remove_transformation(sdata.images["image"], "global")


def _unannotated_shapes(sdata):
    sdata.shapes["cells"] = copy.deepcopy(sdata.shapes["spots"])


@pytest.mark.parametrize(
    ("prepare", "kwargs", "exc", "match"),
    [
        (None, {"image_key": "nope"}, KeyError, "Available images: \\['image'\\]"),
        (None, {"shapes_key": "nope"}, KeyError, "Available shapes: \\['spots'\\]"),
        (None, {"table_key": "nope"}, ValueError, "Available tables"),
        (_unannotated_shapes, {"shapes_key": "cells"}, ValueError, "does not annotate shapes 'cells'"),
        (_other_cs, {}, ValueError, "No image shares a coordinate system"),
        (_other_cs, {"image_key": "image"}, ValueError, "No transformation path"),
        (lambda s: _shift_shapes(s, 1e5), {}, ValueError, "Every patch lies off the image"),
        (None, {"patch_size": 1e-3}, ValueError, "smaller than one pixel"),
        (None, {"patch_size": -1.0}, ValueError, "positive"),
    ],
    ids=["image", "shapes", "table", "unannotated", "no-cs", "no-path", "off-image", "sub-pixel", "negative"],
)
def test_bad_input_raises_and_leaves_data_unchanged(synthetic_factory, prepare, kwargs, exc, match):
    make_synthetic_sdata = synthetic_factory
    sdata, _ = make_synthetic_sdata()
    if prepare is not None:
        prepare(sdata)
    before = _snapshot(sdata)
    with pytest.raises(exc, match=match):
        mst.pp.extract_patches(sdata, **kwargs)
    assert _snapshot(sdata) == before
    assert "patches" not in sdata.tables["table"].uns


def _messages(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelname == level and r.name == "morphst"]


def test_anndata_is_refused_with_a_clear_type_error(synthetic_sdata):
    sdata, _ = synthetic_sdata
    adata = sdata.tables["table"]
    before = (list(adata.obs.columns), sorted(adata.uns.keys()))
    for fn in (mst.pp.extract_patches, mst.pp.get_patches):
        with pytest.raises(TypeError, match=rf"`{fn.__name__}` needs the SpatialData \(images \+ shapes"):
            fn(adata)
    assert (list(adata.obs.columns), sorted(adata.uns.keys())) == before
    for fn in (mst.pp.extract_patches, mst.pp.get_patches):
        assert "not an anndata" in " ".join(fn.__doc__.split()).lower()


def test_geometry_is_logged_with_units(synthetic_sdata, morphst_log, recwarn):
    sdata, _ = synthetic_sdata
    # 20 µm at 40 px = 0.5 µm/px: level 0 (0.5 µm/px), a 40 px window; 40 µm context -> level 1 (1 µm/px), 40 px
    mst.pp.extract_patches(sdata, patch_size=20.0, target_px=40, context_sizes_um=(40.0,))
    infos = _messages(morphst_log, "INFO")
    assert any("spots (image): 20 µm patch from pyramid level 0 (0.5 µm/px), window 40 × 40 px" in m for m in infos)
    assert any("spots (image): 40 µm patch from pyramid level 1 (1 µm/px), window 40 × 40 px" in m for m in infos)
    assert _user_warnings(recwarn) == []  # no upsampling, no patch at the edge


def _user_warnings(record):
    """morphst's UserWarnings: they point at the caller's line, i.e. at this test file."""
    return [str(w.message) for w in record if issubclass(w.category, UserWarning) and w.filename == __file__]


def test_upsampling_is_warned(synthetic_sdata):
    sdata, _ = synthetic_sdata
    # 20 µm at 80 px asks for 0.25 µm/px; the image is 0.5 µm/px: 40 native px upsampled 2×
    with pytest.warns(UserWarning, match="upsampled") as record:
        mst.pp.extract_patches(sdata, patch_size=20.0, target_px=80)
    warns = _user_warnings(record)
    # the warning points at the caller's line (this test), not inside morphst
    assert [w.filename for w in record if "upsampled" in str(w.message)] == [__file__]
    assert len(warns) == 1
    assert "upsampled 2.00× (40 native px -> 80 px)" in warns[0]
    assert "0.5 µm/px" in warns[0]
    assert "0.25 µm/px" in warns[0]
    # and how to avoid it: 40 px keeps the image's 0.5 µm/px; 80 native px at 0.5 µm/px cover 40 µm
    assert "`target_px=40`" in warns[0]
    assert "`patch_size=40`" in warns[0]


def test_upsampling_on_many_sections_is_one_warning(her2st_copy):
    # HER2ST is ~0.688 µm/px; 112 µm at 448 px asks for 0.25 µm/px: ~163 native px upsampled ~2.75× in 5 sections
    with pytest.warns(UserWarning, match="upsampled") as record:
        mst.pp.extract_patches(her2st_copy, target_px=448)
    warns = _user_warnings(record)
    assert len(warns) == 1
    assert "upsampled 2.7" in warns[0]
    assert "The same holds for 4 more region(s)." in warns[0]


def test_hest_convention_on_her2st_is_logged_not_warned(her2st_copy, morphst_log, recwarn):
    # HER2ST is ~0.688 µm/px; PROTOCOL's 112 µm -> 224 px asks for 0.5 µm/px: ~163 native px upsampled ~1.37×,
    # below the 1.5× threshold: a deliberate, documented choice that is logged, not warned
    mst.pp.extract_patches(her2st_copy)
    assert _user_warnings(recwarn) == []
    infos = _messages(morphst_log, "INFO")
    assert any("C2_spots (C2_he): 112 µm patch from pyramid level 0" in m and "-> 224 px" in m for m in infos)


def test_coarse_image_advises_native_px_and_handcrafted(synthetic_factory):
    # a 5 µm/px image: 112 µm covers 22 native px -> 224 px is a 10× upsampling: advise target_px=22 and the
    # handcrafted encoder, never a patch of 224 * 5 = 1120 µm
    sdata, _ = synthetic_factory(um_per_px=5.0, shapes_scale=20.0, shapes_offset=(0.0, 0.0))
    with pytest.warns(UserWarning, match="upsampled") as record:
        mst.pp.extract_patches(sdata, patch_size=112.0, target_px=224)
    warns = [m for m in _user_warnings(record) if "upsampled" in m]
    assert len(warns) == 1
    assert "upsampled 10.18× (22 native px -> 224 px)" in warns[0]
    assert "`target_px=22`" in warns[0]
    assert 'model="handcrafted"' in warns[0]
    assert "patch_size=" not in warns[0]


def test_patch_many_spot_diameters_wide_is_warned(synthetic_factory):
    # spots of radius 5 shape units x shapes_scale 2 = 10 µm radius, 20 µm diameter: a 400 µm patch is 20 diameters
    sdata, _ = synthetic_factory()
    with pytest.warns(UserWarning, match="diameter") as record:
        mst.pp.extract_patches(sdata, patch_size=400.0, target_px=40)
    warns = [m for m in _user_warnings(record) if "diameter" in m]
    assert len(warns) == 1
    assert "the 400 µm patch is 20× the 20 µm diameter of its spots/cells" in warns[0]
    # 200 µm = 10 diameters: no such warning
    sdata, _ = synthetic_factory()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        mst.pp.extract_patches(sdata, patch_size=200.0, target_px=40)
    assert not [w for w in rec if "diameter" in str(w.message)]


def test_edge_patches_are_warned(synthetic_sdata):
    sdata, _ = synthetic_sdata
    # centres at 102.4, 204.8, 307.2, 409.6 px of a 512 px image: a 300 px window (150 µm) overhangs the edge for
    # every spot in the outer ring (12 of 16); the 4 inner ones (54.8 .. 457.2 px) stay inside
    with pytest.warns(UserWarning, match="touch the image edge") as record:
        mst.pp.extract_patches(sdata, patch_size=150.0, target_px=300)
    assert (sdata.tables["table"].obs["patch_valid_fraction"] < 1).sum() == 12
    warns = _user_warnings(record)
    assert len(warns) == 1
    assert "12 of 16 patches (75%) touch the image edge" in warns[0]


@pytest.mark.parametrize("cache_bytes", [1, 2**30], ids=["evict-every-batch", "cache-all"])
def test_chunked_reader_matches_padded_crops(synthetic_factory, with_image, cache_bytes):
    """Windows assembled from many small chunks (48 px; windows span up to 6 x 6 chunks and overhang the edges),
    read ahead and evicted batch by batch, equal crops of the padded in-memory image, pixel for pixel."""
    from morphst.pp._patches import PatchReader

    make_synthetic_sdata = synthetic_factory
    sdata, _ = make_synthetic_sdata()
    noise = np.random.default_rng(1).integers(0, 256, (3, 512, 512), dtype=np.uint8)
    sdata = with_image(sdata, noise, ["r", "g", "b"])
    sdata.images["image"]["scale0"]["image"].data = sdata.images["image"]["scale0"]["image"].data.rechunk((3, 48, 48))
    # 120 µm = 240 px at 0.5 µm/px: no resampling, the first row/column of spots overhangs the image
    mst.pp.extract_patches(sdata, patch_size=120.0, target_px=240)
    t = sdata.tables["table"]
    assert t.uns["patches"]["regions"]["spots"]["level"][0] == 0
    assert (t.obs["patch_valid_fraction"] < 1).sum() > 0
    reader = PatchReader(sdata, cache_bytes=cache_bytes)
    assert not next(iter(reader.groups.values())).reader.direct
    got = {}
    for rows, p in reader.iter_batches(batch_size=3):
        for r, q in zip(rows, p.permute(0, 2, 3, 1).numpy(), strict=True):
            got[int(r)] = q
    assert sorted(got) == list(range(t.n_obs))
    padded = np.pad(noise.transpose(1, 2, 0), ((240, 240), (240, 240), (0, 0)), constant_values=255)
    for r in range(t.n_obs):
        x0 = int(np.round(t.obs["patch_x_px"].iloc[r] - 120))
        y0 = int(np.round(t.obs["patch_y_px"].iloc[r] - 120))
        np.testing.assert_array_equal(got[r], padded[y0 + 240 : y0 + 480, x0 + 240 : x0 + 480])


#: sha256 (first 16 hex digits) of ``get_patches`` on HER2ST C2+C3 (112 µm -> 224 px, all 367 spots), written by
#: the single-threaded reader before issue 20 (commit bf7dd11, torch 2.14): the worker-thread reader must give the
#: same bytes.
HER2ST_C2C3_SHA256 = "e4b20c4029c6f6d8"


def test_reader_equals_the_single_thread_reference_on_real_data_for_any_workers(data_dir, monkeypatch):
    """HER2ST C2+C3: get_patches and iter_batches with 1 or 2 worker threads and any batch size give the bytes of
    the reference (level-0 crops of the in-memory image, resampled by one bilinear antialiased interpolate per
    section) and of the reader before issue 20."""
    import hashlib

    import torch
    import torch.nn.functional as F

    from morphst.pp._patches import PatchReader

    sdata = mst.datasets.her2st(["C2", "C3"], data_dir=data_dir)
    mst.pp.extract_patches(sdata)
    t = sdata.tables["table"]
    ref = np.empty((t.n_obs, 224, 224, 3), np.uint8)
    for region, v in t.uns["patches"]["regions"].items():
        rows = np.flatnonzero(t.obs["region"].astype(str).to_numpy() == region)
        img = sdata.images[v["image"]]["scale0"]["image"].to_numpy().transpose(1, 2, 0)
        w = int(v["window_px"][0][0])
        x0 = np.round(t.obs["patch_x_px"].to_numpy()[rows] - w / 2).astype(int)
        y0 = np.round(t.obs["patch_y_px"].to_numpy()[rows] - w / 2).astype(int)
        crops = np.stack([img[y : y + w, x : x + w] for x, y in zip(x0, y0, strict=True)])
        res = F.interpolate(
            torch.from_numpy(crops).permute(0, 3, 1, 2), size=(224, 224), mode="bilinear", antialias=True
        )
        ref[rows] = res.permute(0, 2, 3, 1).numpy()
    assert hashlib.sha256(ref.tobytes()).hexdigest()[:16] == HER2ST_C2C3_SHA256
    for n_jobs, batch_size in [(1, 64), (2, 64), (2, 7)]:
        monkeypatch.setattr(mst.settings, "n_jobs", n_jobs)
        np.testing.assert_array_equal(mst.pp.get_patches(sdata, batch_size=batch_size), ref)
        got = np.zeros_like(ref)
        for rows, p in PatchReader(sdata).iter_batches(batch_size=batch_size):
            got[rows] = p.permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(got, ref)
    # rows asked in reverse order come back in that order
    rows = np.arange(t.n_obs)[::-1][:50]
    np.testing.assert_array_equal(mst.pp.get_patches(sdata, rows), ref[rows])


def test_chunk_cache_stays_bounded_and_decodes_each_chunk_once_when_it_fits(synthetic_factory, with_image, monkeypatch):
    """Many small chunks, 2 worker threads several batches ahead: with a cache of one chunk, it holds no more than
    the chunks of the batches in flight after each batch; with a cache that fits the image, each chunk is decoded
    exactly once (no thread decodes a chunk another one is decoding)."""
    from morphst.pp._patches import PatchReader

    sdata, _ = synthetic_factory()
    noise = np.random.default_rng(3).integers(0, 256, (3, 512, 512), dtype=np.uint8)
    sdata = with_image(sdata, noise, ["r", "g", "b"])
    decoded = []

    def spy(block, block_info=None):  # dask runs it once for each chunk each time that chunk is computed
        decoded.append(tuple(block_info[0]["chunk-location"][1:]))
        return block

    data = sdata.images["image"]["scale0"]["image"].data.rechunk((3, 64, 64))
    sdata.images["image"]["scale0"]["image"].data = data.map_blocks(
        spy, dtype=data.dtype, meta=np.empty((0, 0, 0), data.dtype)
    )
    mst.pp.extract_patches(sdata, patch_size=120.0, target_px=240)
    monkeypatch.setattr(mst.settings, "n_jobs", 2)
    decoded.clear()

    big = PatchReader(sdata, cache_bytes=2**30)
    want = np.concatenate([p.numpy() for _, p in big.iter_batches(batch_size=2)])
    assert len(decoded) == len(set(decoded)) == 64  # 8 x 8 chunks, each once
    rd = next(iter(big.groups.values())).reader
    assert rd.nbytes == sum(b.nbytes for b in rd.cache.values()) == 512 * 512 * 3

    small = PatchReader(sdata, cache_bytes=1)
    rd = next(iter(small.groups.values())).reader
    chunk = 64 * 64 * 3
    sizes = []
    got = []
    for _, p in small.iter_batches(batch_size=2, prefetch=1):
        got.append(p.numpy())
        sizes.append(rd.nbytes)
    np.testing.assert_array_equal(np.concatenate(got), want)
    # in flight: at most n_jobs + prefetch = 3 batches of 2 windows of 240 px, each over at most 5 x 5 chunks
    assert max(sizes) <= 3 * 2 * 25 * chunk
    assert rd.nbytes == sum(b.nbytes for b in rd.cache.values()) <= chunk  # after the last batch: down to the bound
