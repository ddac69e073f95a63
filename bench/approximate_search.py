"""What an approximate nearest-neighbour search would save PatchCore, and what it would cost the maps.

Two kinds of index, both built with BLAS in mind:

- an inverted file: the bank is clustered by k-means into ``cells``; each cell keeps the ``share`` of the bank
  nearest its centre as its candidates; each query patch goes to its nearest centre and is searched against that
  cell's candidates, one matrix product per cell. A check that would make it exact (the nearest row found lies
  within the cell's radius) is counted too: the share of patches it would send back to the exact search.
- a prefilter: queries and bank projected on the bank's first ``dims`` principal components, the ``keep`` nearest
  rows of each ``chunk`` of the bank in that space taken as candidates, and the nearest candidate's exact distance
  returned. The projection alone (no exact rerank) is timed too: it is what ``feature_dims`` does.

For each setting, on the validation half of a category's test images (``anomalens.data.splits``), with a saved
model of that category (its own patch features): milliseconds per image, the exact search timed in turn with it
(so that a change of load falls on both), the recall (share of patches whose distance equals the exact one), how
far the map's maximum rises above the exact one (the worst image), and the image AUROC of the model's image
scores (top fraction of the smoothed map) when the search is this one.

    OMP_NUM_THREADS=2 .venv/bin/python bench/approximate_search.py --model MODEL_DIR \\
        --data ../shared/data --category magnetic_tile --md bench/results/approximate_search.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

# isort: off
import anomalens  # noqa: F401  (first, as in the CLI: it sets the OpenMP threads' wait policy before torch loads)

# isort: on
import numpy as np
import torch
from patchcore_stages import medians_in_turn
from result_tables import markdown_table, publish
from sklearn.cluster import KMeans

from anomalens.data import mvtec_samples, read_image
from anomalens.data.splits import select_half
from anomalens.evaluation.metrics import image_auroc
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


class PrefilterIndex:
    """The bank's first ``dims`` principal components; candidates are the ``keep`` nearest rows of each ``chunk``
    of the bank in that space, reranked by their exact distance (``rerank`` False: the projected distance)."""

    def __init__(self, bank: torch.Tensor, dims: int, chunk: int, keep: int, rerank: bool = True):
        self.bank, self.bank_norms = bank, (bank * bank).sum(dim=1)
        self.mean = bank.mean(dim=0)
        _, vectors = torch.linalg.eigh(torch.cov((bank - self.mean).T))
        self.components = vectors[:, -dims:].flip(1).contiguous()
        self.projected = ((bank - self.mean) @ self.components).contiguous()
        self.projected_norms = (self.projected * self.projected).sum(dim=1)
        self.chunk, self.keep, self.rerank = chunk, keep, rerank

    def search(self, queries: torch.Tensor) -> torch.Tensor:
        projected = (queries - self.mean) @ self.components
        if not self.rerank:
            return nearest_distances(projected, self.projected, self.projected_norms)
        candidates = []
        for start in range(0, len(self.bank), self.chunk):
            rows = slice(start, start + self.chunk)
            partial = torch.addmm(self.projected_norms[rows], projected, self.projected[rows].T, alpha=-2.0)
            candidates.append(partial.topk(self.keep, dim=1, largest=False).indices + start)
        chosen = torch.cat(candidates, dim=1)
        products = torch.bmm(self.bank[chosen], queries.unsqueeze(2)).squeeze(2)
        squared = (self.bank_norms[chosen] - 2 * products).amin(dim=1) + (queries * queries).sum(dim=1)
        return squared.clamp_min(0).sqrt()


def compare(
    search: Callable[[torch.Tensor], torch.Tensor],
    queries: list,
    exact: list,
    image_score: Callable[[torch.Tensor], float],
    labels: list[int],
) -> tuple[float, float, float]:
    """Mean recall over the images, the worst rise of an image's maximum distance, and the image AUROC."""
    recall, rise, scores = [], [], []
    for query, truth in zip(queries, exact):
        found = search(query)
        recall.append(float(((found - truth).abs() < 1e-3).float().mean()))
        rise.append(float((found.max() - truth.max()) / truth.max()))
        scores.append(image_score(found))
    return float(np.mean(recall)), max(rise), image_auroc(labels, scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--category", required=True)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    detector = load_detector(args.model, runtime="torch")
    model = detector.model_
    samples = select_half(mvtec_samples(args.data, args.category, "test"), "validation")
    labels = [sample.label for sample in samples]
    queries = []
    with torch.inference_mode():
        for sample in samples:
            views = detector._views(read_image(sample.path))
            embeddings = model.embed(detector._to_tensor([view.pixels for view in views]))
            queries.append(embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1]))
    grid = (len(views), 1, *embeddings.shape[-2:])
    bank, norms = model.memory_bank, model.bank_norms
    exact = [nearest_distances(query, bank, norms) for query in queries]

    def image_score(distances: torch.Tensor) -> float:
        """The image's score as the model computes it from its patches' distances (views of one size)."""
        return float(detector.view_scores(model.smoother(distances.view(grid))).max())

    exact_auroc = image_auroc(labels, [image_score(distances) for distances in exact])

    def in_turn_with_exact(search: Callable[[], object]) -> tuple[float, float]:
        """Median ms of ``search`` and of the exact search of the same image, the two taking turns."""
        medians = medians_in_turn(
            {"search": search, "exact": lambda: nearest_distances(queries[0], bank, norms)}, args.repeats
        )
        return medians["search"], medians["exact"]

    cell_rows = []
    for cells in (16, 32, 64):
        for share in (0.125, 0.25, 0.5):
            index = CellIndex(bank, cells, share)
            ms, exact_ms = in_turn_with_exact(lambda index=index: index.search(queries[0]))
            recall, rise, auroc = compare(
                lambda query, index=index: index.search(query)[0], queries, exact, image_score, labels
            )
            unvouched = np.mean([float(index.search(query)[1].float().mean()) for query in queries])
            cell_rows.append([cells, share, f"{ms:.1f}", f"{exact_ms:.1f}", f"{recall:.3f}", f"{rise:.3f}"])
            cell_rows[-1] += [f"{auroc:.3f}", f"{unvouched:.3f}"]
            print(cell_rows[-1], flush=True)
    prefilter_rows = []
    for dims in (32, 48, 64):
        settings = [(None, 0, False), (512, 1, True), (1024, 1, True), (1024, 2, True)]
        for chunk, keep, rerank in settings:
            prefilter = PrefilterIndex(bank, dims, chunk or len(bank), keep or 1, rerank)
            ms, exact_ms = in_turn_with_exact(lambda prefilter=prefilter: prefilter.search(queries[0]))
            recall, rise, auroc = compare(prefilter.search, queries, exact, image_score, labels)
            how = f"{keep} per {chunk} rows, exact rerank" if rerank else "projected distances alone"
            prefilter_rows.append(
                [dims, how, f"{ms:.1f}", f"{exact_ms:.1f}", f"{recall:.3f}", f"{rise:.3f}", f"{auroc:.3f}"]
            )
            print(prefilter_rows[-1], flush=True)
    header = (
        f"`python bench/approximate_search.py --model {args.model} --data {args.data} --category {args.category}` "
        f"on {started} ({platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads). "
        f"Bank {bank.shape[0]} x {bank.shape[1]}; the validation half of the test images ({len(samples)}, "
        f"{sum(labels)} defective) at {queries[0].shape[0]} patches each; each setting timed in turn with the "
        f"exact search. Image AUROC with the exact search: {exact_auroc:.3f}."
    )
    shared = ["ms per image", "exact, ms in turn", "recall", "worst rise of the map's maximum", "image AUROC"]
    cell_table = markdown_table(
        ["cells", "share of bank per cell", *shared, "share the radius check cannot vouch for"], cell_rows
    )
    prefilter_table = markdown_table(["principal components", "candidates", *shared], prefilter_rows)
    text = "\n".join(
        [
            "# Approximate searches against the exact one",
            "",
            header,
            "",
            "## Inverted file (BLAS per cell)",
            "",
            *cell_table,
            "",
            "## Prefilter on principal components, exact rerank",
            "",
            *prefilter_table,
            "",
        ]
    )
    publish(text, md_path=args.md)


if __name__ == "__main__":
    main()
