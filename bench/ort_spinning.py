"""Whether ONNX Runtime's threads should spin between parallel sections: in the fit, and in a prediction.

ONNX Runtime keeps its threads spinning for a while after each parallel section, ready for the next. That helps a
graph that does all the work, and hurts PyTorch work run between its calls, whose threads compete for the same
cores. Both uses are timed with spinning on and off, taking turns:

- fit: ``PatchCore(image_size=256)`` on ``--images`` magnetic tile training images; its backbone runs through
  ``CpuGraphModule`` between PyTorch's pooling, coreset and search;
- prediction: batch 1 ``predict`` of one test image by the fitted model, its whole graph in ONNX Runtime.

    OMP_NUM_THREADS=2 .venv/bin/python bench/ort_spinning.py --data /work/shared/data \\
        --json bench/results/ort_spinning.json --md bench/results/ort_spinning.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from result_tables import markdown_table, publish, run_facts

from anomalens.data import collect_images, read_image
from anomalens.models import PatchCore, load_detector
from anomalens.models.onnx_runtime import ONNX_FILE, CpuGraphModule, OnnxScorer


def fit_seconds(images: list[np.ndarray], spinning: bool) -> tuple[float, PatchCore]:
    CpuGraphModule.spinning = spinning
    tic = time.perf_counter()
    detector = PatchCore(image_size=256).fit(images)
    return time.perf_counter() - tic, detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--fit-rounds", type=int, default=2)
    parser.add_argument("--predict-repeats", type=int, default=40)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    facts = run_facts()
    category = args.data / "magnetic_tile"
    images = [read_image(path) for path in sorted(collect_images(category / "train" / "good"))[: args.images]]
    fits: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.fit_rounds):
        for spinning in (False, True):
            seconds, detector = fit_seconds(images, spinning)
            fits[spinning].append(seconds)
            print(f"fit, spinning {spinning}: {seconds:.1f} s", flush=True)
    image = read_image(sorted(collect_images(category / "test"))[0])
    predictions: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as folder:
        model = load_detector(detector.save(Path(folder) / "model"), runtime="onnx")
        scorers = {spinning: OnnxScorer(Path(folder) / "model" / ONNX_FILE, spinning=spinning) for spinning in fits}
        for repeat in range(args.predict_repeats + 1):
            for spinning, scorer in scorers.items():
                model.onnx_scorer_ = scorer
                tic = time.perf_counter()
                model.predict(image)
                if repeat:  # the first round warms up
                    predictions[spinning].append(1000 * (time.perf_counter() - tic))
    rows = [
        {
            "spinning": spinning,
            "fit_s": [round(value, 2) for value in fits[spinning]],
            "predict_ms_median": round(float(np.median(predictions[spinning])), 2),
        }
        for spinning in (False, True)
    ]
    result = {
        **facts,
        "images": len(images),
        "rows": rows,
    }
    table = markdown_table(
        ["threads spin", f"fit of {len(images)} images at 256x256, s (each round)", "predict, batch 1, ms (median)"],
        ([row["spinning"], " / ".join(map(str, row["fit_s"])), row["predict_ms_median"]] for row in rows),
    )
    text = "\n".join(
        [
            "# ONNX Runtime's spinning threads: fit and prediction",
            "",
            f"`python bench/ort_spinning.py` on {result['date']} ({result['machine']},"
            f" {result['threads']} torch threads, load average before the run"
            f" {result['load_average_before']}); settings take turns.",
            "",
            *table,
            "",
        ]
    )
    publish(text, result, args.json, args.md)


if __name__ == "__main__":
    main()
