"""The exact nearest-neighbour search of PatchCore: one matrix product per chunk of the bank, by chunk size.

For each shape of the suite (query patches of one image x bank rows x feature width, as the default fits have
them) the search (``squared_nearest``) is timed with the whole bank in one product and with the bank cut into
chunks of 256 to 4096 rows, the variants taking turns within each repeat so that a change in the shared machine's
load falls on all alike; the median of ``--repeats`` is given beside the floor (2*Q*M*D FLOPs over the matmul rate
measured in the same run). Random features: the work does not depend on the values.

    OMP_NUM_THREADS=2 .venv/bin/python bench/search_kernel.py \\
        --json bench/results/search_kernel.json --md bench/results/search_kernel.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from patchcore_stages import machine_rates
from result_tables import markdown_table, publish, run_facts

from anomalens.models.patchcore.torch_model import BANK_CHUNK, squared_nearest

# (name, query patches per image, bank rows, feature width): the default fits of bench/results/fit_scale.md
SHAPES = (
    ("magnetic_tile@256", 1024, 6144, 152),
    ("magnetic_tile", 1296, 7776, 152),
    ("solar_cell_mono", 1296, 9901, 152),
    ("ball_screw_drive", 3072, 16384, 152),
)
CHUNKS = (None, 256, 512, 1024, 2048, 4096)


def label(chunk: int | None) -> str:
    return "whole bank" if chunk is None else f"{chunk} rows"


def time_shape(queries: int, rows: int, dim: int, repeats: int) -> dict[str, float]:
    """Median ms of each chunk size, the sizes taking turns within each repeat."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(queries, dim, generator=generator)
    bank = torch.randn(rows, dim, generator=generator)
    norms = (bank * bank).sum(dim=1)
    reference = squared_nearest(query, bank, norms, bank_chunk=None)
    times: dict[str, list[float]] = {label(chunk): [] for chunk in CHUNKS}
    for repeat in range(repeats + 1):
        for chunk in CHUNKS:
            tic = time.perf_counter()
            got = squared_nearest(query, bank, norms, bank_chunk=chunk)
            if repeat:  # the first round warms up
                times[label(chunk)].append(1000 * (time.perf_counter() - tic))
            torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-3)
    return {name: round(float(np.median(values)), 2) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    facts = run_facts()
    rates = machine_rates(args.repeats)
    rows = []
    for name, queries, bank_rows, dim in SHAPES:
        medians = time_shape(queries, bank_rows, dim, args.repeats)
        floor = 2 * queries * bank_rows * dim / rates["matmul_gflop_per_s"] / 1e6
        rows.append({"shape": name, "queries": queries, "bank": bank_rows, "dim": dim, "floor_ms": round(floor, 2)})
        rows[-1].update(medians)
        print(rows[-1], flush=True)
    result = {
        **facts,
        "rates": rates,
        "default_chunk": BANK_CHUNK,
        "rows": rows,
    }
    header = ["shape", "queries x bank x width", *(label(chunk) for chunk in CHUNKS), "floor"]
    table = markdown_table(
        header,
        (
            [row["shape"], f"{row['queries']} x {row['bank']} x {row['dim']}"]
            + [row[label(chunk)] for chunk in CHUNKS]
            + [row["floor_ms"]]
            for row in rows
        ),
    )
    text = "\n".join(
        [
            "# Exact nearest-neighbour search by bank chunk (ms per image, median)",
            "",
            f"`python bench/search_kernel.py` on {result['date']} ({result['machine']},"
            f" {result['threads']} torch threads, load average before the run"
            f" {result['load_average_before']}). Matmul rate in the same run:"
            f" {rates['matmul_gflop_per_s']} GFLOP/s; floor = 2*Q*M*D FLOPs over it. Default chunk:"
            f" {BANK_CHUNK} rows.",
            "",
            *table,
            "",
        ]
    )
    publish(text, result, args.json, args.md)


if __name__ == "__main__":
    main()
