"""``anomalens fit-many``: one model per category of an MVTec-layout data set, locally or on a Ray cluster.

Wire it into the main parser with ``add_parser(subparsers)``; the parsed namespace's ``func`` runs it.
"""

from __future__ import annotations

import argparse
from typing import Any

from anomalens import engine
from anomalens.cli.arguments import add_engine_options, add_model_options, add_output_option, model_params, on_error
from anomalens.cli.output import console


def cmd_fit_many(args: argparse.Namespace) -> int:
    # the detectors' own progress bars (one per fit) give way to one bar over the categories
    params = {name: value for name, value in model_params(args).items() if name != "progress"}
    run = engine.fit_many(
        args.data_root,
        args.categories,
        args.output,
        args.engine,
        address=args.address,
        workers=args.workers,
        model=args.model,
        shots=args.shots,
        on_error=on_error(args),
        progress=True,
        **params,
    )
    for category in run.already_fitted:
        console.print(f"kept {category}: already fitted in {args.output}")
    for report in run.fitted:
        console.print(
            f"fitted {report['category']} on {report['n_images']} images in {report['seconds']:.1f} s; "
            f"image threshold {report['image_threshold']:.4f}"
        )
        for skipped in report["skipped"]:
            console.print(f"[yellow]skipped[/] {skipped['path']}: {skipped['error']}")
    for failure in run.failed:
        console.print(f"[red]failed[/] {failure['category']}: {failure['error']}")
    console.print(
        f"{len(run.fitted)} fitted, {len(run.already_fitted)} kept, {len(run.failed)} failed in "
        f"{run.seconds:.1f} s; models in {args.output}/<category>, log in {args.output}/fit_many.json"
    )
    return 1 if run.failed else 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``fit-many`` sub-command on ``subparsers`` (from ``add_subparsers``); returns its parser."""
    p = subparsers.add_parser(
        "fit-many",
        help="fit one model per category (e.g. on a Ray cluster)",
        description="Fit a model on DATA_ROOT/<category>/train/good for every category and save it to "
        "OUT/<category>. A failed category is reported and the others go on (exit status 1 if any failed); "
        "categories already in OUT are kept, so a stopped run resumes where it was.",
    )
    p.add_argument("data_root", help="MVTec-layout root holding the categories")
    p.add_argument("--categories", nargs="+", required=True, metavar="CATEGORY")
    add_output_option(p, "folder that gets one model folder per category")
    add_model_options(p)
    add_engine_options(p)
    p.set_defaults(func=cmd_fit_many)
    return p
