"""``anomalens evaluate MODEL_DIR DATA_ROOT --category C``: measure a model on a labelled MVTec-layout test set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from anomalens.cli.arguments import add_runtime_options
from anomalens.cli.output import console, metrics_table
from anomalens.data import mvtec_samples
from anomalens.data.splits import HALVES, select_half
from anomalens.evaluation.evaluate import evaluate, json_ready
from anomalens.models import load_detector


def cmd_evaluate(args: argparse.Namespace) -> int:
    detector = load_detector(args.model_dir, args.device, args.runtime)
    samples = select_half(mvtec_samples(args.data_root, args.category, "test"), args.half)
    report = evaluate(detector, samples, progress=True)
    console.print(metrics_table(report))
    console.print(
        f"{report['n_images']} images in {report['seconds']:.1f} s "
        f"(median {report['predict_ms_median']:.0f} ms per image, network run by {detector.runtime})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(json_ready({**report, "runtime": detector.runtime}), indent=2))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``evaluate`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser("evaluate", help="measure a model on a labelled MVTec-layout test set")
    p.add_argument("model_dir")
    p.add_argument("data_root")
    p.add_argument("--category", required=True)
    p.add_argument("--json", help="write all metrics to this JSON file")
    p.add_argument(
        "--half",
        choices=("all", *HALVES),
        default="all",
        help="evaluate on one half of the test set (validation: for choosing settings; report: for "
        "figures), split once per category, stratified by defect type",
    )
    add_runtime_options(p)
    p.set_defaults(func=cmd_evaluate)
    return p
