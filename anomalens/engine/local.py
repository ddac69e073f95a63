"""The default engine: everything in this process, through ``anomalens.api``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomalens import api
from anomalens.engine.common import FitManyLog, FitManyRun, fit_category
from anomalens.models import load_detector
from anomalens.progress import track
from anomalens.results.run import InspectionRun


def predict(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path | None,
    *,
    address: str | None,
    workers: int | None,
    device: str | None,
    runtime: str,
    batch_size: int | None,
    on_error: api.OnError,
    progress: bool,
    taxonomy: Any,
) -> InspectionRun:
    """``address``, ``workers`` and ``batch_size`` concern a cluster; here one process predicts image by image."""
    return api.inspect(
        load_detector(model_dir, device, runtime),
        inputs,
        out_dir,
        on_error,
        progress=progress,
        taxonomy=taxonomy,
        resume=True,
    )


def fit_many(
    data_root: str | Path,
    categories: Sequence[str],
    out_root: str | Path,
    *,
    address: str | None,
    workers: int | None,
    model: str,
    shots: int | None,
    on_error: api.OnError,
    progress: bool,
    params: dict[str, Any],
) -> FitManyRun:
    start = time.perf_counter()
    log = FitManyLog(out_root, list(categories))
    for category in track(log.pending, "fitting categories", enabled=progress):
        try:
            log.fitted(fit_category(data_root, category, out_root, model, shots, on_error, params))
        except Exception as error:  # one category's failure must not stop the others
            log.failed(category, f"{type(error).__name__}: {error}")
    return log.finish(time.perf_counter() - start)
