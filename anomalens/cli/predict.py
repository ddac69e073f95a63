"""``anomalens predict MODEL_DIR IMAGE_OR_FOLDER... -o OUT``: inspect images with a fitted model, locally or on
a Ray cluster."""

from __future__ import annotations

import argparse
from typing import Any

from anomalens import engine
from anomalens.cli.arguments import (
    add_engine_options,
    add_output_option,
    add_runtime_options,
    add_taxonomy_option,
    on_error,
)
from anomalens.cli.output import console, results_table
from anomalens.explanation.taxonomy import Taxonomy, load_taxonomy
from anomalens.models import load_detector


def cmd_predict(args: argparse.Namespace) -> int:
    taxonomy = None
    if args.taxonomy:  # examples of a folder are also seen through the detector that will find the regions
        detector = None if Taxonomy.is_saved(args.taxonomy) else load_detector(args.model_dir)
        taxonomy = load_taxonomy(args.taxonomy, detector=detector)
    run = engine.predict(
        args.model_dir,
        args.inputs,
        args.output,
        args.engine,
        address=args.address,
        workers=args.workers,
        device=args.device,
        runtime=args.runtime,
        on_error=on_error(args),
        progress=True,
        taxonomy=taxonomy,
    )
    console.print(results_table(run.results))
    for error in run.errors:
        console.print(f"[yellow]skipped[/] {error['path']}: {error['error']}")
    runtime = f" (network run by {run.runtime})" if run.runtime else ""
    console.print(
        f"{run.n_anomalous} of {len(run.results)} images anomalous{runtime}; "
        f"results in {args.output}/results.json, counts in summary.json"
    )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``predict`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser("predict", help="inspect images with a fitted model")
    p.add_argument("model_dir")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    add_output_option(p, "folder for overlays, masks and results.json")
    add_taxonomy_option(p)
    add_engine_options(p)
    add_runtime_options(p)
    p.set_defaults(func=cmd_predict)
    return p
