"""What an approximate nearest-neighbour search would save PatchCore, and what it would cost the maps.

An inverted-file index built with BLAS in mind: the bank is clustered by k-means into ``cells``; each cell keeps
the ``share`` of the bank nearest its centre as its candidates; each query patch goes to its nearest centre and is
searched against that cell's candidates, one matrix product per cell. For each setting, on test images of a saved
model (its own patch features): milliseconds per image beside the exact search (the variants taking turns), the
recall (share of patches whose distance equals the exact one), and how far the map's maximum rises above the
exact one (the worst image). A check that would make it exact (the nearest row found lies within the cell's
radius) is counted too: the share of patches it would send back to the exact search.

    OMP_NUM_THREADS=2 .venv/bin/python bench/approximate_search.py --model MODEL_DIR \\
        --images ../shared/data/magnetic_tile/test --md bench/results/approximate_search.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from patchcore_stages import median_ms
from result_tables import markdown_table, publish
from sklearn.cluster import KMeans

from anomalens.data import collect_images, read_image
from anomalens.models import load_detector
from anomalens.models.patchcore.torch_model import nearest_distances


class CellIndex:
    """The bank in ``cells`` k-means cells, each with the ``share`` of the bank nearest its centre."""

    def __init__(self, bank: torch.Tensor, cells: int, share: float):
        centres = KMeans(cells, n_init=1, random_state=0, max_iter=30).fit(bank.numpy()).cluster_centers_
        self.centres = torch.from_numpy(centres).float()
        self.centre_norms = (self.centres * self.centres).sum(dim=1)
        distances, members = torch.cdist(self.centres, bank).topk(int(len(bank) * share), dim=1, largest=False)
        self.radius = distances[:, -1]
        self.candidates = [bank[rows].contiguous() for rows in members]
        self.candidate_norms = [(rows * rows).sum(dim=1) for rows in self.candidates]

    def search(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Approximate nearest distances [Q], and which of them the radius check cannot vouch for [Q]."""
        query_norms = (queries * queries).sum(dim=1)
        to_centres = torch.addmm(self.centre_norms, queries, self.centres.T, alpha=-2.0)
        nearest_centre, cell = to_centres.min(dim=1)
        order = torch.argsort(cell)
        best = torch.empty(len(queries))
        start = 0
        for index, count in enumerate(torch.bincount(cell, minlength=len(self.centres)).tolist()):
            if count:
                rows = order[start : start + count]
                products = torch.addmm(self.candidate_norms[index], queries[rows], self.candidates[index].T, alpha=-2.0)
                best[rows] = products.amin(dim=1)
                start += count
        found = (best + query_norms).clamp_min(0).sqrt()
        centre_distance = (nearest_centre + query_norms).clamp_min(0).sqrt()
        return found, centre_distance + found > self.radius[cell]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=40, help="test images, evenly spread over the folder")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    detector = load_detector(args.model, runtime="torch")
    model = detector.model_
    paths = sorted(collect_images(args.images))
    paths = paths[:: max(1, len(paths) // args.count)][: args.count]
    queries = []
    with torch.inference_mode():
        for path in paths:
            views = detector._views(read_image(path))
            embeddings = model.embed(detector._to_tensor([view.pixels for view in views]))
            queries.append(embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1]))
    bank, norms = model.memory_bank, model.bank_norms
    exact = [nearest_distances(query, bank, norms) for query in queries]
    exact_ms = median_ms(lambda: nearest_distances(queries[0], bank, norms), args.repeats)
    rows = []
    for cells in (16, 32, 64):
        for share in (0.125, 0.25, 0.5):
            index = CellIndex(bank, cells, share)
            ms = median_ms(lambda index=index: index.search(queries[0]), args.repeats)
            recall, rise, unvouched = [], [], []
            for query, truth in zip(queries, exact):
                found, unsure = index.search(query)
                recall.append(float(((found - truth).abs() < 1e-3).float().mean()))
                rise.append(float((found.max() - truth.max()) / truth.max()))
                unvouched.append(float(unsure.float().mean()))
            rows.append(
                [cells, share, f"{ms:.1f}", f"{np.mean(recall):.3f}", f"{max(rise):.3f}", f"{np.mean(unvouched):.3f}"]
            )
            print(rows[-1], flush=True)
    header = (
        f"`python bench/approximate_search.py --model {args.model} --images {args.images}` on {started} "
        f"({platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads). Bank "
        f"{bank.shape[0]} x {bank.shape[1]}, {len(paths)} test images of {queries[0].shape[0]} patches; exact "
        f"search {exact_ms:.1f} ms per image in the same run."
    )
    table = markdown_table(
        [
            "cells",
            "share of bank per cell",
            "ms per image",
            "recall",
            "worst rise of the map's maximum",
            "share the radius check cannot vouch for",
        ],
        rows,
    )
    text = "\n".join(
        ["# An approximate search (inverted file, BLAS per cell) against the exact one", "", header, "", *table, ""]
    )
    publish(text, md_path=args.md)


if __name__ == "__main__":
    main()
