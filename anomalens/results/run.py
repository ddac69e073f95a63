"""A batch of inspections: which output names each input gets, and the outcome in input order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalens.data.datasets import Sample
from anomalens.results.record import InspectionRecord

InputItem = str | Path | Sample


def path_of(item: InputItem) -> Path:
    return item.path if isinstance(item, Sample) else Path(item)


def output_stems(items: Sequence[InputItem]) -> list[str]:
    """File stem of each input's overlay and mask, unique within the run.

    Fixed by the input order alone, so a resumed run or a distributed one names every file as one run would.
    """
    used: set[str] = set()
    stems = []
    for item in items:
        stem, stem_of_path, n = path_of(item).stem, path_of(item).stem, 1
        while stem in used:
            n += 1
            stem = f"{stem_of_path}_{n}"
        used.add(stem)
        stems.append(stem)
    return stems


def pending(items: Sequence[InputItem], done: Iterable[InspectionRecord]) -> list[tuple[InputItem, str]]:
    """``(item, output stem)`` of every input not among the ``done`` records, in input order."""
    finished = {record.image for record in done}
    return [(item, stem) for item, stem in zip(items, output_stems(items)) if str(path_of(item)) not in finished]


@dataclass
class InspectionRun:
    """The records and the unreadable inputs (``path``, ``error``) of a batch, in input order, and the runtime
    that computed the maps (``onnx``, ``torch``, ``fp16``; ``None`` when nothing was predicted)."""

    results: list[InspectionRecord]
    errors: list[dict[str, str]]
    seconds: float
    runtime: str | None = None

    @classmethod
    def in_input_order(
        cls,
        results: list[InspectionRecord],
        errors: list[dict[str, str]],
        items: Sequence[InputItem],
        seconds: float,
        runtime: str | None = None,
    ) -> InspectionRun:
        """The run with ``results`` and ``errors``, gathered in any order, sorted as their images are in ``items``."""
        position: dict[str, int] = {}
        for index, item in enumerate(items):
            position.setdefault(str(path_of(item)), index)
        last = len(position)
        return cls(
            sorted(results, key=lambda record: position.get(record.image, last)),
            sorted(errors, key=lambda error: position.get(error["path"], last)),
            seconds,
            runtime,
        )

    @property
    def n_anomalous(self) -> int:
        return sum(record.anomalous for record in self.results)

    def summary(self) -> dict[str, Any]:
        """Counts, time, runtime and unreadable inputs (``summary.json``)."""
        return {
            "summary": {
                "n_images": len(self.results),
                "n_anomalous": self.n_anomalous,
                "n_errors": len(self.errors),
                "seconds": round(self.seconds, 3),
                "runtime": self.runtime,
            },
            "errors": self.errors,
        }

    def to_dict(self) -> dict[str, Any]:
        summary = self.summary()
        return {
            "summary": summary["summary"],
            "results": [record.to_dict() for record in self.results],
            "errors": self.errors,
        }
