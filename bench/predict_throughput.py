"""Images per second of ``predict_batch`` on a folder of test images, for a saved model on a chosen device.

Reading and decoding the images is included (it is part of a real run); the model is loaded once and warmed
up on the first batch. ``--runtime onnx`` runs the network through ONNX Runtime (CPU; exported into the model
folder on first use), ``--runtime fp16`` in float16 autocast on a GPU.

    .venv/bin/python bench/predict_throughput.py MODEL_DIR ../shared/data/magnetic_tile/test --batch 1 8
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see patchcore_magnetic_tile.py: spin-waiting threads

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from anomalens.data import collect_images, read_image  # noqa: E402
from anomalens.models import RUNTIMES, load_detector  # noqa: E402


def throughput(detector, paths, batch: int) -> dict:
    detector.predict_batch([read_image(p) for p in paths[:batch]])  # warm-up
    if detector.torch_device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for start in range(0, len(paths), batch):
        detector.predict_batch([read_image(p) for p in paths[start : start + batch]])
    if detector.torch_device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - tic
    return {
        "batch": batch,
        "images": len(paths),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(paths) / seconds, 2),
        "ms_per_image": round(1000 * seconds / len(paths), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("images")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    detector = load_detector(args.model, args.device, args.runtime)
    paths = collect_images([args.images], recursive=True)
    rows = [throughput(detector, paths, batch) for batch in args.batch]
    for row in rows:
        print(
            json.dumps({"model": detector.name, "device": str(detector.torch_device), "runtime": args.runtime, **row})
        )


if __name__ == "__main__":
    sys.exit(main())
