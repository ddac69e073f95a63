"""The Python API behind the CLI and the service: fit a detector on normal images, inspect images.

Each function takes and returns plain objects; the CLI only parses arguments and prints.
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from anomalens.data import collect_images, folder_samples, iter_images, mvtec_samples, to_uint8_rgb, write_png
from anomalens.data.datasets import Sample
from anomalens.explanation import explain
from anomalens.models import BaseDetector, create_detector
from anomalens.postprocessing.findings import extract_findings
from anomalens.progress import track
from anomalens.reports.visualize import mask_png, overlay
from anomalens.types import Prediction, Thresholds

OnError = Literal["skip", "raise"]


@dataclass
class FitReport:
    n_images: int
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)


def training_paths(data_root: str | Path, category: str | None = None, shots: int | None = None,
                   seed: int = 0) -> list[Path]:
    """Normal training images: ``root/category/train/good`` (MVTec layout) or a plain folder when no category.

    With ``shots`` a reproducible random subset of that size is drawn (few-shot fitting).
    """
    samples = mvtec_samples(data_root, category, "train") if category else folder_samples(data_root)
    paths = [s.path for s in samples]
    if not paths:
        raise FileNotFoundError(f"no training images found under {data_root}")
    if shots is not None:
        if shots < 1:
            raise ValueError("--shots must be at least 1")
        paths = sorted(random.Random(seed).sample(paths, min(shots, len(paths))))
    return paths


def fit_detector(detector: BaseDetector, paths: Sequence[Path], on_error: OnError = "skip") -> FitReport:
    """Fit on the readable images among ``paths``; unreadable ones are reported, not fatal (unless asked)."""
    skipped: list[tuple[str, str]] = []
    start = time.perf_counter()
    # a generator, so that only network-sized views of the images are held in memory during the fit
    detector.fit(image for _, image in iter_images(paths, on_error=on_error, errors=skipped))
    return FitReport(len(paths) - len(skipped), time.perf_counter() - start, [(str(p), m) for p, m in skipped])


def fit(data_root: str | Path, category: str | None = None, model: str = "patchcore", shots: int | None = None,
        on_error: OnError = "skip", **params: Any) -> tuple[BaseDetector, FitReport]:
    detector = create_detector(model, **params)
    paths = training_paths(data_root, category, shots, seed=params.get("seed", 0))
    return detector, fit_detector(detector, paths, on_error)


@dataclass
class InspectionRun:
    results: list[dict[str, Any]]
    errors: list[dict[str, str]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        n_anomalous = sum(r["anomalous"] for r in self.results)
        return {"summary": {"n_images": len(self.results), "n_anomalous": n_anomalous,
                            "n_errors": len(self.errors), "seconds": round(self.seconds, 3)},
                "results": self.results, "errors": self.errors}


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}_{n}"
    used.add(stem)
    return stem


def _path_of(item: str | Path | Sample) -> Path:
    return item.path if isinstance(item, Sample) else Path(item)


def output_stems(items: Sequence[str | Path] | Sequence[Sample]) -> list[str]:
    """File stem of each input's overlay and mask, unique within the run.

    Fixed by the input order alone, so a resumed run or a distributed one names every file as one run would.
    """
    used: set[str] = set()
    return [_unique_stem(_path_of(item), used) for item in items]


def inspection_record(path: Path, image: np.ndarray, prediction: Prediction, milliseconds: float,
                      taxonomy: Any = None) -> dict[str, Any]:
    """The result record of one image (see :func:`inspect`), without the names of its output files."""
    findings = extract_findings(prediction, image)
    summary = findings.to_dict()
    if taxonomy is not None and findings.regions:
        from anomalens.explanation.taxonomy import region_masks

        for index, region_mask in region_masks(prediction, findings):
            label, confidence, _ = taxonomy.classify(image, region_mask)
            summary["regions"][index].update(defect_type=label, type_confidence=round(confidence, 4))
    return {"image": str(path), **prediction.to_dict(), "milliseconds": round(milliseconds, 2),
            "region_count": summary["count"], "severity": summary["severity"], "regions": summary["regions"],
            "explanation": {"text": explain(summary), "source": "offline"}}


def write_image_outputs(out: Path, stem: str, image: np.ndarray, prediction: Prediction) -> dict[str, str]:
    """Write ``<stem>_overlay.png`` and ``<stem>_mask.png``; return the record fields naming them."""
    write_png(out / f"{stem}_overlay.png", overlay(to_uint8_rgb(image), prediction))
    write_png(out / f"{stem}_mask.png", mask_png(prediction))
    return {"overlay": f"{stem}_overlay.png", "mask": f"{stem}_mask.png"}


def finished_records(out: Path, thresholds: Thresholds) -> list[dict[str, Any]]:
    """Records a stopped run left in ``out/results.jsonl``, if that run used a model with these thresholds.

    A line cut short by the stop is dropped (its image is simply done again); records of another model are
    not mixed into this one's results.
    """
    path = out / "results.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    same_model = all(r.get("image_threshold") == round(thresholds.image, 6)
                     and r.get("pixel_threshold") == round(thresholds.pixel, 6) for r in records)
    return records if same_model else []


def start_results_lines(out: Path, records: Sequence[dict[str, Any]]) -> None:
    """Begin ``out/results.jsonl`` afresh, holding only ``records`` (those kept from a stopped run)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def append_result_line(out: Path, record: dict[str, Any]) -> None:
    with open(out / "results.jsonl", "a") as lines:
        lines.write(json.dumps(record) + "\n")


def in_input_order(entries: list[dict[str, Any]], items: Sequence[str | Path] | Sequence[Sample],
                   key: str = "image") -> list[dict[str, Any]]:
    """``entries`` (records, or errors with ``key="path"``) sorted as their images are in ``items``."""
    position: dict[str, int] = {}
    for index, item in enumerate(items):
        position.setdefault(str(_path_of(item)), index)
    return sorted(entries, key=lambda entry: position.get(entry[key], len(position)))


def write_run_files(out: Path, run: InspectionRun) -> None:
    """``results.json`` (every record) and ``summary.json`` (counts and unreadable files) at the end of a run."""
    (out / "results.json").write_text(json.dumps(run.results, indent=2))
    (out / "summary.json").write_text(json.dumps({k: v for k, v in run.to_dict().items() if k != "results"},
                                                 indent=2))


def inspect(detector: BaseDetector, inputs: Sequence[str | Path] | Sequence[Sample], out_dir: str | Path | None,
            on_error: OnError = "skip", progress: bool = False, taxonomy: Any = None,
            resume: bool = False) -> InspectionRun:
    """Predict every image; write overlay and mask PNGs and results incrementally to ``out_dir``.

    ``results.jsonl`` gains one line per image as soon as it is done, so a run that is stopped keeps what it
    finished; with ``resume`` a rerun into the same ``out_dir`` keeps those records and predicts only the other
    images. At the end ``results.json`` holds the list of per-image records in input order (the result
    contract: ``image``, ``anomalous``, ``score``, ``regions`` with ``grid``/``bbox``/``area_fraction``/
    ``severity``, and ``explanation`` with ``text`` and ``source``) and ``summary.json`` the counts and
    unreadable files.

    With ``taxonomy`` (an :class:`anomalens.explanation.taxonomy.Taxonomy`) every region also gets
    ``defect_type`` (a type of the taxonomy, or "unknown") and ``type_confidence`` (in [0, 1]), classified from
    the region's own connected component of the prediction mask.
    """
    items = collect_images(inputs) if inputs and not isinstance(inputs[0], Sample) else list(inputs)
    out = Path(out_dir) if out_dir is not None else None
    results: list[dict[str, Any]] = []
    if out is not None:
        if resume and detector.thresholds_ is not None:  # an unfitted detector fails at its first predict
            results = finished_records(out, detector.thresholds_)
        start_results_lines(out, results)
    done = {r["image"] for r in results}
    todo = [(item, stem) for item, stem in zip(items, output_stems(items)) if str(_path_of(item)) not in done]
    stem_of = {id(item): stem for item, stem in todo}
    failures: list[tuple[Any, str]] = []
    start = time.perf_counter()
    images = iter_images([item for item, _ in todo], on_error=on_error, errors=failures)
    for item, image in track(images, "inspecting", total=len(todo), enabled=progress):
        tic = time.perf_counter()
        prediction = detector.predict(image)
        record = inspection_record(_path_of(item), image, prediction, 1000 * (time.perf_counter() - tic), taxonomy)
        if out is not None:
            record.update(write_image_outputs(out, stem_of[id(item)], image, prediction))
            append_result_line(out, record)
        results.append(record)
    errors = [{"path": str(_path_of(p)), "error": m} for p, m in failures]
    run = InspectionRun(in_input_order(results, items), errors, time.perf_counter() - start)
    if out is not None:
        write_run_files(out, run)
    return run
