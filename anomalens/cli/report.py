"""``anomalens report RESULTS -o report.html``: a self-contained HTML report of ``anomalens predict`` results."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anomalens.cli.arguments import add_output_option
from anomalens.reports.html import build_report, items_from_results


def cmd_report(args: argparse.Namespace) -> int:
    items = items_from_results(args.results)
    out = Path(args.output)
    out.write_text(build_report(items, title=args.title), encoding="utf-8")
    n_anomalous = sum(i.record.anomalous for i in items)
    print(
        f"report of {len(items)} images ({n_anomalous} anomalous) written to {out} "
        f"({out.stat().st_size / 1024:.0f} KiB, images embedded)"
    )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``report`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser("report", help="write a self-contained HTML report of inspection results")
    p.add_argument("results", help="results.json of `anomalens predict`, or the folder that holds it")
    add_output_option(p, "HTML file to write")
    p.add_argument("--title", default="anomalens inspection report")
    p.set_defaults(func=cmd_report)
    return p
