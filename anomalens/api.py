"""The Python API behind the CLI and the service: fit a detector on normal images, inspect images.

Each function takes and returns plain objects; the CLI only parses arguments and prints.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from anomalens.data import (
    NoImagesError,
    collect_images,
    folder_samples,
    iter_images,
    mvtec_samples,
    read_image,
    read_mask,
)
from anomalens.data.datasets import Sample
from anomalens.explanation import explain
from anomalens.learning import DEFAULT_MAX_MARK_RATIO, DEFAULT_MAX_THRESHOLD_RISE, LearnReport, QueuedImage
from anomalens.models import CHANGING_RUNTIME, BaseDetector, create_detector, load_detector
from anomalens.models.efficientad.detector import FINE_TUNE_SECONDS, FINE_TUNE_STEPS
from anomalens.models.versions import ModelVersions
from anomalens.postprocessing.findings import extract_findings
from anomalens.progress import track
from anomalens.results.record import Classification, ExplanationRecord, InspectionRecord
from anomalens.results.run import InspectionRun, path_of, pending
from anomalens.results.run_directory import RunDirectory
from anomalens.types import Prediction

OnError = Literal["skip", "raise"]


@dataclass
class FitReport:
    n_images: int
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)


def training_paths(
    data_root: str | Path, category: str | None = None, shots: int | None = None, seed: int = 0
) -> list[Path]:
    """Normal training images: ``root/category/train/good`` (MVTec layout) or a plain folder when no category.

    With ``shots`` a reproducible random subset of that size is drawn (few-shot fitting).
    """
    samples = mvtec_samples(data_root, category, "train") if category else folder_samples(data_root)
    paths = [s.path for s in samples]
    if not paths:
        raise NoImagesError.looked_in(_training_folders(data_root, category), recursive=False)
    if shots is not None:
        if shots < 1:
            raise ValueError("--shots must be at least 1")
        paths = sorted(random.Random(seed).sample(paths, min(shots, len(paths))))
    return paths


def _training_folders(data_root: str | Path, category: str | None) -> list[Path]:
    """The folders :func:`training_paths` reads, flat: searched deeper, a category folder given without
    ``--category`` would teach its defect images as normal."""
    if not category:
        return [Path(data_root)]
    train = Path(data_root, category, "train")
    return sorted(p for p in train.iterdir() if p.is_dir() and not p.name.startswith(".")) or [train]


def fit_detector(detector: BaseDetector, paths: Sequence[Path], on_error: OnError = "skip") -> FitReport:
    """Fit on the readable images among ``paths``; unreadable ones are reported, not fatal (unless asked)."""
    skipped: list[tuple[str, str]] = []
    start = time.perf_counter()
    # a generator, so that only network-sized views of the images are held in memory during the fit
    detector.fit(image for _, image in iter_images(paths, on_error=on_error, errors=skipped))
    return FitReport(len(paths) - len(skipped), time.perf_counter() - start, [(str(p), m) for p, m in skipped])


def fit(
    data_root: str | Path,
    category: str | None = None,
    model: str = "patchcore",
    shots: int | None = None,
    on_error: OnError = "skip",
    **params: Any,
) -> tuple[BaseDetector, FitReport]:
    detector = create_detector(model, **params)
    paths = training_paths(data_root, category, shots, seed=params.get("seed", 0))
    return detector, fit_detector(detector, paths, on_error)


def inspection_record(
    path: str | Path, image: np.ndarray, prediction: Prediction, milliseconds: float, taxonomy: Any = None
) -> InspectionRecord:
    """The record of one image (see :func:`inspect`) with its offline explanation, without output file names.

    With ``taxonomy`` every region is classified from its own connected component of the prediction mask.
    """
    findings = extract_findings(prediction, image)
    record = InspectionRecord.of(path, prediction, findings, milliseconds, ExplanationRecord(text="", source="offline"))
    if taxonomy is not None and findings.regions:
        from anomalens.explanation.taxonomy import region_masks

        for index, region_mask in region_masks(prediction, findings):
            label, confidence, _ = taxonomy.classify(image, region_mask)
            record.regions[index].defect_type, record.regions[index].type_confidence = label, round(confidence, 4)
    record.explanation.text = explain(record)
    return record


def classify(
    taxonomy: Any, images: Sequence[str | Path], mask: str | Path | None = None, detector: BaseDetector | None = None
) -> list[Classification]:
    """The taxonomy's type of every region: with ``detector``, each region of each image's findings (an image it
    finds normal gets one row without a type); else the region ``mask`` (one image) or the whole image."""
    from anomalens.explanation.taxonomy import region_masks

    rows: list[Classification] = []
    for path in images:
        image = read_image(path)
        if detector is None:
            region_mask = read_mask(mask, image.shape[:2]) if mask is not None else None
            rows.append(_classified(taxonomy, path, image, region_mask, "mask" if mask is not None else "whole"))
            continue
        prediction = detector.predict(image)
        findings = extract_findings(prediction, image)
        if not findings.regions:
            rows.append(
                Classification(image=str(path), region=None, defect_type=None, type_confidence=None, verdict="normal")
            )
        for index, region_mask in region_masks(prediction, findings):
            row = _classified(taxonomy, path, image, region_mask, index)
            row.bbox = [int(v) for v in findings.regions[index].box]
            rows.append(row)
    return rows


def _classified(
    taxonomy: Any, path: str | Path, image: np.ndarray, region_mask: np.ndarray | None, region: int | str
) -> Classification:
    label, confidence, distances = taxonomy.classify(image, region_mask)
    return Classification(
        image=str(path),
        region=region,
        defect_type=label,
        type_confidence=round(confidence, 4),
        distances={name: round(value, 4) for name, value in distances.items()},
    )


def inspect(
    detector: BaseDetector,
    inputs: Sequence[str | Path] | Sequence[Sample],
    out_dir: str | Path | None,
    on_error: OnError = "skip",
    progress: bool = False,
    taxonomy: Any = None,
    resume: bool = False,
) -> InspectionRun:
    """Predict every image; write overlay and mask PNGs and results incrementally to ``out_dir``.

    ``inputs`` are samples, or files and folders (searched with their sub-folders, see
    :func:`~anomalens.data.collect_images`); inputs that yield no image raise
    :class:`~anomalens.data.NoImagesError`.

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
    # a rerun must not inspect the overlays and masks of an output folder inside an input folder
    skip = [out_dir] if out_dir is not None else []
    items = list(inputs) if inputs and isinstance(inputs[0], Sample) else collect_images(inputs, skip=skip)
    directory = RunDirectory(out_dir) if out_dir is not None else None
    results: list[InspectionRecord] = []
    if directory is not None:  # an unfitted detector cannot resume: it fails at its first predict
        results = directory.begin(detector.thresholds_ if resume else None)
    todo = pending(items, results)
    stem_of = {id(item): stem for item, stem in todo}
    failures: list[tuple[Any, str]] = []
    start = time.perf_counter()
    images = iter_images([item for item, _ in todo], on_error=on_error, errors=failures)
    for item, image in track(images, "inspecting", total=len(todo), enabled=progress):
        tic = time.perf_counter()
        prediction = detector.predict(image)
        record = inspection_record(path_of(item), image, prediction, 1000 * (time.perf_counter() - tic), taxonomy)
        if directory is not None:
            directory.write_images(record, stem_of[id(item)], image, prediction)
            directory.append(record)
        results.append(record)
    errors = [{"path": str(path_of(p)), "error": m} for p, m in failures]
    run = InspectionRun.in_input_order(
        results, errors, items, time.perf_counter() - start, detector.runtime if todo else None
    )
    if directory is not None:
        directory.finish(run)
    return run


def learn(
    model_dir: str | Path,
    images: Sequence[str | Path],
    by: str,
    force: bool = False,
    max_mark_ratio: float = DEFAULT_MAX_MARK_RATIO,
    max_threshold_rise: float = DEFAULT_MAX_THRESHOLD_RISE,
) -> LearnReport:
    """Teach the model in ``model_dir`` that ``images`` (files or folders) are normal, and save the result as a
    new version (cause "learn") when anything was learned (see :mod:`anomalens.learning.learn` for the guards).

    A model that learns by training (EfficientAD) queues them instead, in its fine-tuning queue
    (``report.queued``); :func:`apply_fine_tuning` teaches it the queue."""
    from anomalens.learning import learn_normal_images
    from anomalens.learning.finetune import FineTuneQueue, FineTuner, queue_normal_images

    detector = load_detector(model_dir, runtime=CHANGING_RUNTIME)
    named = [(Path(path).name, read_image(path)) for path in collect_images(images)]
    if isinstance(detector, FineTuner):
        version = ModelVersions(model_dir).current
        return queue_normal_images(detector, FineTuneQueue(model_dir), named, by, version, force, max_mark_ratio)
    report = learn_normal_images(detector, named, by, force, max_mark_ratio, max_threshold_rise)
    return save_change(model_dir, detector, report, by)


def apply_fine_tuning(
    model_dir: str | Path,
    normals_folder: str | Path,
    by: str,
    steps: int = FINE_TUNE_STEPS,
    seconds: float = FINE_TUNE_SECONDS,
) -> LearnReport:
    """Teach the model in ``model_dir`` its fine-tuning queue: train it further on the normal images in
    ``normals_folder`` (its training folder, say; read as :func:`training_paths` reads it) plus the queued ones,
    for at most ``steps`` steps or ``seconds``, and recalibrate its thresholds as the fit does. Saved as a new
    version (cause "learn"), in which each queued image is a mark; the applied entries then leave the queue."""
    from anomalens.learning.finetune import FineTuneQueue
    from anomalens.learning.finetune import apply_fine_tuning as fine_tune

    detector = load_detector(model_dir, runtime=CHANGING_RUNTIME)
    queue = FineTuneQueue(model_dir)
    queued = queue.images()
    normal_images = (image for _, image in iter_images(training_paths(normals_folder)))
    report = save_change(model_dir, detector, fine_tune(detector, queued, normal_images, steps, seconds), by)
    queue.drop(entry.entry for entry, _ in queued)
    return report


def drop_queued(model_dir: str | Path, entries: Sequence[int]) -> list[QueuedImage]:
    """Take entries out of the fine-tuning queue of the model in ``model_dir``; returns them."""
    from anomalens.learning.finetune import FineTuneQueue

    return FineTuneQueue(model_dir).drop(entries)


def forget(model_dir: str | Path, marks: Sequence[int], by: str, **guards: float) -> LearnReport:
    """Undo learned marks of the model in ``model_dir``, saved as a new version (cause "undo")."""
    from anomalens.learning import forget_marks

    detector = load_detector(model_dir, runtime=CHANGING_RUNTIME)
    return save_change(model_dir, detector, forget_marks(detector, marks, **guards), by)


def save_change(model_dir: str | Path, detector: BaseDetector, report: LearnReport, by: str) -> LearnReport:
    """Save ``detector``, changed as ``report`` says, as a new version of the model in ``model_dir`` (cause
    "learn" or "undo", the marks in its note) and put the version in ``report``; nothing is saved when nothing
    changed."""
    if report.learned:
        ids = ", ".join(str(mark.mark) for mark in report.learned)
        cause, note = "learn", f"learned {len(report.learned)} image(s) as normal (marks {ids})"
    elif report.forgotten:
        cause, note = "undo", f"undid marks {', '.join(str(mark) for mark in report.forgotten)}"
    else:
        return report
    report.version = ModelVersions(model_dir).add(detector, cause, by, note).version
    return report
