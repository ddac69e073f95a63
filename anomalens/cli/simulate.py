"""``anomalens simulate``: write a synthetic-defect MVTec-layout data set from a category's good images.

Wire it into the main parser with ``add_parser(subparsers)``; the parsed namespace's ``func`` runs it.
"""

from __future__ import annotations

import argparse
from typing import Any

from anomalens.cli.arguments import add_output_option, positive_int
from anomalens.cli.output import console
from anomalens.simulation import KINDS, write_simulated_dataset


def cmd_simulate(args: argparse.Namespace) -> int:
    kinds = args.kinds or list(KINDS)  # cycled in this order; repeating a kind weights it
    summary = write_simulated_dataset(
        args.data_root,
        args.category,
        args.output,
        n=args.n,
        kinds=kinds,
        seed=args.seed,
        progress=True,
        holdout=args.holdout,
        overwrite=args.overwrite,
    )
    for item in summary["skipped"]:
        console.print(f"[yellow]skipped[/] {item['path']}: {item['error']}")
    for item in summary["failed"]:
        console.print(f"[yellow]no defect[/] #{item['index']} ({item['kind']}) on {item['base']}: {item['error']}")
    per_kind = ", ".join(f"{kind} {count}" for kind, count in summary["per_kind"].items()) or "none"
    console.print(
        f"wrote {summary['n_defects']} simulated defective images ({per_kind}), "
        f"{summary['n_test_good']} held-out good and {summary['n_train_good']} training images to "
        f"{summary['out_dir']}",
        soft_wrap=True,
    )
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``simulate`` sub-command on ``subparsers`` (from ``add_subparsers``); returns its parser."""
    p = subparsers.add_parser(
        "simulate",
        help="make a synthetic-defect test set (MVTec layout) from defect-free images",
        description="Put simulated defects into held-out good images of DATA_ROOT/CATEGORY/train/good and "
        "write an MVTec-layout data set with masks to OUT_ROOT/CATEGORY (plus simulation.json).",
    )
    p.add_argument("data_root", help="MVTec-layout root holding CATEGORY/train/good")
    p.add_argument("--category", required=True, help="category folder under DATA_ROOT")
    add_output_option(p, "root of the data set to write")
    p.add_argument("--n", type=positive_int, default=50, help="number of defective images (default 50)")
    p.add_argument(
        "--kind",
        dest="kinds",
        action="append",
        choices=KINDS,
        metavar="KIND",
        help=f"anomaly kind, repeatable; kinds are cycled in the given order, so repeating one "
        f"weights it ({', '.join(KINDS)}; default: all)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--holdout",
        type=_fraction,
        default=0.2,
        help="share of good images moved to test/good and used as defect bases (default 0.2)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a previous simulated set in OUT_ROOT/CATEGORY")
    p.set_defaults(func=cmd_simulate)
    return p
