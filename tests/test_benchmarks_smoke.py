"""Every benchmark script still runs: its ``--smoke`` configuration, each in its own process.

The scripts run two at a time (a session fixture starts them all on first use), so the module costs about half the
sum of their run times. A ``--smoke`` run shows that a script works end to end on tiny or synthetic data; its
figures mean nothing and are not checked beyond the RESULT line's fields.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import morphst

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
#: Scripts that have no ``--smoke`` yet (owned by other work in progress); a new script must come with one.
PENDING: set[str] = set()
#: Fields the last line of a smoke run must carry (beyond starting with ``RESULT``).
FIELDS = {
    "cell_scale.py": ["seconds_total=", "peak_rss_mb="],
    "embed.py": ["e2e_per_s=", "forward_per_s="],
    "embed_gpu.py": ["model=efficientnet_lite0", "ratio="],
    "finetune_her2st.py": [
        "frozen_ens=",
        "finetune_one=",
        "finetune_ens=",
        "gain_ens=",
        "verdict_ens=",
        "finetune_ens_5folds_s=",
    ],
    "embed_gpu_check.py": ["densenet121/fp32_strict/per_s", "efficientnet_lite0/bf16_cl/per_s"],
    "embed_peers.py": ["morphst_per_s=", "ratio_lazyslide=", "ratio_sopa="],
    "integration_dlpfc.py": ["morphst_ari_mean=", "encoder_ari_mean="],
    "integration_her2st.py": ["expr_ari=", "best_fused_ari="],
    "integration_scale.py": ["ari_fuse=", "ari_encoder="],
    "learned_features.py": ["hc_head=", "q_raw_I="],
    "learned_integration.py": ["synthetic_maf=", "synthetic_raw="],
    "learned_scale.py": ["maf_s="],
    "patches.py": ["patches_per_s="],
    "quadrants_her2st.py": ["imagenet_translation_share="],
    "transfer_her2st.py": ["base_pcc="],
    "translation_her2st.py": ["ceiling=", "dn_ridge=", "dn_head=", "random_like_densenet121="],
}
#: Fields that may be NaN in a smoke run: the peers that the test environment does not install.
NAN_OK = {
    "embed_peers.py": ["lazyslide_per_s", "sopa_per_s", "ratio_lazyslide", "ratio_sopa", "max_rel_diff"],
    "integration_dlpfc.py": ["best_peer_ari_mean"],
}
TIMEOUT_S = 600


def _scripts() -> list[str]:
    return sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def _has_smoke(name: str) -> bool:
    return '"--smoke"' in (BENCH / name).read_text()


SMOKE = [s for s in _scripts() if _has_smoke(s)]


def _run(name: str) -> subprocess.CompletedProcess:
    src = str(Path(morphst.__file__).resolve().parents[1])  # the morphst this test imports
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        "MPLBACKEND": "Agg",
    }
    return subprocess.run(
        [sys.executable, str(BENCH / name), "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


@pytest.fixture(scope="session")
def smoke_runs(request):
    """All selected smoke runs, started on first use, two processes at a time."""
    wanted = sorted(
        {
            item.callspec.params["script"]
            for item in request.session.items
            if getattr(item, "originalname", None) == "test_smoke_run" and hasattr(item, "callspec")
        }
    )
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {name: pool.submit(_run, name) for name in wanted}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def test_every_script_has_a_smoke_run_or_is_pending():
    missing = [s for s in _scripts() if not _has_smoke(s) and s not in PENDING]
    assert not missing, f"benchmark scripts without --smoke: {missing}; give each a smallest configuration"
    assert set(PENDING) <= set(_scripts()), f"PENDING names scripts that do not exist: {set(PENDING) - set(_scripts())}"


@pytest.mark.parametrize("script", SMOKE)
def test_smoke_run(script, smoke_runs):
    out = smoke_runs[script].result()
    tail = (out.stdout + out.stderr)[-4000:]
    assert out.returncode == 0, f"{script} --smoke failed (exit {out.returncode}):\n{tail}"
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), f"{script} --smoke did not end with a RESULT line:\n{tail}"
    for field in FIELDS.get(script, []):
        assert field in last, f"{script} --smoke: {field!r} missing from {last!r}"
    checked = " ".join(f for f in last.split("cnn_")[0].split() if f.split("=")[0] not in NAN_OK.get(script, []))
    assert not re.search(r"=nan\b", checked), f"{script} --smoke: NaN in {last!r}"
