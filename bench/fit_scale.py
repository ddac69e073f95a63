"""PatchCore fit time and peak memory, from 300 images to thousands of tiles, beside anomalib's PatchCore.

Each case fits in a fresh Python process of its own (``--child``), so its peak memory (VmHWM) is its own; the
memory after importing torch and anomalens only is given beside it. The fitted model is then saved, loaded with the
default runtime and timed predicting one test image at batch 1. Cases:

- ``magnetic_tile@256``: the suite's 300 magnetic tile training images at a 256x256 network input;
- one per suite category at the defaults a new user gets (working scale chosen from the images);
- ``ball_screw_drive tiles``: every ball screw drive frame cut into tiles of ``--tile`` pixels, each tile fed to
  the fit as an image of its own at 256x256 (thousands of training images, where a fit that holds every patch
  runs out of memory).

``--code DIR`` imports anomalens from another checkout (e.g. ``git archive bd5ab23 | tar -x -C /tmp/before``),
so that before and after run the same cases. ``--peer`` fits anomalib 2.7's PatchCore (``../shared/peer``,
its environment from ``make peer``) on magnetic tile in the same run.

    OMP_NUM_THREADS=2 .venv/bin/python bench/fit_scale.py --peer \\
        --json bench/results/fit_scale.json --md bench/results/fit_scale.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from result_tables import markdown_table

DATA = "../shared/data"
CASES = {
    "magnetic_tile@256": ("magnetic_tile", {"image_size": 256}),
    "magnetic_tile": ("magnetic_tile", {}),
    "ball_screw_drive": ("ball_screw_drive", {}),
    "solar_cell_mono": ("solar_cell_mono", {}),
    "solar_cell_poly": ("solar_cell_poly", {}),
    "ball_screw_drive tiles": ("ball_screw_drive", {"image_size": 256}),
}


def memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(case: str, data: str, tile: int, held: str | None) -> dict:
    """Fit one case in this process, the fit holding its kept features as ``held`` (a torch dtype's name; None:
    the code's default); what it took."""
    # anomalens first, as the CLI and the service load it: it sets OpenMP's wait policy before torch loads
    importlib.import_module("anomalens")
    import torch

    from anomalens.data import read_image
    from anomalens.data.io import is_image_file
    from anomalens.data.tiling import tile_grid
    from anomalens.models import PatchCore

    category, params = CASES[case]
    paths = sorted(p for p in (Path(data) / category / "train" / "good").iterdir() if is_image_file(p))
    counted = {"images": 0}

    def images():
        for path in paths:
            image = read_image(path)
            pieces = (
                [image[t.y0 : t.y1, t.x0 : t.x1] for t in tile_grid(*image.shape[:2], tile, 32)]
                if case.endswith("tiles")
                else [image]
            )
            for piece in pieces:
                counted["images"] += 1
                yield piece

    if held:
        from anomalens.models.patchcore import detector as patchcore_detector

        patchcore_detector.HELD_DTYPE = getattr(torch, held)
    baseline = memory_mb("VmRSS")
    detector = PatchCore(**params)
    tic = time.perf_counter()
    detector.fit(images())
    seconds = time.perf_counter() - tic
    info = detector.info_
    fit_peak = memory_mb("VmHWM")
    return {
        **predict_ms(detector, category, data),
        "case": case,
        "images": counted["images"],
        "views": info.get("n_views"),
        "patches": info.get("n_patches"),
        "candidates": info.get("n_coreset_candidates", min(info.get("n_patches", 0), detector.coreset_candidates)),
        "bank": info.get("bank_size"),
        "network_input": detector.input_size,
        "fit_s": round(seconds, 1),
        "phases_s": info.get("fit_seconds"),
        "peak_mb": round(fit_peak),
        "after_imports_mb": round(baseline),
        "torch_threads": torch.get_num_threads(),
        "held": held or "default",
        "thresholds": {"image": detector.thresholds_.image, "pixel": detector.thresholds_.pixel},
    }


def predict_ms(detector, category: str, data: str, repeats: int = 20) -> dict:
    """Median ms of ``predict`` of one test image at batch 1, the fitted model saved and loaded with the default
    runtime (the way ``anomalens predict`` runs it), findings included; and of its network alone on one view
    (backbone, search and map, as the peer's figure is taken)."""
    import numpy as np
    import torch

    from anomalens.data import collect_images, read_image
    from anomalens.models import load_detector

    image = read_image(sorted(collect_images(Path(data) / category / "test"))[0])
    side = detector.input_size
    tensor = torch.rand(1, 3, side, side)
    with tempfile.TemporaryDirectory() as folder:
        loaded = load_detector(detector.save(Path(folder) / "model"))
        medians = {}
        for name, work in (
            ("predict_ms", lambda: loaded.predict(image)),
            ("network_ms", lambda: loaded._score_view_batch(tensor, [])),
        ):
            work()  # warm-up
            times = []
            for _ in range(repeats):
                tic = time.perf_counter()
                work()
                times.append(1000 * (time.perf_counter() - tic))
            medians[name] = round(float(np.median(times)), 1)
    return {**medians, "predict_runtime": loaded.runtime}


def run_case(case: str, code: str | None, data: str, tile: int, held: str | None = None) -> dict:
    command = [sys.executable, __file__, "--child", case, "--data", data, "--tile", str(tile)]
    if code:
        command += ["--code", code]
    if held:
        command += ["--held", held]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"case": case, "error": done.stderr[-2000:]}
    return {**json.loads(lines[-1]), "code": code or "this checkout"}


def run_peer(data: str) -> dict | None:
    spec = importlib.util.spec_from_file_location("suite", Path(__file__).with_name("suite.py"))
    assert spec is not None and spec.loader is not None
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    return suite.run_peer(data, "magnetic_tile", "anomalib patchcore")


def case_cells(row: dict, width: int) -> list:
    if "error" in row:
        return [row["case"], row.get("code", ""), "error: see JSON"] + [""] * (width - 3)
    phases = row.get("phases_s") or {}
    return [
        *(row[key] for key in ("case", "code")),
        row.get("held", "-"),
        *(row[key] for key in ("images", "views", "patches", "candidates", "bank")),
        *(phases.get(phase, "-") for phase in ("features", "coreset", "calibration")),
        *(row[key] for key in ("fit_s", "peak_mb", "after_imports_mb")),
        row.get("predict_ms", "-"),
        row.get("network_ms", "-"),
        row.get("predict_runtime", "-"),
        round(row["thresholds"]["image"], 3) if "thresholds" in row else "-",
    ]


def markdown(rows: list[dict], peer: dict | None, header: str) -> str:
    lines = [
        "# PatchCore fit: time and peak memory",
        "",
        header,
        "",
    ]
    columns = ["case", "code", "held as", "images", "views", "patches", "coreset candidates", "bank", "features s"]
    columns += [
        "coreset s",
        "calibration s",
        "fit s",
        "peak MB",
        "after imports MB",
        "predict ms",
        "network ms",
        "runtime",
        "image threshold",
    ]
    lines += markdown_table(columns, (case_cells(row, len(columns)) for row in rows))
    if peer:
        lines += [
            "",
            "anomalib 2.7 PatchCore (Lite0 blocks.2+4, coreset 1 %, 256x256) on the same 300 magnetic tile "
            "training images, in the same run (`../shared/peer`; its peak includes its test pass):",
            "",
        ]
        keys = ("detector", "fit_seconds", "predict_ms_median", "peak_rss_mb")
        lines += markdown_table(["peer", "fit s", "ms / image (batch 1)", "peak MB"], [[peer.get(k) for k in keys]])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--code", help="import anomalens from this checkout instead")
    parser.add_argument("--before", help="also run the cases with anomalens from this checkout, beside")
    parser.add_argument(
        "--before-cases",
        nargs="*",
        choices=list(CASES),
        default=[case for case in CASES if not case.endswith("tiles")],
        help="the cases run with --before too (not the tiles by default: the code before streaming holds them all)",
    )
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--tile", type=int, default=320, help="tile side for the 'tiles' case, in pixels")
    parser.add_argument("--peer", action="store_true")
    parser.add_argument("--child", choices=list(CASES))
    parser.add_argument("--held", help=argparse.SUPPRESS)
    parser.add_argument(
        "--held-dtypes",
        nargs="*",
        choices=["float16", "float32"],
        help="run this checkout's cases once per dtype the fit holds its kept features in (default: its own)",
    )
    parser.add_argument("--json")
    parser.add_argument("--md")
    args = parser.parse_args()
    if args.code:
        sys.path.insert(0, str(Path(args.code).resolve()))
    if args.child:
        print(json.dumps(child(args.child, args.data, args.tile, args.held)))
        return

    started, load = time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0]
    rows = []
    for case in args.cases:
        before = [args.before] if args.before and case in args.before_cases else []
        runs = [(code, None) for code in before] + [(args.code, held) for held in args.held_dtypes or [None]]
        for code, held in runs:
            rows.append(run_case(case, code, args.data, args.tile, held))
            print(json.dumps(rows[-1]), flush=True)
    peer = run_peer(args.data) if args.peer else None
    header = (
        f"`python {' '.join(sys.argv)}` from {started} to {time.strftime('%H:%M')} ({platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, load average before the run {load:.2f}). Each case is a fresh "
        f"process; peak MB is its VmHWM when the fit ends. Predict ms: median of 20 batch-1 predictions of the "
        f"category's first test image by the saved model, loaded with the default runtime (findings included); "
        f"network ms: the same model's network alone (backbone, search, map) on one view, as the peer times its own."
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows, "peer": peer}, indent=2))
    report = markdown(rows, peer, header)
    if args.md:
        Path(args.md).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
