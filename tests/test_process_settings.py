"""What importing anomalens changes in the process (only a default OMP_WAIT_POLICY), and when the float mode for
fast inference is set (by the detector, in the thread that runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import anomalens

# the fresh process imports the same copy of the package as this one
PACKAGE_ROOT = Path(anomalens.__file__).resolve().parents[1]

CHECK = textwrap.dedent("""
    import os
    import anomalens
    import numpy as np
    import torch
    from anomalens.models import PatchCore

    def flushed():
        return float(torch.tensor([1e-39]) * 1.0) == 0.0   # a denormal times one is zero only when flushed

    print("wait policy", os.environ.get("OMP_WAIT_POLICY"))
    print("flushed after import", flushed())
    rng = np.random.default_rng(0)
    images = [rng.uniform(0.4, 0.6, (64, 64, 3)).astype(np.float32) for _ in range(3)]
    PatchCore(image_size=64, min_bank_size=64, coreset_ratio=0.5, calibration="normal").fit(images)
    print("flushed after fit", flushed())
""")


def run_check(**env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, env=environ, cwd=PACKAGE_ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_import_sets_only_a_default_wait_policy_and_fitting_flushes_denormals():
    assert run_check() == ["wait policy PASSIVE", "flushed after import False", "flushed after fit True"]
    assert run_check(OMP_WAIT_POLICY="ACTIVE")[0] == "wait policy ACTIVE"


def test_service_station_is_the_host_name_when_settings_are_made(monkeypatch, tmp_path):
    pytest.importorskip("fastapi")
    from anomalens.service import ServiceSettings

    monkeypatch.setattr("socket.gethostname", lambda: "line-7")
    assert ServiceSettings.create(tmp_path / "model", tmp_path / "data").station == "line-7"
    assert ServiceSettings.create(tmp_path / "model", tmp_path / "data", station="line3").station == "line3"


def test_released_memory_leaves_the_resident_set():
    from anomalens.models.heap import _malloc_trim, release_free_memory

    if _malloc_trim() is None:
        pytest.skip("the C library has no malloc_trim")

    def resident_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    # 60 MB in blocks of the C heap with small blocks kept between them, as a fit leaves features among
    # the arrays it holds: freed, the space stays resident until it is handed back
    freed, kept = [], []
    for _ in range(600):
        freed.append(bytearray(100_000))
        kept.append(bytearray(2_000))
    del freed
    before = resident_mb()
    release_free_memory()
    assert before - resident_mb() > 30
