"""``anomalens learn MODEL_DIR IMAGES...``: teach a model that images it flagged are normal (false alarms);
``--undo N`` takes mark N back; ``--list`` shows what the model has learned. Each change is a new version."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from rich.table import Table

from anomalens import api
from anomalens.cli.output import console
from anomalens.learning import LearnReport, Mark, active_marks
from anomalens.models import load_detector


def marks_table(marks: list[Mark]) -> Table:
    table = Table(title="learned marks (images declared normal)")
    for column in ("mark", "image", "by", "when (UTC)", "score / threshold then", "patches added"):
        table.add_column(column)
    for mark in marks:
        table.add_row(
            str(mark.mark),
            mark.image,
            mark.by,
            mark.at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{mark.score / mark.threshold:.2f}",
            str(mark.patches),
        )
    return table


def print_report(report: LearnReport) -> None:
    for mark in report.learned:
        after = "" if mark.score_after is None else f" -> {mark.score_after / report.threshold_after:.2f}"
        console.print(
            f"learned {mark.image} as mark {mark.mark}: score / threshold {mark.score / mark.threshold:.2f}{after}, "
            f"{mark.patches} patches added"
        )
    for refusal in report.refused:
        console.print(f"[red]refused[/] {refusal.image}: {refusal.reason}")
    if report.forgotten:
        console.print(f"undid marks {', '.join(map(str, report.forgotten))}")
    capped = " (held at the cap)" if report.threshold_capped else ""
    console.print(
        f"image threshold {report.threshold_before:.4f} -> {report.threshold_after:.4f}{capped}; "
        f"the fit chose {report.fitted_threshold:.4f}"
    )
    if report.version is not None:
        console.print(f"saved as version {report.version}")
    else:
        console.print("nothing learned: the model is unchanged")


def cmd_learn(args: argparse.Namespace) -> int:
    if args.list:
        console.print(marks_table(active_marks(load_detector(args.model_dir))))
        return 0
    by = args.by or getpass.getuser()
    if args.undo:
        print_report(api.forget(args.model_dir, args.undo, by))
        return 0
    if not args.images:
        raise ValueError("give the images to learn as normal, or --undo N, or --list")
    report = api.learn(args.model_dir, args.images, by, force=args.force)
    print_report(report)
    return 0 if report.learned or not report.refused else 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``learn`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser("learn", help="teach a model that flagged images are normal (false alarms), or undo that")
    p.add_argument("model_dir", help="model directory (a new version is saved in it)")
    p.add_argument("images", nargs="*", help="images or folders the model should accept as normal")
    p.add_argument("--by", help="who marks them (recorded with each mark and version; default: the user name)")
    p.add_argument(
        "--force",
        action="store_true",
        help="learn images that score far above the threshold too (they look like real defects)",
    )
    p.add_argument("--undo", type=int, nargs="+", metavar="N", help="take learned marks back")
    p.add_argument("--list", action="store_true", help="list the marks the model has learned")
    p.set_defaults(func=cmd_learn)
    return p
