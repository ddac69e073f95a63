"""Images per second of ``predict`` on one machine: the local engine against Ray with N workers.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/engine_throughput.py /tmp/ray_model \
        --data ../shared/data --category magnetic_tile --engines local ray:1 ray:2 \
        --markdown bench/results/engine_throughput.md

For every engine it runs ``anomalens.engine.predict`` on the category's test images into a fresh folder and
reports the wall time and two rates: end to end (model loading, Ray worker start-up and all) and steady (from
the first result line in ``results.jsonl`` to the last, what a long-running job sees). The Ray cluster is
started before the clock runs (a plant keeps one running); its replicas start inside the timed run. Every
engine's results are compared with the first engine's: verdicts, mask PNGs, largest relative score difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import cv2
import torch
from result_tables import markdown_table

from anomalens import api, engine
from anomalens.data import mvtec_samples, read_image
from anomalens.models import load_detector
from anomalens.results.run_directory import RunDirectory

POLL_SECONDS = 0.1


def _line_times(results_lines: Path, stop: threading.Event) -> list[tuple[float, int]]:
    """(time, number of result lines) each time ``results.jsonl`` grows, until ``stop`` is set."""
    seen: list[tuple[float, int]] = []
    count = 0
    while not stop.wait(POLL_SECONDS):
        if results_lines.is_file():
            now = sum(1 for _ in results_lines.open())
            if now > count:
                count = now
                seen.append((time.perf_counter(), count))
    return seen


def run_engine(
    spec: str, model_dir: Path, images: list[Path], out: Path, device: str | None, batch_size: int | None
) -> dict:
    name, _, count = spec.partition(":")
    n_workers = int(count) if count and name == "ray" else None
    default_threads = torch.get_num_threads()
    if name == "local" and count:
        torch.set_num_threads(int(count))
    if name == "ray":
        import ray

        ray.init(num_cpus=n_workers, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    stop = threading.Event()
    samples: list[tuple[float, int]] = []
    watcher = threading.Thread(target=lambda: samples.extend(_line_times(out / "results.jsonl", stop)))
    watcher.start()
    start = time.perf_counter()
    run = engine.predict(model_dir, images, out, name, workers=n_workers, device=device, batch_size=batch_size)
    end = time.perf_counter()
    stop.set()
    watcher.join()
    torch.set_num_threads(default_threads)
    if name == "ray":
        ray.shutdown()
    first_time, first_count = samples[0] if samples else (start, 0)
    n = len(run.results)
    return {
        "engine": spec,
        "images": n,
        "errors": len(run.errors),
        "seconds": end - start,
        "end_to_end": n / (end - start),
        "steady": (n - first_count) / (end - first_time) if end > first_time else float("nan"),
        "results": run.to_dict()["results"],
        "out": out,
    }


def agreement(reference: dict, other: dict) -> dict:
    by_image = {r["image"]: r for r in reference["results"]}
    pairs = [(by_image[r["image"]], r) for r in other["results"]]
    differing = [
        int(
            (
                cv2.imread(str(reference["out"] / a["mask"]), cv2.IMREAD_GRAYSCALE)
                != cv2.imread(str(other["out"] / b["mask"]), cv2.IMREAD_GRAYSCALE)
            ).sum()
        )
        for a, b in pairs
    ]
    relative = max((abs(a["score"] - b["score"]) / abs(a["score"]) for a, b in pairs), default=0.0)
    return {
        "same_verdicts": sum(a["anomalous"] == b["anomalous"] for a, b in pairs),
        "same_masks": differing.count(0),
        "differing_mask_pixels": sum(differing),
        "max_rel_score_diff": relative,
    }


def stage_costs(model_dir: Path, images: list[Path], device: str | None, out: Path) -> dict[str, float]:
    """Median milliseconds per image of each stage of ``predict`` (one torch thread): where the time goes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    detector = load_detector(model_dir, device)
    detector.predict(read_image(images[0]))  # the first call builds and warms the network
    stages: dict[str, list[float]] = {"read": [], "predict": [], "findings and record": [], "write 2 PNGs": []}
    for index, path in enumerate(images):
        tic = time.perf_counter()
        image = read_image(path)
        read = time.perf_counter()
        prediction = detector.predict(image)
        predicted = time.perf_counter()
        record = api.inspection_record(path, image, prediction, 0.0)
        recorded = time.perf_counter()
        RunDirectory(out).write_images(record, f"stage_{index}", image, prediction)
        written = time.perf_counter()
        for times, seconds in zip(
            stages.values(), (read - tic, predicted - read, recorded - predicted, written - recorded)
        ):
            times.append(1000 * seconds)
    torch.set_num_threads(threads)
    return {stage: statistics.median(times) for stage, times in stages.items()}


def markdown(rows: list[dict], reference: dict, args: argparse.Namespace) -> str:
    lines = [
        f"Model `{args.model_dir}`, {reference['images']} test images of `{args.category}`, device "
        f"`{args.device or 'model default'}`, Ray batch size {args.batch_size or 'default'}, "
        f"{os.cpu_count()} cores, load average before the run {args.load:.1f}; the local engine runs "
        f"{torch.get_num_threads()} torch threads unless `local:T` says T, each Ray worker 1.",
        "",
    ]
    cells = []
    for row in rows:
        same = agreement(reference, row)
        cells.append(
            [row["engine"], row["images"], f"{row['seconds']:.1f}", f"{row['end_to_end']:.2f}"]
            + [f"{row['steady']:.2f}", f"{same['same_verdicts']}/{row['images']}"]
            + [f"{same['same_masks']}/{row['images']}", same["differing_mask_pixels"]]
            + [f"{same['max_rel_score_diff']:.1e}"]
        )
    header = ["engine", "images", "seconds", "images/s end to end", "images/s steady", "same verdicts"]
    lines += markdown_table(header + ["same masks", "differing mask pixels", "max rel. score diff"], cells)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["local", "ray:1", "ray:2"],
        help="local (local:T with T torch threads), or ray:N for a local Ray cluster of N workers "
        "(one thread each); the first is the reference",
    )
    parser.add_argument("--device", help="cpu, cuda, auto (default: the model's own setting)")
    parser.add_argument("--batch-size", type=int, help="images per network batch (default: 1 on CPU, 16 on GPU)")
    parser.add_argument("--limit", type=int, help="only the first N test images (quick checks)")
    parser.add_argument(
        "--stages",
        type=int,
        default=0,
        help="also time each stage on this many images (spread over the test set), one thread",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    args.load = os.getloadavg()[0]
    images = [s.path for s in mvtec_samples(args.data, args.category, "test")][: args.limit]
    with tempfile.TemporaryDirectory() as scratch:
        rows = [
            run_engine(
                spec, args.model_dir, images, Path(scratch) / spec.replace(":", "_"), args.device, args.batch_size
            )
            for spec in args.engines
        ]
        table = markdown(rows, rows[0], args)
        if args.stages:
            spread = images[:: max(1, len(images) // args.stages)][: args.stages]
            costs = stage_costs(args.model_dir, spread, args.device, Path(scratch))
            table += (
                f"\nMedian milliseconds per image and stage, one thread, {len(spread)} images:\n\n| "
                + " | ".join(costs)
                + " |\n|"
                + "---|" * len(costs)
                + "\n| "
                + " | ".join(f"{ms:.1f}" for ms in costs.values())
                + " |\n"
            )
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(
            json.dumps([{k: v for k, v in row.items() if k not in ("results", "out")} for row in rows], indent=2)
        )


if __name__ == "__main__":
    main()
