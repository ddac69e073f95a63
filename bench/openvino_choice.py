"""Milliseconds per view of each saved model's exported network run by PyTorch, ONNX Runtime and OpenVINO on this
CPU, and how far each runtime's maps are from PyTorch's.

The network is what a runtime computes for a batch of views: for PatchCore its embedding, the search of the bank
and the smoothing (``PatchCoreExport``), for EfficientAD the teacher, the student and the map normalisation.
ONNX Runtime and OpenVINO both run the ``model.onnx`` that ``use_onnx`` exports into the model folder; OpenVINO
compiles it for the CPU in float32 with a latency hint, once for any batch size ("openvino") and once for each
batch size met ("openvino_fixed_batch"). The views (decoded and resized beforehand, so that reading images is
not timed) go through the runtimes batch by batch, the runtimes taking turns on each batch in an order that rotates,
after one untimed pass that compares their maps with PyTorch's and compiles what OpenVINO compiles, ``--rounds``
times over the images, so that a neighbour's load on a shared machine falls on each alike. Besides the median
batch, the table gives each round's median and the median of each runtime's time over ONNX Runtime's on the same
batch, round by round: a difference smaller than those rounds' spread is noise.

    .venv/bin/python bench/openvino_choice.py PATCHCORE_DIR EFFICIENTAD_DIR ../shared/data/magnetic_tile/test \
        --batch 1 8 --rounds 3 --threads 2 --every 5 \
        --md bench/results/openvino_choice.md --json bench/results/openvino_choice.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see patchcore_magnetic_tile.py: spin-waiting threads

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import openvino  # noqa: E402
import torch  # noqa: E402
from result_tables import markdown_table  # noqa: E402

from anomalens.data import collect_images, read_image  # noqa: E402
from anomalens.models import BaseDetector, load_detector  # noqa: E402
from anomalens.models.base import flush_denormals  # noqa: E402
from anomalens.models.onnx_runtime import ONNX_FILE  # noqa: E402

Scorer = Callable[[torch.Tensor], torch.Tensor]


def view_batches(detector: BaseDetector, paths: list[Path], batch: int) -> list[torch.Tensor]:
    """The views of the images at ``paths``, as the detector cuts and resizes them, in [B,3,S,S] batches."""
    pixels = [view.pixels for path in paths for view in detector._views(read_image(path))]
    return [detector._to_tensor(pixels[start : start + batch]) for start in range(0, len(pixels), batch)]


def openvino_scorer(graph: Path, threads: int, fixed_batch: bool) -> Scorer:
    """OpenVINO's compiled graph: for any batch size, or (``fixed_batch``) compiled again for each batch size met,
    its shapes then all known in advance."""
    core = openvino.Core()
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",  # CPUs with bf16 units would otherwise compute in bf16
        "CPU_DENORMALS_OPTIMIZATION": True,  # as torch and ONNX Runtime do here (base.flush_denormals)
    }
    compiled: dict[int, openvino.CompiledModel] = {}

    def score(batch: torch.Tensor) -> torch.Tensor:
        size = len(batch) if fixed_batch else 0
        if size not in compiled:
            model = core.read_model(str(graph))
            if fixed_batch:
                model.reshape([size, *batch.shape[1:]])
            compiled[size] = core.compile_model(model, "CPU", config)
        return torch.from_numpy(compiled[size](batch.numpy())[0])

    return score


def scorers(model: str, threads: int) -> tuple[BaseDetector, dict[str, Scorer]]:
    """The model loaded for PyTorch, and one scorer of [B,3,S,S] views per runtime."""
    detector = load_detector(model, "cpu", "torch")
    torch_scorer = detector._score_views  # PyTorch's maps, whatever runtime the detector is given after
    onnx = detector.use_onnx(model, threads).onnx_scorer_  # exports model.onnx when missing or stale
    assert onnx is not None
    return detector, {
        "torch": torch_scorer,
        "onnxruntime": onnx,
        "openvino": openvino_scorer(Path(model) / ONNX_FILE, threads, fixed_batch=False),
        "openvino_fixed_batch": openvino_scorer(Path(model) / ONNX_FILE, threads, fixed_batch=True),
    }


def percentiles(values: list[float]) -> list[float]:
    """The 10th and 90th percentiles."""
    return statistics.quantiles(values, n=10)[::8] if len(values) > 1 else [values[0], values[0]]


def measure(
    models: list[str], paths: list[Path], batches: list[int], rounds: int, threads: int, runtimes: list[str]
) -> list[dict]:
    """One row per model, batch size and runtime (``runtimes``: those besides PyTorch and ONNX Runtime, the two
    that every other is compared with; all when empty)."""
    rows = []
    for model in models:
        detector, runners = scorers(model, threads)
        runners = {
            name: run for name, run in runners.items() if not runtimes or name in [*runtimes, "torch", "onnxruntime"]
        }
        for batch in batches:
            views = view_batches(detector, paths, batch)
            with torch.inference_mode():
                expected = [runners["torch"](v) for v in views]  # also the warm-up
                # largest difference from PyTorch's map, relative to that map's maximum, over all views
                differences = {
                    name: max(
                        float((run(v) - e).abs().amax() / e.abs().amax()) for v, e in zip(views, expected, strict=True)
                    )
                    for name, run in runners.items()
                }
                seconds = {name: [[] for _ in range(rounds)] for name in runners}
                order = list(runners)
                for turn in range(rounds):
                    for view_batch in views:
                        order = order[1:] + order[:1]  # no runtime always first after another's cache traffic
                        for name in order:
                            tic = time.perf_counter()
                            runners[name](view_batch)
                            seconds[name][turn].append((time.perf_counter() - tic) / len(view_batch))
            for name, per_round in seconds.items():
                every = [s for turn in per_round for s in turn]
                versus_ort = [
                    statistics.median(a / b for a, b in zip(per_round[t], seconds["onnxruntime"][t], strict=True))
                    for t in range(rounds)
                ]
                rows.append(
                    {
                        "model": model,
                        "detector": detector.name,
                        "input": detector.input_size,
                        "runtime": name,
                        "batch": batch,
                        "batches": len(every),
                        "ms_per_view": round(1000 * statistics.median(every), 2),
                        "ms_per_view_p10_p90": [round(1000 * q, 2) for q in percentiles(every)],
                        "ms_per_view_by_round": [round(1000 * statistics.median(turn), 2) for turn in per_round],
                        "time_over_onnxruntime_by_round": [round(r, 3) for r in versus_ort],
                        "max_map_difference_from_torch": float(f"{differences[name]:.2e}"),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict], command: str, images: str, load: tuple[float, float]) -> str:
    lines = [
        "# Exported network by runtime: PyTorch, ONNX Runtime, OpenVINO",
        "",
        f"`{command}` on {datetime.now():%Y-%m-%d %H:%M} ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads; onnxruntime {onnx_runtime_version()}, openvino "
        f"{openvino.__version__}, torch {torch.__version__}). The views of `{images}`, the runtimes taking turns "
        "batch by batch; ms per view from the median batch (10th and 90th percentiles beside it), each round's "
        "median, and each round's median of the runtime's time over ONNX Runtime's on the same batch. Map "
        "difference: the largest absolute difference from PyTorch's map over all views, relative to that map's "
        f"maximum. Load average (1 min) before: {load[0]:.2f}, after: {load[1]:.2f}.",
        "",
    ]
    lines += markdown_table(
        ["detector", "input", "batch", "runtime", "ms / view", "p10-p90", "by round", "/ ONNX Runtime by round"]
        + ["map diff"],
        [
            [row[key] for key in ("detector", "input", "batch", "runtime", "ms_per_view")]
            + ["-".join(map(str, row["ms_per_view_p10_p90"])), ", ".join(map(str, row["ms_per_view_by_round"]))]
            + [", ".join(map(str, row["time_over_onnxruntime_by_round"]))]
            + [f"{row['max_map_difference_from_torch']:.1e}"]
            for row in rows
        ],
    )
    return "\n".join(lines) + "\n"


def onnx_runtime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model directories")
    parser.add_argument("images", help="folder of images")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--runtime", nargs="+", default=[], help="runtimes to compare besides torch and onnxruntime (default: all)"
    )
    parser.add_argument("--every", type=int, default=1, help="use every EVERY-th image only (all kinds of defect)")
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--md", help="write a table to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flush_denormals()
    paths = collect_images([args.images], recursive=True)
    paths = paths[:: args.every]
    before = os.getloadavg()[0]
    rows = measure(args.models, paths, args.batch, args.rounds, args.threads, args.runtime)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.md:
        command = "python " + " ".join(sys.argv)
        Path(args.md).write_text(markdown(rows, command, args.images, (before, os.getloadavg()[0])))


if __name__ == "__main__":
    sys.exit(main())
