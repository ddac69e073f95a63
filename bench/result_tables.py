"""Markdown tables for the bench scripts' result files."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a Markdown table: ``header``, its rule, and a line per row, each cell as ``str`` gives it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def run_facts() -> dict:
    """When and where a bench runs: date, machine, torch threads and the load average before it starts."""
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": torch.get_num_threads(),
        "load_average_before": round(os.getloadavg()[0], 2),
    }


def publish(text: str, result: dict | None = None, json_path: Path | None = None, md_path: Path | None = None) -> None:
    """Print a bench's Markdown report and write it, and its ``result`` as JSON, where paths are given."""
    print(text)
    if json_path and result is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    if md_path:
        md_path.write_text(text)
