"""Where batch work runs: on this machine (the default) or on a Ray cluster, with the same results.

``predict`` inspects images with a saved model; ``fit_many`` fits one model per category. Both write their
output as they go and, rerun into the same output, skip what a stopped run already finished.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from anomalens import api
from anomalens.engine.common import FitManyRun
from anomalens.extras import requires_extra
from anomalens.models import DEFAULT_RUNTIME, load_detector
from anomalens.results.run import InspectionRun

Engine = Literal["local", "ray"]
# imported on use, so that the default local path never imports Ray
_MODULES = {"local": "anomalens.engine.local", "ray": "anomalens.engine.ray_engine"}
ENGINES: tuple[str, ...] = tuple(_MODULES)


def _engine(name: str) -> ModuleType:
    if name not in _MODULES:
        raise ValueError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")
    with requires_extra(f"the {name} engine (--engine {name})"):
        return importlib.import_module(_MODULES[name])


def predict(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path | None,
    engine: Engine = "local",
    *,
    address: str | None = None,
    workers: int | None = None,
    device: str | None = None,
    runtime: str = DEFAULT_RUNTIME,
    batch_size: int | None = None,
    on_error: api.OnError = "skip",
    progress: bool = False,
    taxonomy: Any = None,
) -> InspectionRun:
    """Inspect ``inputs`` with the model saved in ``model_dir``; outputs as :func:`anomalens.api.inspect`.

    ``engine="ray"`` runs on the Ray cluster at ``address`` (default: a new local one with ``workers`` CPUs),
    ``batch_size`` images through the network together (default: 1 on CPU, 16 on a GPU); ``device``
    overrides the model's own setting; ``runtime`` says what runs the network (see
    :func:`anomalens.models.load_detector`; ``run.runtime`` says what did).
    """
    if engine == "ray" and taxonomy is not None:
        raise ValueError("--taxonomy works with the local engine only")
    if engine == "ray" and runtime in ("auto", "onnx"):  # the graph exported once here, not by every replica
        load_detector(model_dir, device, runtime)
    return _engine(engine).predict(
        model_dir,
        inputs,
        out_dir,
        address=address,
        workers=workers,
        device=device,
        runtime=runtime,
        batch_size=batch_size,
        on_error=on_error,
        progress=progress,
        taxonomy=taxonomy,
    )


def fit_many(
    data_root: str | Path,
    categories: Sequence[str],
    out_root: str | Path,
    engine: Engine = "local",
    *,
    address: str | None = None,
    workers: int | None = None,
    model: str = "patchcore",
    shots: int | None = None,
    on_error: api.OnError = "skip",
    progress: bool = False,
    **params: Any,
) -> FitManyRun:
    """Fit one ``model`` per category of the MVTec-layout ``data_root``, saved to ``out_root/<category>``.

    A category that fails is reported in the result (and ``out_root/fit_many.json``) while the others go on;
    categories already saved in ``out_root`` are kept, not fitted again.
    """
    return _engine(engine).fit_many(
        data_root,
        categories,
        out_root,
        address=address,
        workers=workers,
        model=model,
        shots=shots,
        on_error=on_error,
        progress=progress,
        params=params,
    )


__all__ = ["ENGINES", "Engine", "FitManyRun", "fit_many", "predict"]
