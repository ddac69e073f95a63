"""Greedy k-center coreset selection: the plain one-pass-per-pick loop beside the lazy selection, same picks?

Both run on the same real patch features, chosen as a PatchCore fit chooses its memory bank (default settings,
projection to ``coreset_projection`` dimensions, seed 0):

* ``magnetic_tile`` at ``image_size=256``: every training image, one 256x256 view each, all patches are
  candidates, 2 % of them kept;
* ``ball_screw_drive`` at the default working scale (tiles): every view of every training image, the fit's
  random ``coreset_candidates`` of those patches, ``max_bank_size`` of them kept.

"old" is :func:`anomalens.models.patchcore.coreset.plain_greedy` (the loop PatchCore used until the lazy
selection, kept for accelerators) after the same projection; "new" is ``greedy_coreset`` as PatchCore calls it.
Each is timed ``--repeats`` times (wall and process CPU seconds); the picks must be identical. Features are
cached under ``--cache``; the load average is recorded, as other jobs share the machine.

    .venv/bin/python bench/coreset_speed.py --md bench/results/coreset_speed.md --json bench/results/coreset_speed.json
"""

from __future__ import annotations

import os

# as anomalens sets it on import, which comes after torch's here (bench/README.md, "Notes on measuring")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from result_tables import markdown_table  # noqa: E402

from anomalens.data import read_image  # noqa: E402
from anomalens.models import PatchCore  # noqa: E402
from anomalens.models.patchcore.coreset import greedy_coreset, plain_greedy, projected  # noqa: E402

CASES = {"magnetic_tile": {"image_size": 256}, "ball_screw_drive": {}}


def candidate_features(data: Path, category: str, settings: dict, cache: Path) -> tuple[torch.Tensor, int, int]:
    """The patch features a PatchCore fit with ``settings`` on ``category``'s training images chooses its bank
    from, the bank size it wants, and the number of patches before the candidates were drawn."""
    model = PatchCore(**settings)
    path = cache / f"{category}_{settings.get('image_size', 'auto')}.pt"
    if path.exists():
        saved = torch.load(path)
        features, n_patches = saved["features"], saved["n_patches"]
    else:
        images = [read_image(p) for p in sorted((data / category / "train" / "good").iterdir())]
        images = list(model._start_fit(images))
        model._new_model()
        grid = model._embed_all([view.pixels for image in images for view in model._views(image)])
        patches = grid.reshape(-1, grid.shape[-1])
        n_patches = len(patches)
        # the fit's draw of candidates (PatchCore._choose_bank)
        if n_patches > model.coreset_candidates:
            generator = torch.Generator().manual_seed(model.seed)
            patches = patches[torch.randperm(n_patches, generator=generator)[: model.coreset_candidates]]
        features = patches.clone()
        cache.mkdir(parents=True, exist_ok=True)
        torch.save({"features": features, "n_patches": n_patches}, path)
    wanted = max(model.min_bank_size, min(model.max_bank_size, round(model.coreset_ratio * n_patches)))
    return features, min(wanted, len(features)), n_patches


def timed(work) -> tuple[torch.Tensor, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    ]
    return names[0] if names else platform.processor() or platform.machine()


def run_case(category: str, args: argparse.Namespace) -> dict:
    settings = CASES[category]
    features, size, n_patches = candidate_features(args.data, category, settings, args.cache)
    model = PatchCore(**settings)
    dim, seed = model.coreset_projection, model.seed
    print(f"{category}: {n_patches} patches, {len(features)} candidates of {features.shape[1]} dims, keep {size}")
    runs = []
    for repeat in range(args.repeats):
        load = load_average()
        new, new_wall, new_cpu = timed(lambda: greedy_coreset(features, size, dim, seed))
        old, old_wall, old_cpu = timed(lambda: plain_greedy(*projected(features, dim, seed), size))
        identical = torch.equal(old, new)
        runs.append(
            {
                "old_ms": round(1000 * old_wall),
                "new_ms": round(1000 * new_wall),
                "speed_up": round(old_wall / new_wall, 1),
                "old_cpu_ms": round(1000 * old_cpu),
                "new_cpu_ms": round(1000 * new_cpu),
                "cpu_speed_up": round(old_cpu / new_cpu, 1),
                "identical": identical,
                "load_before": load,
                "load_after": load_average(),
            }
        )
        print(f"  run {repeat + 1}: {json.dumps(runs[-1])}", flush=True)
    return {
        "category": category,
        "settings": settings,
        "n_patches": n_patches,
        "candidates": len(features),
        "feature_dim": int(features.shape[1]),
        "projection_dim": dim,
        "kept": size,
        "runs": runs,
    }


def markdown(report: dict) -> str:
    lines = [
        "# Greedy k-center coreset: plain loop (old) beside lazy selection (new)",
        "",
        f"`{report['command']}` on {report['date']} ({report['machine']}, {report['threads']} torch threads). "
        f"Load average (1, 5, 15 min) at the start: {report['load_start']}; `uptime` then: `{report['uptime']}`. "
        "The machine is shared with other jobs: the load average before each run is in the table, and process CPU "
        "time beside wall time.",
        "",
    ]
    rows = []
    for case in report["cases"]:
        scale = ", ".join(f"{key}={value}" for key, value in case["settings"].items()) or "default scale"
        name = f"{case['category']} ({scale})"
        for index, run in enumerate(case["runs"], 1):
            rows.append(
                [name, case["candidates"], case["kept"], index, run["old_ms"], run["new_ms"], f"{run['speed_up']}x"]
                + [run["old_cpu_ms"], run["new_cpu_ms"], f"{run['cpu_speed_up']}x"]
                + ["yes" if run["identical"] else "NO", run["load_before"][0]]
            )
    header = ["case", "candidates", "kept", "run", "old ms", "new ms", "speed-up", "old CPU ms", "new CPU ms"]
    lines += markdown_table(header + ["CPU speed-up", "same picks", "load before"], rows)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="MVTec-layout data root")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/coreset_features"), help="feature cache folder")
    parser.add_argument("--repeats", type=int, default=1, help="timings of each algorithm per case (default 1)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    report = {
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, "
        f"torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "load_start": load_average(),
        "uptime": uptime,
        "cases": [run_case(category, args) for category in args.cases],
    }
    report["load_end"] = load_average()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.md:
        args.md.write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
