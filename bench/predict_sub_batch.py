"""How many views a prediction should run through the network at once: ms per image of ``predict_batch`` on
batches of images, the views split into network batches of 1, 2, 4 and 8.

For each saved model (``--models``; its category's test images under ``--data``) the same batches of ``--images``
test images are predicted with each network batch size in turn, round after round, so that a change of the
host's load falls on all of them alike; ms per image is the median over the batches and rounds. The network is
the model's default runtime (ONNX Runtime where it is installed).

    OMP_NUM_THREADS=2 .venv/bin/python bench/predict_sub_batch.py --models MODEL_DIR [...] \\
        --json bench/results/predict_sub_batch.json --md bench/results/predict_sub_batch.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# isort: off
import anomalens  # noqa: F401  (first, as in the CLI: it sets the OpenMP threads' wait policy before torch loads)

# isort: on
import numpy as np
from result_tables import markdown_table, publish, run_facts

from anomalens.data import collect_images, read_image
from anomalens.models import load_detector

SIZES = (1, 2, 4, 8)


def time_model(model_dir: Path, data: Path, images: int, batch: int, rounds: int) -> dict:
    """Median ms per image for each network batch size, predicting ``images`` test images ``batch`` at a time."""
    detector = load_detector(model_dir)
    category = detector_category(model_dir, data)
    paths = sorted(collect_images(data / category / "test"))
    pixels = [read_image(path) for path in paths[:: max(1, len(paths) // images)][:images]]
    batches = [pixels[start : start + batch] for start in range(0, len(pixels), batch)]
    times: dict[int, list[float]] = {size: [] for size in SIZES}
    for repeat in range(rounds + 1):
        for size in SIZES:
            # the size the detector would choose, overridden on this instance alone
            detector._network_batch_size = lambda size=size: size
            for images_batch in batches:
                tic = time.perf_counter()
                detector.predict_batch(images_batch)
                if repeat:  # the first round warms up
                    times[size].append(1000 * (time.perf_counter() - tic) / len(images_batch))
    return {
        "model": str(model_dir),
        "category": category,
        "runtime": detector.runtime,
        "views_per_image": len(detector._views(pixels[0])),
        "ms_per_image": {str(size): round(float(np.median(values)), 1) for size, values in times.items()},
    }


def detector_category(model_dir: Path, data: Path) -> str:
    """The suite category a model folder is named after (its own name or a parent's)."""
    for part in (model_dir, *model_dir.parents):
        if (data / part.name / "test").is_dir():
            return part.name
    raise SystemExit(f"{model_dir}: no category of {data} in its path")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="+", required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=16, help="test images, evenly spread over the folder")
    parser.add_argument("--batch", type=int, default=8, help="images per predict_batch call")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    facts = run_facts()
    results = [time_model(model, args.data, args.images, args.batch, args.rounds) for model in args.models]
    rows = []
    for result in results:
        times = result["ms_per_image"]
        rows.append([result["model"], result["views_per_image"], result["runtime"], *times.values()])
    command = " ".join(["python bench/predict_sub_batch.py --models", *map(str, args.models)])
    text = "\n".join(
        [
            "# Views per network batch in a prediction",
            "",
            f"`{command}` on {facts['date']} ({facts['machine']}, {facts['threads']} torch threads, load average "
            f"{facts['load_average_before']} before). `predict_batch` on {args.images} test images, {args.batch} at "
            f"a time, the network batch sizes taking turns over {args.rounds} rounds; median ms per image.",
            "",
            *markdown_table(
                ["model", "views per image", "runtime", *(f"{size} view(s) per batch" for size in SIZES)], rows
            ),
            "",
        ]
    )
    publish(text, {"facts": facts, "results": results}, args.json, args.md)


if __name__ == "__main__":
    main()
