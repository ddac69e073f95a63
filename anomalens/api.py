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

from anomalens.data import collect_images, folder_samples, iter_images, mvtec_samples, to_uint8_rgb
from anomalens.data.datasets import Sample
from anomalens.explanation import explain
from anomalens.models import BaseDetector, create_detector
from anomalens.postprocessing.findings import extract_findings
from anomalens.progress import track
from anomalens.reports.visualize import mask_png, overlay, write_png

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


def inspect(detector: BaseDetector, inputs: Sequence[str | Path] | Sequence[Sample], out_dir: str | Path | None,
            on_error: OnError = "skip", progress: bool = False, taxonomy: Any = None) -> InspectionRun:
    """Predict every image; write overlay and mask PNGs and results incrementally to ``out_dir``.

    ``results.jsonl`` gains one line per image as soon as it is done, so a run that is stopped keeps what it
    finished. At the end ``results.json`` holds the list of per-image records (the result contract: ``image``,
    ``anomalous``, ``score``, ``regions`` with ``grid``/``bbox``/``area_fraction``/``severity``, and
    ``explanation`` with ``text`` and ``source``) and ``summary.json`` the counts and unreadable files.

    With ``taxonomy`` (an :class:`anomalens.explanation.taxonomy.Taxonomy`) every region also gets
    ``defect_type`` (a type of the taxonomy, or "unknown") and ``type_confidence`` (in [0, 1]), classified from
    the region's own connected component of the prediction mask.
    """
    paths = collect_images(inputs) if inputs and not isinstance(inputs[0], Sample) else list(inputs)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.jsonl").write_text("")
    results: list[dict[str, Any]] = []
    failures: list[tuple[Any, str]] = []
    used: set[str] = set()
    start = time.perf_counter()
    items = iter_images(paths, on_error=on_error, errors=failures)
    for item, image in track(items, "inspecting", total=len(paths), enabled=progress):
        path = item.path if isinstance(item, Sample) else Path(item)
        tic = time.perf_counter()
        prediction = detector.predict(image)
        findings = extract_findings(prediction, image)
        summary = findings.to_dict()
        record: dict[str, Any] = {"image": str(path), **prediction.to_dict(),
                                  "milliseconds": round(1000 * (time.perf_counter() - tic), 2),
                                  "region_count": summary["count"], "severity": summary["severity"],
                                  "regions": summary["regions"],
                                  "explanation": {"text": explain(findings), "source": "offline"}}
        if taxonomy is not None and findings.regions:
            from anomalens.explanation.taxonomy import region_masks

            for index, region_mask in region_masks(prediction, findings):
                label, confidence, _ = taxonomy.classify(image, region_mask)
                record["regions"][index].update(defect_type=label, type_confidence=round(confidence, 4))
        if out is not None:
            stem = _unique_stem(path, used)
            write_png(out / f"{stem}_overlay.png", overlay(to_uint8_rgb(image), prediction))
            write_png(out / f"{stem}_mask.png", mask_png(prediction))
            record.update(overlay=f"{stem}_overlay.png", mask=f"{stem}_mask.png")
            with open(out / "results.jsonl", "a") as lines:
                lines.write(json.dumps(record) + "\n")
        results.append(record)
    errors = [{"path": str(getattr(p, "path", p)), "error": m} for p, m in failures]
    run = InspectionRun(results, errors, time.perf_counter() - start)
    if out is not None:
        (out / "results.json").write_text(json.dumps(run.results, indent=2))
        (out / "summary.json").write_text(json.dumps({k: v for k, v in run.to_dict().items() if k != "results"},
                                                     indent=2))
    return run
