"""``anomalens models MODEL_DIR``: list a model's versions; ``--rollback N`` makes version N current again."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from anomalens.cli.output import console
from anomalens.models.versions import ModelVersion, ModelVersions


def versions_table(versions: list[ModelVersion], current: int) -> Table:
    """One row per version, oldest first; the current one marked."""
    table = Table(title="model versions")
    for column in ("version", "parent", "cause", "by", "created (UTC)", "expected false alarms"):
        table.add_column(column)
    for entry in versions:
        rate = entry.expected.get("false_alarm_rate")
        restored = f" (files of {entry.files})" if entry.files != entry.version else ""
        table.add_row(
            f"{entry.version}{' (current)' if entry.version == current else ''}",
            "" if entry.parent is None else str(entry.parent),
            entry.cause + restored,
            entry.by,
            entry.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "" if rate is None else f"{100 * rate:.1f} %",
        )
    return table


def cmd_models(args: argparse.Namespace) -> int:
    versions = ModelVersions(args.model_dir)
    if args.rollback is not None:
        entry = versions.rollback(args.rollback, by="anomalens models")
        console.print(f"version {args.rollback} is current again, as version {entry.version}")
    manifest = versions.manifest()
    console.print(versions_table(manifest.versions, manifest.current))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``models`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser("models", help="list a model's versions, or roll back to one")
    p.add_argument("model_dir", help="model directory")
    p.add_argument("--rollback", type=int, metavar="N", help="make version N current again (as a new version)")
    p.set_defaults(func=cmd_models)
    return p
