"""Batch-1 prediction under PyTorch's OpenMP wait policy: threads that spin after each parallel section, or not.

PyTorch's OpenMP threads spin for a while after each parallel section (OpenMP's default) or sleep at once
(``OMP_WAIT_POLICY=PASSIVE``, which ``import anomalens`` sets when it loads before torch, as in the CLI and the
service). The policy is read when torch loads, so each setting runs in a process of its own; the child imports
torch first, so that the environment alone decides. Scripts that import torch before anomalens (several bench
scripts did) measure the spinning row. In each process one saved model predicts one test image with the
default runtime and with PyTorch, and the network alone runs on that image's views and on random pixels, the four
taking turns; medians of ``--repeats``.

    OMP_NUM_THREADS=2 .venv/bin/python bench/omp_wait_policy.py --model MODEL_DIR \\
        --images ../shared/data/magnetic_tile/test --md bench/results/omp_wait_policy.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from result_tables import markdown_table, publish

POLICIES = {"default (spinning)": None, "PASSIVE": "PASSIVE"}


def child(model: str, images: str, repeats: int) -> dict:
    import numpy as np
    import torch

    from anomalens.data import collect_images, read_image
    from anomalens.models import load_detector

    image = read_image(sorted(collect_images(images))[0])
    auto, plain = load_detector(model), load_detector(model, runtime="torch")
    views = auto._views(image)
    pixels = auto._to_tensor([view.pixels for view in views])
    noise = torch.rand_like(pixels)
    work = {
        f"predict ({auto.runtime})": lambda: auto.predict(image),
        "predict (torch)": lambda: plain.predict(image),
        f"network on the image's views ({auto.runtime})": lambda: auto._score_view_batch(pixels, views),
        f"network on random pixels ({auto.runtime})": lambda: auto._score_view_batch(noise, views),
    }
    times: dict[str, list[float]] = {name: [] for name in work}
    for repeat in range(repeats + 3):
        for name, run in work.items():
            tic = time.perf_counter()
            run()
            if repeat >= 3:  # warm-up rounds
                times[name].append(1000 * (time.perf_counter() - tic))
    return {name: round(float(np.median(values)), 1) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2, help="processes per policy, the policies alternating")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.images, args.repeats)))
        return
    started = time.strftime("%Y-%m-%d %H:%M")
    rows = []
    for round_ in range(args.rounds):
        for label, policy in POLICIES.items():
            env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            command = [sys.executable, __file__, "--child", "--model", args.model, "--images", args.images]
            done = subprocess.run(command + ["--repeats", str(args.repeats)], env=env, capture_output=True, text=True)
            result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
            rows.append({"policy": label, "round": round_ + 1, **result})
            print(rows[-1], flush=True)
    names = [key for key in rows[0] if key not in ("policy", "round")]
    table = markdown_table(
        ["OMP_WAIT_POLICY", "round", *(f"{name}, ms" for name in names)],
        ([row["policy"], row["round"], *(row[name] for name in names)] for row in rows),
    )
    text = "\n".join(
        [
            "# PyTorch's OpenMP wait policy and batch-1 prediction",
            "",
            f"`python bench/omp_wait_policy.py --model {args.model} --images {args.images}` on {started} "
            f"({platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); "
            "each row a process of its own, the policies alternating.",
            "",
            *table,
            "",
        ]
    )
    publish(text, md_path=args.md)


if __name__ == "__main__":
    main()
