"""The folder a batch run writes, the same for every engine.

Per image ``<stem>_overlay.png`` and ``<stem>_mask.png``; ``results.jsonl`` gains one record per image as soon
as it is done, so a stopped run keeps what it finished and a rerun into the folder can resume from it; at the end
``results.json`` holds every record in input order and ``summary.json`` the counts and the unreadable inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from anomalens.data import to_uint8_rgb, write_png
from anomalens.reports.visualize import mask_png, overlay
from anomalens.results.record import InspectionRecord
from anomalens.results.run import InspectionRun
from anomalens.types import Prediction, Thresholds

RESULTS_LINES = "results.jsonl"
RESULTS = "results.json"
SUMMARY = "summary.json"


class RunDirectory:
    """Writes one run's outputs into ``root`` (created when needed)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def begin(self, resume_with: Thresholds | None = None) -> list[InspectionRecord]:
        """Start ``results.jsonl`` afresh; with ``resume_with``, keep the records a stopped run of a model with
        these thresholds left there and return them (the images they name need not be done again).

        A line cut short by the stop is dropped (its image is simply done again); records of another model are
        not mixed into this one's results.
        """
        kept = self._finished(resume_with) if resume_with is not None else []
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / RESULTS_LINES).write_text("".join(json.dumps(record.to_dict()) + "\n" for record in kept))
        return kept

    def _finished(self, thresholds: Thresholds) -> list[InspectionRecord]:
        path = self.root / RESULTS_LINES
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(InspectionRecord.model_validate_json(line))
            except ValidationError:
                continue
        same_model = all(
            record.image_threshold == round(thresholds.image, 6)
            and record.pixel_threshold == round(thresholds.pixel, 6)
            for record in records
        )
        return records if same_model else []

    def write_images(self, record: InspectionRecord, stem: str, image: np.ndarray, prediction: Prediction) -> None:
        """Write the image's overlay and mask PNGs and name them in ``record``."""
        record.overlay, record.mask = f"{stem}_overlay.png", f"{stem}_mask.png"
        write_png(self.root / record.overlay, overlay(to_uint8_rgb(image), prediction))
        write_png(self.root / record.mask, mask_png(prediction))

    def append(self, record: InspectionRecord) -> None:
        """Add a finished record to ``results.jsonl`` at once."""
        with open(self.root / RESULTS_LINES, "a") as lines:
            lines.write(json.dumps(record.to_dict()) + "\n")

    def finish(self, run: InspectionRun) -> None:
        """``results.json`` (every record) and ``summary.json`` (counts and unreadable files)."""
        (self.root / RESULTS).write_text(json.dumps([record.to_dict() for record in run.results], indent=2))
        (self.root / SUMMARY).write_text(json.dumps(run.summary(), indent=2))
