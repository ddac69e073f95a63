"""The Ray engine: batch inference with Ray Data, one Ray task per category for fit-many.

Workers load the model from its directory (config.json + safetensors), never a pickled network, so a replica
can start on any node that sees the model directory; for the same reason the output folder must be shared by
the nodes (each replica writes its overlays and masks there; the driver alone writes ``results.jsonl``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data

from anomalens import api
from anomalens.data import ImageReadError, collect_images, read_image
from anomalens.engine.common import FitManyLog, FitManyRun, fit_category
from anomalens.models import DEFAULT_RUNTIME, load_detector
from anomalens.models.base import read_config
from anomalens.progress import track
from anomalens.results.record import InspectionRecord
from anomalens.results.run import InspectionRun, pending
from anomalens.results.run_directory import RunDirectory
from anomalens.types import Prediction, Thresholds

# Crashed workers and lost nodes are retried by Ray itself; these are the retries of errors raised by our code.
BATCH_RETRIES = 2
# fit-many: storage that hiccups (a network file system, a disk freed meanwhile) is worth another try
TRANSIENT_ERRORS = [OSError]
TASK_RETRIES = 2
GPU_BATCH_SIZE = 16


@contextmanager
def ray_cluster(address: str | None, workers: int | None) -> Iterator[None]:
    """Use the Ray connection already open, else join ``address``, else start a local cluster of ``workers`` CPUs.

    Only a connection opened here is closed here.
    """
    if ray.is_initialized():
        yield
        return
    ray.init(
        address=address,
        num_cpus=workers if address is None else None,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


class ImagePredictor:
    """A Ray Data actor: loads the model once, then predicts batches of image paths and writes their images."""

    def __init__(self, model_dir: str, out_dir: str | None, device: str | None, runtime: str = DEFAULT_RUNTIME):
        self.detector = load_detector(model_dir, device, runtime)
        self.directory = RunDirectory(out_dir) if out_dir is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        """Rows of ``path`` (as the user gave it), ``file`` (absolute) and ``stem`` in; out ``path``, ``record``
        (its JSON, or ""), ``error`` (why there is no record, or "") and ``runtime`` (the detector's).

        An image that cannot be read or predicted fails alone; an error escaping here (say, the output folder
        not writable) fails the batch, which Ray Data retries.
        """
        records, errors = {}, {}
        readable = []
        for path, file, stem in zip(batch["path"], batch["file"], batch["stem"]):
            try:
                readable.append((path, stem, read_image(file)))
            except ImageReadError as error:
                errors[path] = str(ImageReadError(path, error.reason))
        tic = time.perf_counter()
        predictions = self._predictions([image for _, _, image in readable])
        milliseconds = 1000 * (time.perf_counter() - tic) / max(1, len(readable))
        for (path, stem, image), prediction in zip(readable, predictions):
            if isinstance(prediction, str):
                errors[path] = f"cannot inspect image '{path}': {prediction}"
                continue
            record = api.inspection_record(path, image, prediction, milliseconds)
            if self.directory is not None:
                self.directory.write_images(record, stem, image, prediction)
            records[path] = json.dumps(record.to_dict())
        return {
            "path": list(batch["path"]),
            "record": [records.get(p, "") for p in batch["path"]],
            "error": [errors.get(p, "") for p in batch["path"]],
            "runtime": [self.detector.runtime] * len(batch["path"]),
        }

    def _predictions(self, images: list[np.ndarray]) -> list[Prediction | str]:
        """All images through the network together; should that fail, one by one, so a bad image costs only
        itself (its entry is then the error message)."""
        if not images:
            return []
        try:
            return list(self.detector.predict_batch(images))
        except Exception:
            return [self._predict_one(image) for image in images]

    def _predict_one(self, image: np.ndarray) -> Prediction | str:
        try:
            return self.detector.predict(image)
        except Exception as error:
            return f"{type(error).__name__}: {error}"


def _replicas(device: str | None, model_dir: str | Path, workers: int | None) -> tuple[int, dict[str, float]]:
    """How many model replicas, and what each asks Ray for: a CPU each (by default one replica per CPU of the
    cluster), or, for a model to run on CUDA (``auto``: when the cluster has GPUs), a share of the GPUs (by
    default one replica per GPU)."""
    name = device or read_config(model_dir)["params"].get("device", "auto")
    cluster = ray.cluster_resources()
    gpus = cluster.get("GPU", 0)
    if gpus > 0 if name == "auto" else name.startswith("cuda"):
        count = workers or max(1, int(gpus))
        return count, {"num_gpus": min(1.0, gpus / count)}
    return workers or max(1, int(cluster.get("CPU", 1))), {"num_cpus": 1.0}


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
    items = collect_images(inputs, skip=[out_dir] if out_dir is not None else [])  # as api.inspect
    directory = RunDirectory(out_dir) if out_dir is not None else None
    results: list[InspectionRecord] = []
    if directory is not None:
        results = directory.begin(Thresholds.from_dict(read_config(model_dir)["thresholds"]))
    todo = [
        {"path": str(path), "file": str(Path(path).resolve()), "stem": stem} for path, stem in pending(items, results)
    ]
    errors: list[dict[str, str]] = []
    runtimes: set[str] = set()
    start = time.perf_counter()
    if todo:
        with ray_cluster(address, workers):
            rows = _predicted_rows(model_dir, out_dir, todo, workers, device, runtime, batch_size, on_error == "raise")
            answered = set()
            for row in track(rows, "inspecting", total=len(todo), enabled=progress):
                answered.add(row["path"])
                runtimes.add(row["runtime"])
                if row["error"]:
                    if on_error == "raise":
                        raise RuntimeError(row["error"])
                    errors.append({"path": row["path"], "error": row["error"]})
                    continue
                record = InspectionRecord.model_validate_json(row["record"])
                if directory is not None:
                    directory.append(record)
                results.append(record)
        errors += [
            {"path": row["path"], "error": f"its batch failed {1 + BATCH_RETRIES} times; see the Ray logs"}
            for row in todo
            if row["path"] not in answered
        ]
    # every replica chooses alike, unless one could not use ONNX Runtime (it says why in its log)
    runtime = ", ".join(sorted(runtimes)) or None
    run = InspectionRun.in_input_order(results, errors, items, time.perf_counter() - start, runtime)
    if directory is not None:
        directory.finish(run)
    return run


def _predicted_rows(
    model_dir: str | Path,
    out_dir: str | Path | None,
    todo: list[dict[str, str]],
    workers: int | None,
    device: str | None,
    runtime: str,
    batch_size: int | None,
    stop_on_error: bool,
) -> Iterator[dict[str, str]]:
    """One row per image of ``todo`` that was answered, in completion order."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver draws one bar of its own, over images
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # its warning: "bars disabled"
    context.retried_map_errors = True  # what escapes ImagePredictor is the batch's, not one image's
    context.max_map_retries = BATCH_RETRIES
    context.max_errored_blocks = 0 if stop_on_error else len(todo)  # a batch that keeps failing: go on
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset plans and timings: not for users
    replicas, resources = _replicas(device, model_dir, workers)
    # On a CPU, batches of images measured no faster than one image at a time, and one at a time gives the
    # local engine's results to the bit (a batch changes the float rounding); a GPU wants full batches.
    batch_size = batch_size or (GPU_BATCH_SIZE if "num_gpus" in resources else 1)
    batches = -(-len(todo) // batch_size)
    predicted = ray.data.from_items(todo, override_num_blocks=batches).map_batches(
        ImagePredictor,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=min(replicas, batches)),
        batch_format="numpy",
        fn_constructor_kwargs={
            "model_dir": str(Path(model_dir).resolve()),
            "out_dir": None if out_dir is None else str(Path(out_dir).resolve()),
            "device": device,
            "runtime": runtime,
        },
        **resources,
    )
    yield from predicted.iter_rows()


@ray.remote
def _fit_category_task(
    data_root: str,
    category: str,
    out_root: str,
    model: str,
    shots: int | None,
    on_error: api.OnError,
    params: dict[str, Any],
) -> dict[str, Any]:
    return fit_category(data_root, category, out_root, model, shots, on_error, params)


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
    if log.pending:
        with ray_cluster(address, workers):
            fit = _fit_category_task.options(num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=TRANSIENT_ERRORS)
            running = {
                fit.remote(
                    str(Path(data_root).resolve()),
                    category,
                    str(Path(out_root).resolve()),
                    model,
                    shots,
                    on_error,
                    params,
                ): category
                for category in log.pending
            }
            for _ in track(range(len(running)), "fitting categories", enabled=progress):
                (ready,), _ = ray.wait(list(running), num_returns=1)
                category = running.pop(ready)
                try:
                    log.fitted(ray.get(ready))
                except ray.exceptions.RayError as error:  # after the retries: report it, the others go on
                    log.failed(category, _task_error_message(error))
    return log.finish(time.perf_counter() - start)


def _task_error_message(error: ray.exceptions.RayError) -> str:
    cause = getattr(error, "cause", None)
    return f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(error).__name__}: {error}"
