"""``anomalens fit DATA_ROOT -o MODEL_DIR``: learn a model from defect-free images and save it."""

from __future__ import annotations

import argparse
from typing import Any

from anomalens import api
from anomalens.cli.arguments import add_model_options, add_output_option, model_params, on_error
from anomalens.cli.output import console, describe_expected
from anomalens.models.versions import ModelVersions


def _report_skipped(skipped: list) -> None:
    for path, message in skipped:
        console.print(f"[yellow]skipped[/] {path}: {message}")


def cmd_fit(args: argparse.Namespace) -> int:
    detector, report = api.fit(
        args.data_root, args.category, args.model, args.shots, on_error(args), **model_params(args)
    )
    _report_skipped(report.skipped)
    ModelVersions(args.output).add(detector, cause="fit", by="anomalens fit")
    assert detector.thresholds_ is not None and detector.working_scale_ is not None
    console.print(
        f"fitted {args.model} on {report.n_images} images in {report.seconds:.1f} s; "
        f"image threshold {detector.thresholds_.image:.4f}; saved to {args.output}"
    )
    console.print(f"working scale: {detector.working_scale_.describe()}")
    console.print(describe_expected(detector.thresholds_.expected))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``fit`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser("fit", help="learn a model from defect-free images")
    p.add_argument("data_root", help="MVTec-layout root (with --category) or a folder of good images")
    p.add_argument("--category", help="category folder under DATA_ROOT; uses its train/good images")
    add_output_option(p, "model directory to write")
    add_model_options(p)
    p.set_defaults(func=cmd_fit)
    return p
