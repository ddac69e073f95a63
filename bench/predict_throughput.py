"""Images per second of ``predict_batch`` on a folder of test images, for saved models, runtimes and batch sizes.

Reading and decoding the images is included (it is part of a real run); each model is loaded once per runtime
and warmed up on the first batch. ``--runtime onnx`` runs the network through ONNX Runtime (CPU; exported into
the model folder when missing or stale), ``--runtime fp16`` in float16 autocast on a GPU, ``auto`` as the CLI's
default chooses. The models and runtimes take turns batch by batch (``--rounds`` times over the images), and the
median batch is reported, so that a neighbour's load on a shared machine falls on all of them alike.

    .venv/bin/python bench/predict_throughput.py MODEL_DIR ../shared/data/magnetic_tile/test --batch 1 8
    .venv/bin/python bench/predict_throughput.py PATCHCORE_DIR EFFICIENTAD_DIR ../shared/data/magnetic_tile/test/good \
        --runtime torch onnx --batch 1 8 --rounds 3 \
        --md bench/results/runtime_choice.md --json bench/results/runtime_choice.json
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
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from result_tables import markdown_table  # noqa: E402

from anomalens.data import collect_images, read_image  # noqa: E402
from anomalens.models import RUNTIMES, BaseDetector, load_detector  # noqa: E402


def timed_batch(detector: BaseDetector, paths: list[Path]) -> float:
    """Seconds to read and predict ``paths`` as one batch."""
    if detector.torch_device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    detector.predict_batch([read_image(p) for p in paths])
    if detector.torch_device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - tic


def measure(
    models: list[str],
    paths: list[Path],
    runtimes: list[str],
    batches: list[int],
    device: str,
    rounds: int,
    threads: int,
) -> list[dict]:
    """One row per model, runtime and batch size. The runtimes take turns batch by batch, so that a neighbour's
    load on a shared machine falls on each alike; the median batch gives the time per image."""
    if len(paths) < 2:
        raise ValueError("at least two images are needed")
    loaded = {}
    for model in models:
        for runtime in runtimes:
            detector = load_detector(model, device, runtime)
            if threads and detector.onnx_scorer_ is not None:
                detector.use_onnx(model, threads)  # as many threads as torch is given
            detector.predict_batch([read_image(p) for p in paths[: max(batches)]])  # warm-up
            loaded[model, runtime] = detector
    # seconds per image of each batch
    times: dict[tuple[str, str, int], list[float]] = {key + (b,): [] for key in loaded for b in batches}
    for _ in range(rounds):
        for batch in batches:
            for start in range(0, len(paths), batch):
                chunk = paths[start : start + batch]
                for (model, runtime), detector in loaded.items():
                    times[model, runtime, batch].append(timed_batch(detector, chunk) / len(chunk))
    rows = []
    for (model, runtime, batch), seconds in times.items():
        detector, per_image = loaded[model, runtime], statistics.median(seconds)
        spread = statistics.quantiles(seconds, n=10)[::8] if len(seconds) > 1 else [per_image, per_image]
        rows.append(
            {
                "model": model,
                "detector": detector.name,
                "device": str(detector.torch_device),
                "runtime": runtime,
                "ran": detector.runtime,
                "input": detector.input_size,
                "batch": batch,
                "batches": len(seconds),
                "images_per_second": round(1 / per_image, 2),
                "ms_per_image": round(1000 * per_image, 2),
                "ms_per_image_p10_p90": [round(1000 * q, 2) for q in spread],
            }
        )
    return rows


def markdown(rows: list[dict], command: str, images: str) -> str:
    lines = [
        "# Prediction speed by runtime",
        "",
        f"`{command}` on {datetime.now():%Y-%m-%d %H:%M} ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads). The images of `{images}` read and predicted, the runtimes taking "
        "turns batch by batch; ms per image from the median batch (10th and 90th percentiles beside it). "
        f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}.",
        "",
    ]
    lines += markdown_table(
        ["model", "detector", "input", "runtime", "batch", "ms / image", "p10-p90", "images / s", "batches"],
        [
            [row[key] for key in ("model", "detector", "input", "ran", "batch", "ms_per_image")]
            + ["-".join(map(str, row["ms_per_image_p10_p90"])), row["images_per_second"], row["batches"]]
            for row in rows
        ],
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model directories")
    parser.add_argument("images", help="folder of images")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runtime", choices=RUNTIMES, nargs="+", default=["torch"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--md", help="write a table to this Markdown file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = collect_images([args.images], recursive=True)
    rows = measure(args.models, paths, args.runtime, args.batch, args.device, args.rounds, args.threads)
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.md:
        command = "python " + " ".join(sys.argv)
        Path(args.md).write_text(markdown(rows, command, args.images))


if __name__ == "__main__":
    sys.exit(main())
