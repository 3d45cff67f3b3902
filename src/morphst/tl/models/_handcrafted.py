"""Model-free patch features: colour summary, stain densities, histogram, background fraction, GLCM texture."""

from __future__ import annotations

import numpy as np

_GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
_DISTANCES = (1, 3)
_LEVELS = 32
_BINS = 8


def feature_names() -> list[str]:
    """Names of the handcrafted features, in order."""
    names = [f"{s}_{c}" for s in ("mean", "std") for c in "rgb"]
    names += ["hematoxylin_od_mean", "eosin_od_mean"]
    names += [f"grey_hist_{i}" for i in range(_BINS)]
    names += ["background_fraction"]
    names += [f"glcm_{p}_d{d}" for d in _DISTANCES for p in _GLCM_PROPS]
    return names


def handcrafted_features(patch: np.ndarray) -> np.ndarray:
    """Features of one RGB patch ``(H, W, 3)`` uint8; see :func:`feature_names` (29 values).

    Colour mean/std per channel (0–255); mean optical density of haematoxylin and eosin (colour deconvolution,
    Ruifrok & Johnston 2001, :func:`skimage.color.rgb2hed`); an 8-bin grey-level histogram (fractions); the
    fraction of background pixels (grey > 220 and channel spread < 30, i.e. bright and unsaturated); grey-level
    co-occurrence (Haralick et al. 1973, :func:`skimage.feature.graycomatrix`, 32 levels, distances 1 and 3 px,
    four angles averaged): contrast, dissimilarity, homogeneity, energy, correlation, ASM.
    """
    from skimage.color import rgb2hed
    from skimage.feature import graycomatrix, graycoprops

    p = np.asarray(patch)
    f = p.reshape(-1, 3).astype(np.float32)
    mean = f.mean(0)
    std = f.std(0)
    hed = rgb2hed(p)
    grey = p.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    hist = np.histogram(grey, bins=_BINS, range=(0, 256))[0] / grey.size
    spread = p.max(-1).astype(np.int16) - p.min(-1).astype(np.int16)
    bg = np.mean((grey > 220) & (spread < 30))
    q = np.clip(grey * (_LEVELS / 256.0), 0, _LEVELS - 1).astype(np.uint8)
    glcm = graycomatrix(
        q, _DISTANCES, [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=_LEVELS, symmetric=True, normed=True
    )
    tex = [graycoprops(glcm, prop).mean(axis=1) for prop in _GLCM_PROPS]  # each (n_distances,)
    tex = np.stack(tex, axis=1).reshape(-1)  # d1 props, then d3 props
    out = np.concatenate([mean, std, [hed[..., 0].mean(), hed[..., 1].mean()], hist, [bg], tex])
    return np.nan_to_num(out.astype(np.float32), nan=0.0)


class HandcraftedEncoder:
    """Encoder protocol around :func:`handcrafted_features` (no neural network, no weights)."""

    name = "handcrafted"
    uses_torch = False
    weights_source = "none (handcrafted features, scikit-image)"
    weights_sha256 = None
    weights_path = None

    def __init__(self, n_jobs: int = 1):
        self.n_jobs = n_jobs
        self.feature_names = feature_names()
        self.embedding_dim = len(self.feature_names)

    def to(self, device) -> HandcraftedEncoder:
        return self

    def channels_last(self) -> None:
        return None

    def transform(self, x):
        return x.permute(0, 2, 3, 1).cpu().numpy() if hasattr(x, "permute") else np.asarray(x)

    def encode(self, x) -> np.ndarray:
        if self.n_jobs > 1 and len(x) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.n_jobs) as pool:
                return np.stack(list(pool.map(handcrafted_features, x)))
        return np.stack([handcrafted_features(p) for p in x])
