"""PatchCore's feature extraction per view at several batch sizes, PyTorch and ONNX Runtime on the CPU.

The fit embeds its images in batches (``CPU_BATCH`` views on a CPU); a larger batch can be slower per view
once its activations leave the cache. Each batch size runs the same views, after a warm-up, and the sizes and
runtimes take turns round by round so that a change in the machine's load hits them alike. "torch" is the
network in PyTorch (``PatchCoreModel.embed``), "onnx" the fit's path (``PatchCore._embed``: backbone and pooling
exported to ONNX Runtime once, the reduction in PyTorch).

    OMP_NUM_THREADS=2 .venv/bin/python bench/embed_batch.py --md bench/results/embed_batch.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from result_tables import markdown_table

from anomalens.models import PatchCore
from anomalens.models.base import flush_denormals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 288])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--views", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--md")
    args = parser.parse_args()
    flush_denormals()
    started, load = time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0]
    rows = []
    for size in args.sizes:
        detector = PatchCore(image_size=size)
        detector._start_fit([np.zeros((size, size, 3), np.float32)])
        detector._new_model()
        runtimes = {"torch": detector.model_.embed, "onnx": detector._embed}
        views = torch.rand(args.views, 3, size, size)
        times = {(runtime, batch): [] for runtime in runtimes for batch in args.batches}
        with torch.inference_mode():
            for (runtime, batch), _ in times.items():
                runtimes[runtime](views[:batch])  # warm-up (and the export of the ONNX graph)
            assert detector.patch_features_.runtime == "onnx", "the onnx extra is not installed"
            for _ in range(args.rounds):
                for (runtime, batch), spent in times.items():
                    tic = time.perf_counter()
                    for start in range(0, args.views, batch):
                        runtimes[runtime](views[start : start + batch])
                    spent.append(1000 * (time.perf_counter() - tic) / args.views)
        for (runtime, batch), spent in times.items():
            rows.append([f"{size}x{size}", runtime, batch, f"{np.median(spent):.1f}"])
    header = (
        f"`python {' '.join(sys.argv)}` on {started} ({platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
        f"{torch.get_num_threads()} torch threads, load average before the run {load:.2f})."
    )
    lines = markdown_table(["input", "runtime", "batch", "ms per view (median of rounds)"], rows)
    report = "\n".join(["# PatchCore feature extraction by batch size", "", header, "", *lines]) + "\n"
    if args.md:
        Path(args.md).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
