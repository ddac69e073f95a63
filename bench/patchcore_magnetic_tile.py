"""Benchmark: PatchCore on the magnetic tile category, full data and few-shot, beside anomalib 2.7.

What it measures, for every ``--shots`` setting (``all`` = every training image):

* fit seconds (reading + fitting, as ``anomalens.api.fit`` reports them);
* the test-split metrics of ``anomalens.evaluation.evaluate`` at the detector's own thresholds, pooled and
  per defect type;
* inference latency at batch 1: ``detector.predict(image)`` on real test images (median and p90 ms, after
  warm-up calls), and ``detector.anomaly_map`` on a 256x256 input;

and once, in a fresh Python process, the peak resident memory of fitting on 300 training images, beside the
resident memory after importing torch/numpy/anomalens only.

It ends with our figures beside the anomalib 2.7 figures that ``../shared/peer/README.md`` quotes (parsed from
that file at run time).

Run from the repository root::

    .venv/bin/python bench/patchcore_magnetic_tile.py --json bench/results/patchcore_magnetic_tile.json

A smoke run on the shipped demo data (about a minute)::

    .venv/bin/python bench/patchcore_magnetic_tile.py --data anomalens/demo_data --shots 1 3 \
        --skip-memory --param image_size=128
"""

from __future__ import annotations

import os

# OpenMP threads that wait by spinning (the default, ACTIVE) make every parallel torch call on a 2-core machine
# that other jobs keep busy ~50x slower (fit 47 s instead of 0.9 s, 1400 ms instead of 25 ms per image, in
# the demo-data smoke run). PASSIVE waiting keeps the 2 threads and removes that artefact. It must be set before
# the OpenMP runtime loads (import torch); an explicit OMP_WAIT_POLICY in the environment is kept.
OMP_WAIT_POLICY_GIVEN = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import anomalens  # noqa: E402
from anomalens import api  # noqa: E402
from anomalens.data import mvtec_samples, read_image  # noqa: E402
from anomalens.evaluation.evaluate import evaluate  # noqa: E402
from anomalens.models import PatchCore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PEER = REPO.parent / "shared" / "peer" / "README.md"

# Pooled and per-defect-type metrics reported, in table order: (key in evaluate()'s dict, column title).
METRICS = [
    ("image_auroc", "image AUROC"),
    ("pixel_auroc", "pixel AUROC"),
    ("pixel_aupro", "AUPRO"),
    ("image_f1_max", "image F1 max"),
    ("accuracy", "accuracy"),
    ("f1", "F1"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("oracle_accuracy", "oracle acc."),
    ("pixel_f1", "pixel F1"),
]


# -- small helpers ---------------------------------------------------------------------------------------------
def log(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MB (ru_maxrss is in KB on Linux, in bytes on macOS)."""
    value = resource.getrusage(who).ru_maxrss
    return value / (1024 * 1024) if sys.platform == "darwin" else value / 1024


def parse_value(text: str) -> Any:
    """``--param`` values: JSON (ints, floats, lists, true/false/null), Python's None/True/False, else a string."""
    aliases = {"None": None, "none": None, "True": True, "False": False}
    if text in aliases:
        return aliases[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(pairs: list[str]) -> dict[str, Any]:
    known = PatchCore._param_names()
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SystemExit(f"--param expects key=value, got {pair!r}")
        if key not in known:
            raise SystemExit(f"--param {key!r} is not a PatchCore parameter; known: {', '.join(known)}")
        params[key] = parse_value(value.strip())
    return params


def parse_shots(values: list[str]) -> list[int | None]:
    shots: list[int | None] = []
    for value in values:
        if value.lower() == "all":
            shots.append(None)
            continue
        try:
            number = int(value)
        except ValueError:
            raise SystemExit(f"--shots takes 'all' or positive integers, got {value!r}") from None
        if number < 1:
            raise SystemExit(f"--shots must be at least 1, got {number}")
        shots.append(number)
    return shots


def shots_label(shots: int | None) -> str:
    return "all" if shots is None else str(shots)


def clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to None, tuples/Paths to lists/strings."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(float(value)) else f"{float(value):.{digits}f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# -- machine facts ---------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts(threads: int) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "load_average_1_5_15min": load,
        "torch_threads": torch.get_num_threads(),
        "torch_threads_requested": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_wait_policy_source": "environment" if OMP_WAIT_POLICY_GIVEN else "set by this script",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "anomalens": anomalens.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# -- latency ---------------------------------------------------------------------------------------------------
def time_calls(call, inputs: list[Any], warmup: int) -> list[float]:
    """Milliseconds of each call on ``inputs``, after ``warmup`` untimed calls (cycling over the inputs)."""
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    millis = []
    for item in inputs:
        tic = time.perf_counter()
        call(item)
        millis.append(1000 * (time.perf_counter() - tic))
    return millis


def summary_ms(millis: list[float]) -> dict[str, Any]:
    return {
        "median_ms": round(float(np.median(millis)), 2),
        "p90_ms": round(float(np.percentile(millis, 90)), 2),
        "min_ms": round(float(np.min(millis)), 2),
        "n": len(millis),
    }


def measure_latency(detector, images: list[np.ndarray], square: list[np.ndarray], warmup: int) -> dict[str, Any]:
    return {
        "warmup_calls": warmup,
        "predict": summary_ms(time_calls(detector.predict, images, warmup)),
        "anomaly_map_256": summary_ms(time_calls(detector.anomaly_map, square, warmup)),
    }


# -- peak memory in a fresh process ----------------------------------------------------------------------------
# Peak RSS is read from /proc/self/status (VmHWM: high-water mark of this process's own memory since its exec).
# ru_maxrss cannot be used on its own here: Linux carries the parent's peak into a child at fork/exec, so a child
# of this (already large) benchmark process would report the parent's peak. It is still recorded, for reference;
# where /proc is missing (macOS), ru_maxrss is the only figure.
MEMORY_CHILD = r"""
import json, resource, sys, time
config = json.loads(sys.argv[1])
def ru_maxrss_mb():
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / (1024 * 1024) if sys.platform == "darwin" else value / 1024
def peak_mb():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return ru_maxrss_mb()
start_mb = peak_mb()
import numpy, torch
torch.set_num_threads(config["threads"])
torch_mb = peak_mb()
from anomalens import api
import_mb = peak_mb()
tic = time.perf_counter()
detector, report = api.fit(config["data"], config["category"], "patchcore", shots=config["shots"], **config["params"])
seconds = time.perf_counter() - tic
print(json.dumps({"python_only_mb": start_mb, "after_import_torch_numpy_mb": torch_mb,
                  "after_import_anomalens_mb": import_mb, "peak_after_fit_mb": peak_mb(),
                  "ru_maxrss_mb": ru_maxrss_mb(),
                  "method": "VmHWM" if sys.platform.startswith("linux") else "ru_maxrss",
                  "n_images": report.n_images, "fit_seconds": seconds, "torch_threads": torch.get_num_threads(),
                  "bank_size": detector.info_.get("bank_size")}))
"""


def measure_memory(data: str, category: str, shots: int, params: dict[str, Any], threads: int) -> dict[str, Any]:
    config = {"data": data, "category": category, "shots": shots, "params": params, "threads": threads}
    tic = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, json.dumps(config)], capture_output=True, text=True, cwd=os.getcwd()
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    result = {key: (round(value, 1) if isinstance(value, float) else value) for key, value in child.items()}
    result["fit_increment_mb"] = round(child["peak_after_fit_mb"] - child["after_import_anomalens_mb"], 1)
    result["rusage_children_mb"] = round(maxrss_mb(resource.RUSAGE_CHILDREN), 1)  # includes inherited peaks
    result["shots_requested"] = shots
    result["wall_seconds"] = round(time.perf_counter() - tic, 1)
    return result


# -- peer figures ----------------------------------------------------------------------------------------------
def parse_peer(path: Path) -> dict[str, Any] | None:
    """The first markdown table of the peer README, with the paragraph just above it (what was measured, how)."""
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("|")), None)
    if start is None:
        return None
    end = start
    while end < len(lines) and lines[end].lstrip().startswith("|"):
        end += 1

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    table = [cells(line) for line in lines[start:end]]
    headers = table[0]
    rows = [row for row in table[1:] if not all(re.fullmatch(r":?-+:?", cell) for cell in row)]
    bottom = start
    while bottom > 0 and not lines[bottom - 1].strip():
        bottom -= 1
    above = bottom
    while above > 0 and lines[above - 1].strip():
        above -= 1
    context = " ".join(line.strip() for line in lines[above:bottom])
    after = end
    while after < len(lines) and not lines[after].strip():
        after += 1
    notes = []
    while after < len(lines) and lines[after].strip():
        notes.append(lines[after].strip())
        after += 1
    return {"source": str(path), "headers": headers, "rows": rows, "context": context, "notes": " ".join(notes)}


def our_value_for(header: str, run: dict[str, Any], memory: dict[str, Any] | None) -> str:
    """Our figure for one of the peer table's columns, matched by the column title."""
    title = header.lower()
    pooled = run["evaluation"]
    if "image" in title and "auroc" in title:
        return fmt(pooled["image_auroc"])
    if "pixel" in title and "auroc" in title:
        return fmt(pooled["pixel_auroc"])
    if "aupro" in title:
        return fmt(pooled["pixel_aupro"])
    if "f1" in title:
        return fmt(pooled["image_f1_max"])
    if "fit" in title or "train" in title:
        return fmt(run["fit_seconds"], 1)
    if "ms" in title:
        return (
            f"{fmt(run['latency']['anomaly_map_256']['median_ms'], 1)} "
            f"(predict: {fmt(run['latency']['predict']['median_ms'], 1)})"
        )
    if "rss" in title or "memory" in title:
        if memory is None:
            return "skipped"
        return f"{memory['peak_after_fit_mb'] / 1024:.2f} GB ({memory['n_images']} img)"
    return "–"


# -- report ----------------------------------------------------------------------------------------------------
def print_report(results: dict[str, Any], full: dict[str, Any] | None) -> None:
    runs = results["runs"]
    print("\n## PatchCore, pooled over the test split\n")
    headers = (
        ["shots", "train imgs"] + [title for _, title in METRICS] + ["fit s", "ms/img predict (p90)", "ms 256² map"]
    )
    rows = []
    for run in runs:
        pooled, latency = run["evaluation"], run["latency"]
        rows.append(
            [run["shots"], run["n_train_images"]]
            + [pooled[key] for key, _ in METRICS]
            + [
                fmt(run["fit_seconds"], 1),
                f"{fmt(latency['predict']['median_ms'], 1)} ({fmt(latency['predict']['p90_ms'], 1)})",
                fmt(latency["anomaly_map_256"]["median_ms"], 1),
            ]
        )
    print(markdown_table(headers, rows))
    test = results["test_split"]
    print(
        f"\nTest split: {test['n_good']} good + {test['n_defective']} defective images "
        f"({', '.join(f'{k} {v}' for k, v in test['per_type'].items())}). Metrics at the detector's own "
        "thresholds (accuracy, F1, precision, recall, pixel F1) and threshold-free (AUROC, AUPRO, F1 max, "
        "oracle accuracy = best accuracy over all thresholds). Latency: batch 1, "
        f"{results['settings']['warmup']} warm-up calls, median over {runs[0]['latency']['predict']['n']} "
        "real test images (predict) and over as many 256x256 inputs (anomaly_map)."
    )

    if full is not None:
        print(f"\n## Per defect type, model fitted on shots={full['shots']} ({full['n_train_images']} images)\n")
        print("Each row: that defect type's images against all good test images.\n")
        per_type = full["evaluation"]["per_defect_type"]
        headers = ["defect type", "n defective"] + [title for _, title in METRICS]
        rows = [
            [name, metrics.get("n_defective")] + [metrics[key] for key, _ in METRICS]
            for name, metrics in per_type.items()
        ]
        pooled = full["evaluation"]
        rows.append(["**pooled**", test["n_defective"]] + [pooled[key] for key, _ in METRICS])
        print(markdown_table(headers, rows))

        latency = full["latency"]
        print(
            f"\n## Inference latency, shots={full['shots']} model (batch 1, {torch.get_num_threads()} torch threads)\n"
        )
        rows = [
            [call, *(fmt(latency[key][k], 1) for k in ("median_ms", "p90_ms", "min_ms")), latency[key]["n"]]
            for call, key in [("predict(real test image)", "predict"), ("anomaly_map(256x256)", "anomaly_map_256")]
        ]
        print(markdown_table(["call", "median ms", "p90 ms", "min ms", "n"], rows))

    memory = results.get("memory")
    print("\n## Peak memory of fitting (fresh process)\n")
    if memory is None:
        print(f"failed: {results['memory_error']}" if results.get("memory_error") else "skipped (--skip-memory)")
    else:
        print(
            markdown_table(
                ["stage", "peak RSS MB"],
                [
                    [stage, f"{value:.0f}"]
                    for stage, value in [
                        ("python only", memory["python_only_mb"]),
                        ("after import numpy + torch", memory["after_import_torch_numpy_mb"]),
                        ("after import anomalens (baseline)", memory["after_import_anomalens_mb"]),
                        (f"after fit on {memory['n_images']} images", memory["peak_after_fit_mb"]),
                        ("**fit increment over baseline**", memory["fit_increment_mb"]),
                    ]
                ],
            )
        )
        print(
            f"\nPeak RSS read as {memory['method']} in a fresh `python -c` process (ru_maxrss there: "
            f"{memory['ru_maxrss_mb']} MB; on Linux that can be this parent's peak, carried over at fork/exec). "
            f"Fit in that process: {memory['fit_seconds']} s, {memory['torch_threads']} torch threads, "
            f"bank {memory['bank_size']} patches."
        )

    peer = results.get("peer")
    print("\n## Beside anomalib 2.7\n")
    if peer is None:
        print(f"(no peer table found at {results['settings']['peer']})")
        return
    if full is None:
        print("(no run to compare)")
        return
    headers = peer["headers"]
    ours = [f"**anomalens PatchCore, shots={full['shots']}** (this run)"]
    ours += [our_value_for(header, full, memory) for header in headers[1:]]
    print(markdown_table(headers, peer["rows"] + [ours]))
    print(
        f"\nThe anomalib rows are quoted from {peer['source']} (parsed at run time, not measured in this run). "
        "They were measured by the peer on a held-out split of the same magnetic tile source, not on our "
        f'test images; the peer\'s own words: "{peer["context"]}"'
    )
    if peer["notes"]:
        print(f'Peer notes: "{peer["notes"]}"')
    print(
        f"Our row: this run, on our test split ({test['n_good']} good + {test['n_defective']} defective), "
        f"{results['machine']['torch_threads']} torch threads. The peer times its torch model on a random "
        "256x256 tensor, so our like-for-like figure is anomaly_map on a 256x256 input; in brackets, predict() "
        "on real test images (resizing, map back to the image size, thresholds). Our peak RSS: "
        + (
            "skipped."
            if memory is None
            else f"the fresh-process fit on {memory['n_images']} images, "
            f"{memory['fit_increment_mb']:.0f} MB of it above the import baseline."
        )
    )
    if any("f1" in header.lower() for header in headers):
        print("Our F1 is image F1 max (best threshold).")


# -- main ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data", help="MVTec-layout data root (default ../shared/data)")
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument(
        "--shots",
        nargs="+",
        default=["all", "1", "5", "20"],
        help="training set sizes: 'all' or integers (default: all 1 5 20)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a PatchCore parameter, e.g. coreset_ratio=0.01 or "
        '\'layers=["blocks.2","blocks.4"]\' (repeatable; values parsed as JSON)',
    )
    parser.add_argument("--json", metavar="OUT", help="write every figure (and the settings) to this JSON file")
    parser.add_argument("--skip-memory", action="store_true", help="skip the fresh-process peak-memory fit")
    parser.add_argument(
        "--memory-shots",
        type=int,
        default=300,
        help="training images for the peak-memory fit (default 300; fewer if fewer exist)",
    )
    parser.add_argument(
        "--latency-images", type=int, default=20, help="real test images timed for predict() latency (default 20)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up calls before timing (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--peer", default=str(DEFAULT_PEER), help="peer README with the anomalib table")
    args = parser.parse_args(argv)

    shots_list = parse_shots(args.shots)
    params = parse_params(args.param)
    torch.set_num_threads(args.threads)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    machine = machine_facts(args.threads)

    test_samples = mvtec_samples(args.data, args.category, "test")
    per_type: dict[str, int] = {}
    for sample in test_samples:
        per_type[sample.defect_type] = per_type.get(sample.defect_type, 0) + 1
    n_good = per_type.pop("good", 0)
    n_train = len(mvtec_samples(args.data, args.category, "train"))
    effective = PatchCore(**params).get_params()

    print("# PatchCore benchmark: magnetic tile\n")
    print(f"Command: `{command}`  ")
    print(f"Working directory: `{os.getcwd()}`  ")
    print(
        f"Machine: {machine['cpu']}; {machine['cores_usable']} usable of {machine['cores_logical']} logical "
        f"cores; load average {machine['load_average_1_5_15min']}; torch {machine['torch']} with "
        f"{machine['torch_threads']} threads; numpy {machine['numpy']}; Python {machine['python']}; "
        f"anomalens {machine['anomalens']}; {machine['date']}  "
    )
    print(f"OpenMP wait policy: {machine['omp_wait_policy']} ({machine['omp_wait_policy_source']}).  ")
    load, cores = machine["load_average_1_5_15min"], machine["cores_usable"] or 1
    if load and load[0] > cores:
        print(
            f"**Warning:** load average {load[0]} exceeds the {cores} usable cores at the start: other jobs "
            "are running, so timings are slower and noisier than on an idle machine.  "
        )
    print(
        f"Data: `{args.data}` category `{args.category}`: {n_train} training images, test {n_good} good + "
        f"{sum(per_type.values())} defective.  "
    )
    print(f"PatchCore parameters (overrides: {json.dumps(params) if params else 'none'}): `{json.dumps(effective)}`")

    results: dict[str, Any] = {
        "command": command,
        "cwd": os.getcwd(),
        "machine": machine,
        "settings": {
            "data": args.data,
            "category": args.category,
            "shots": [shots_label(s) for s in shots_list],
            "param_overrides": params,
            "patchcore_params": effective,
            "latency_images": args.latency_images,
            "warmup": args.warmup,
            "memory_shots": None if args.skip_memory else args.memory_shots,
            "threads": args.threads,
            "peer": args.peer,
        },
        "test_split": {"n_good": n_good, "n_defective": sum(per_type.values()), "per_type": per_type},
        "runs": [],
        "memory": None,
        "peer": parse_peer(Path(args.peer)),
    }

    def save() -> None:
        if args.json:
            out = Path(args.json)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(clean(results), indent=2, allow_nan=False) + "\n")

    # The same real test images, spread over all defect types, time predict() for every model.
    pick = np.unique(
        np.linspace(0, len(test_samples) - 1, min(args.latency_images, len(test_samples))).round().astype(int)
    )
    latency_images = [read_image(test_samples[i].path) for i in pick]
    rng = np.random.default_rng(0)
    square_inputs = [rng.random((256, 256, 3), dtype=np.float32) for _ in range(len(latency_images))]

    for shots in shots_list:
        label = shots_label(shots)
        log(f"fitting shots={label}")
        tic = time.perf_counter()
        detector, report = api.fit(args.data, args.category, "patchcore", shots=shots, **params)
        wall = time.perf_counter() - tic
        if report.skipped:
            log(f"  skipped {len(report.skipped)} unreadable training images")
        log(
            f"  fitted on {report.n_images} images in {report.seconds:.1f} s; evaluating {len(test_samples)} "
            "test images"
        )
        evaluation = evaluate(detector, test_samples)
        log(f"  image AUROC {evaluation['image_auroc']:.3f}; timing latency")
        latency = measure_latency(detector, latency_images, square_inputs, args.warmup)
        results["runs"].append(
            {
                "shots": label,
                "n_train_images": report.n_images,
                "fit_seconds": round(report.seconds, 2),
                "fit_wall_seconds": round(wall, 2),
                "skipped_training_images": report.skipped,
                "detector_info": detector.info_,
                "thresholds": detector.thresholds_.to_dict(),
                "evaluation": evaluation,
                "latency": latency,
            }
        )
        save()
        del detector
        gc.collect()

    if not args.skip_memory:
        log(f"peak memory: fitting on up to {args.memory_shots} images in a fresh process")
        try:
            results["memory"] = measure_memory(args.data, args.category, args.memory_shots, params, args.threads)
        except RuntimeError as error:  # keep every other figure; say why memory is missing
            log(str(error))
            results["memory_error"] = str(error)
    results["parent_peak_rss_mb"] = round(maxrss_mb(), 1)
    results["load_average_at_end"] = machine_facts(args.threads)["load_average_1_5_15min"]
    save()

    runs = results["runs"]
    full = next((r for r in runs if r["shots"] == "all"), None) or (
        max(runs, key=lambda r: r["n_train_images"]) if runs else None
    )
    print_report(results, full)
    print(
        f"\nLoad average at the end: {results['load_average_at_end']}; peak RSS of this (parent) process: "
        f"{results['parent_peak_rss_mb']} MB."
    )
    if args.json:
        print(f"\nAll figures written to `{args.json}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
