"""``anomalens learn MODEL_DIR IMAGES...``: teach a model that images it flagged are normal (false alarms);
``--undo N`` takes mark N back; ``--list`` shows what the model has learned. Each change is a new version.

An EfficientAD model learns by training: the images wait in its fine-tuning queue until ``--apply --normals DIR``
trains it on them (``--drop N`` takes entry N out of the queue)."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from rich.table import Table

from anomalens import api
from anomalens.cli.output import console
from anomalens.learning import LearnReport, Mark, QueuedImage, active_marks
from anomalens.learning.finetune import FineTuneQueue
from anomalens.learning.marks import Declared
from anomalens.models import CHANGING_RUNTIME, load_detector
from anomalens.models.efficientad.detector import FINE_TUNE_SECONDS, FINE_TUNE_STEPS


def declared_table(title: str, id_column: str, last_column: str, rows: list[tuple[int, Declared, str]]) -> Table:
    """One row per image declared normal: its id, the declaration, and one column of its own kind."""
    table = Table(title=title)
    for column in (id_column, "image", "by", "when (UTC)", "score / threshold then", last_column):
        table.add_column(column)
    for number, declared, last in rows:
        table.add_row(
            str(number),
            declared.image,
            declared.by,
            declared.at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{declared.score / declared.threshold:.2f}",
            last,
        )
    return table


def marks_table(marks: list[Mark]) -> Table:
    rows = [(mark.mark, mark, str(mark.patches)) for mark in marks]
    return declared_table("learned marks (images declared normal)", "mark", "patches added", rows)


def queue_table(entries: list[QueuedImage]) -> Table:
    rows = [(entry.entry, entry, str(entry.version)) for entry in entries]
    return declared_table("queued for fine-tuning (applied with --apply)", "entry", "model version", rows)


def print_report(report: LearnReport, model_dir: str) -> None:
    for mark in report.learned:
        after = "" if mark.score_after is None else f" -> {mark.score_after / report.threshold_after:.2f}"
        taught = "" if report.fine_tuning else f", {mark.patches} patches added"
        console.print(
            f"learned {mark.image} as mark {mark.mark}: score / threshold {mark.score / mark.threshold:.2f}{after}"
            f"{taught}"
        )
    for entry in report.queued:
        console.print(
            f"queued {entry.image} for fine-tuning as entry {entry.entry}: "
            f"score / threshold {entry.score / entry.threshold:.2f}"
        )
    for refusal in report.refused:
        console.print(f"[red]refused[/] {refusal.image}: {refusal.reason}")
    if report.forgotten:
        console.print(f"undid marks {', '.join(map(str, report.forgotten))}")
    if report.fine_tuning:
        console.print(f"fine-tuned for {report.fine_tuning.steps} steps ({report.fine_tuning.seconds:.0f} s)")
    if report.queued:
        console.print(
            "the model learns by training: it is unchanged until the queue is applied with\n"
            f"  anomalens learn {model_dir} --apply --normals TRAINING_FOLDER [--seconds S] [--steps N]"
        )
        return
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
        console.print(marks_table(active_marks(load_detector(args.model_dir, runtime=CHANGING_RUNTIME))))
        queued = FineTuneQueue(args.model_dir).entries()
        if queued:
            console.print(queue_table(queued))
        return 0
    by = args.by or getpass.getuser()
    if args.undo:
        print_report(api.forget(args.model_dir, args.undo, by), args.model_dir)
        return 0
    if args.drop:
        dropped = api.drop_queued(args.model_dir, args.drop)
        console.print(f"dropped from the fine-tuning queue: {', '.join(entry.image for entry in dropped)}")
        return 0
    if args.apply:
        if not args.normals:
            raise ValueError("--apply needs --normals: the folder of normal images to train on with the queue")
        report = api.apply_fine_tuning(args.model_dir, args.normals, by, steps=args.steps, seconds=args.seconds)
        print_report(report, args.model_dir)
        return 0
    if not args.images:
        raise ValueError("give the images to learn as normal, or --undo N, --apply, --drop N or --list")
    report = api.learn(args.model_dir, args.images, by, force=args.force)
    print_report(report, args.model_dir)
    return 0 if report.learned or report.queued or not report.refused else 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``learn`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser("learn", help="teach a model that flagged images are normal (false alarms), or undo that")
    p.add_argument("model_dir", help="model directory (a new version is saved in it)")
    p.add_argument(
        "images",
        nargs="*",
        help="images or folders the model should accept as normal (an EfficientAD model queues them for --apply)",
    )
    p.add_argument("--by", help="who marks them (recorded with each mark and version; default: the user name)")
    p.add_argument(
        "--force",
        action="store_true",
        help="learn images that score far above the threshold too (they look like real defects)",
    )
    p.add_argument("--undo", type=int, nargs="+", metavar="N", help="take learned marks back")
    p.add_argument("--list", action="store_true", help="list the marks the model has learned (and its queue)")
    p.add_argument(
        "--apply",
        action="store_true",
        help="EfficientAD: fine-tune the model on its queued images and the --normals images (a new version)",
    )
    p.add_argument("--normals", metavar="DIR", help="with --apply: a folder of normal images, e.g. the training set")
    p.add_argument(
        "--seconds",
        type=float,
        default=FINE_TUNE_SECONDS,
        help="with --apply: the most the training may take (default: %(default)s)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=FINE_TUNE_STEPS,
        help="with --apply: the most training steps (default: %(default)s)",
    )
    p.add_argument("--drop", type=int, nargs="+", metavar="N", help="take entries out of the fine-tuning queue")
    p.set_defaults(func=cmd_learn)
    return p
