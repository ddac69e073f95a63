"""What both engines share: fitting and saving one category, the fit-many log."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anomalens import api
from anomalens.models.base import CONFIG_FILE

FIT_LOG = "fit_many.jsonl"
FIT_SUMMARY = "fit_many.json"


def fit_category(
    data_root: str | Path,
    category: str,
    out_root: str | Path,
    model: str,
    shots: int | None,
    on_error: api.OnError,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Fit one category with :func:`anomalens.api.fit` and save it to ``out_root/category``; a plain-data report."""
    detector, report = api.fit(data_root, category, model, shots, on_error, **params)
    assert detector.thresholds_ is not None
    final = Path(out_root) / category
    partial = Path(out_root) / f".{category}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    detector.save(partial)
    # a model appears under its name only whole, so a stopped run never leaves one that looks finished
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return {
        "category": category,
        "model_dir": str(final),
        "n_images": report.n_images,
        "seconds": round(report.seconds, 3),
        "image_threshold": round(detector.thresholds_.image, 6),
        "skipped": [{"path": path, "error": message} for path, message in report.skipped],
    }


def is_fitted(out_root: str | Path, category: str) -> bool:
    return (Path(out_root) / category / CONFIG_FILE).is_file()


@dataclass
class FitManyRun:
    """Outcome of ``fit_many``: one report per category fitted now, the failures, the categories kept."""

    fitted: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    already_fitted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FitManyLog:
    """Collects category outcomes as they arrive and appends each to ``out_root/fit_many.jsonl`` at once."""

    def __init__(self, out_root: str | Path, categories: list[str]):
        self.out_root = Path(out_root)
        self.out_root.mkdir(parents=True, exist_ok=True)
        self.run = FitManyRun(already_fitted=[c for c in categories if is_fitted(out_root, c)])
        self.pending = [c for c in dict.fromkeys(categories) if c not in self.run.already_fitted]

    def fitted(self, report: dict[str, Any]) -> None:
        self.run.fitted.append(report)
        self._append({"status": "fitted", **report})

    def failed(self, category: str, error: str) -> None:
        self.run.failed.append({"category": category, "error": error})
        self._append({"status": "failed", "category": category, "error": error})

    def finish(self, seconds: float) -> FitManyRun:
        self.run.seconds = round(seconds, 3)
        (self.out_root / FIT_SUMMARY).write_text(json.dumps(self.run.to_dict(), indent=2))
        return self.run

    def _append(self, entry: dict[str, Any]) -> None:
        with open(self.out_root / FIT_LOG, "a") as lines:
            lines.write(json.dumps(entry) + "\n")
