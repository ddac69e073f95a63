"""Uploaded bytes -> a result record and its PNG images, through ``anomalens.api.inspection_record``.

The detector is loaded once and read by inspections; they are serialised by a lock, because one PatchCore forward
pass already uses the cores given to it and interleaving two only adds contention. Each one is bounded in time
(:meth:`Inspector.inspect`). What an operator teaches it changes it under the same lock
(:meth:`Inspector.change_model`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomalens import api
from anomalens.data import ImageReadError, decode_image, encode_png, to_uint8_rgb
from anomalens.data.scale import WorkingScale
from anomalens.learning import LearnReport, Mark, active_marks
from anomalens.learning.learn import CannotLearn
from anomalens.models import CHANGING_RUNTIME, BaseDetector, load_detector
from anomalens.models.base import read_config
from anomalens.models.versions import ModelVersion, ModelVersions
from anomalens.reports.visualize import mask_png, overlay
from anomalens.results.record import InspectionRecord
from anomalens.service.settings import ServiceSettings
from anomalens.types import Prediction, Thresholds


class BadImage(ValueError):
    """The upload is not an image the service can inspect; the message says why (for a 4xx answer)."""


class InspectionTimeout(RuntimeError):
    """An inspection did not finish within the service's time limit; the message says why (for a 503 answer)."""


class StaleVersion(LookupError):
    """A change meant for one version of a model, which is no longer its current one; the message says so."""


@dataclass
class Inspected:
    record: InspectionRecord
    model: str  # the name of the model that judged it
    model_version: int  # and its version
    images: dict[str, bytes]  # "image", "overlay", "mask" -> PNG bytes
    image: np.ndarray
    prediction: Prediction


def model_dirs(root: Path) -> dict[str, Path]:
    """Model name -> directory: ``root`` itself when it is a model, else its sub-folders that are models."""
    if (root / "config.json").is_file():
        return {root.resolve().name: root}
    if not root.is_dir():
        raise FileNotFoundError(f"no model directory at {root}")
    found = {d.name: d for d in sorted(root.iterdir()) if (d / "config.json").is_file()}
    if not found:
        raise FileNotFoundError(f"{root} is neither a model directory nor a folder of model directories")
    return found


def decode_upload(data: bytes, name: str, settings: ServiceSettings) -> np.ndarray:
    """The upload as the float RGB image ``read_image`` gives. The format is judged from the content only:
    ``name``, the client's file name, is quoted only when the content is not an image at all. An image over
    the pixel limit is refused from its header, before decoding (a small file can decode to gigabytes)."""
    try:
        image = decode_image(data, name, max_pixels=settings.max_image_pixels)
    except ImageReadError as error:
        raise BadImage(error.reason) from error
    height, width = image.shape[:2]
    side = settings.min_image_side
    if min(height, width) < side:
        raise BadImage(f"the image is {width}x{height} pixels; at least {side}x{side} are needed")
    return image


class Inspector:
    """The loaded detector (one at a time, switchable by name) and optional defect taxonomy."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.available = model_dirs(settings.model_dir)
        self._lock = threading.Lock()
        # one change of the models at a time (switch, rollback, learn, undo); reentrant, as a change may switch
        self._changes = threading.RLock()
        self.model_name, self.model_version, self.detector = self._load(next(iter(self.available)))
        self.taxonomy = None
        if settings.taxonomy_dir is not None:
            from anomalens.explanation.taxonomy import load_taxonomy

            self.taxonomy = load_taxonomy(settings.taxonomy_dir, detector=self.detector)

    def model_info(self, name: str) -> dict[str, Any]:
        """Name, whether it inspects now (and then through which runtime), its current version, its working scale and
        what its calibration says to expect."""
        config = read_config(self.available[name])
        expected = Thresholds.from_dict(config["thresholds"]).expected
        scale = config.get("working_scale")
        return {
            "name": name,
            "active": name == self.model_name,
            "runtime": self.detector.runtime if name == self.model_name else None,
            "version": ModelVersions(self.available[name]).current,
            "working_scale": WorkingScale.from_dict(scale).describe() if scale else None,
            **{f"expected_{key}": value for key, value in expected.items() if key != "n_normal"},
        }

    def _load(self, name: str) -> tuple[str, int, BaseDetector]:
        """The model ``name`` at its current version (loaded from that version's own files)."""
        versions = ModelVersions(self.available[name])
        version = versions.current
        return name, version, load_detector(versions.path_of(version))

    def switch(self, name: str) -> None:
        """Make the model ``name`` (one of ``available``) the one that inspects, at its current version; waits for
        a running inspection."""
        if name not in self.available:
            raise KeyError(name)
        with self._changes:
            loaded = self._load(name)
            with self._lock:
                self.model_name, self.model_version, self.detector = loaded

    def rollback(self, name: str, version: int) -> ModelVersion:
        """Make ``version`` of the model ``name`` current again (a new version, cause "rollback"); the model is
        reloaded when it is the one that inspects. Raises KeyError for an unknown name, UnknownVersion for an
        unknown version."""
        with self._changes:
            entry = ModelVersions(self.available[name]).rollback(version, by="anomalens service")
            if name == self.model_name:
                self.switch(name)
        return entry

    def marks(self, name: str) -> list[Mark]:
        """The marks the current version of the model ``name`` has learned and not forgotten, oldest first."""
        with self._changes:
            return active_marks(self._current(name)[2])

    def queue_for_fine_tuning(self, name: str, images: list[tuple[str, np.ndarray]], by: str) -> LearnReport:
        """Queue ``images`` for the fine-tuning of the model ``name`` (one that learns by training), at its current
        version; the model itself is unchanged."""
        from anomalens.learning.finetune import FineTuneQueue, queue_normal_images

        with self._changes:
            versions, current, detector = self._current(name)
            return queue_normal_images(detector, FineTuneQueue(versions.directory), images, by, current)

    def _current(self, name: str) -> tuple[ModelVersions, int, BaseDetector]:
        """The versions of the model ``name``, its current version and that version's detector: the one that
        inspects when it is that version, else loaded (call it holding ``_changes``)."""
        versions = ModelVersions(self.available[name])
        current = versions.current
        loaded = name == self.model_name and self.model_version == current
        return (
            versions,
            current,
            self.detector if loaded else load_detector(versions.path_of(current), runtime=CHANGING_RUNTIME),
        )

    def change_model(
        self, name: str, change: Callable[[BaseDetector], LearnReport], by: str, judged_by: int | None = None
    ) -> LearnReport:
        """Change the current version of the model ``name`` with ``change`` (which changes the detector it is given
        and reports what it did, as ``anomalens.learning`` does) and save it as a new version when it changed
        (:func:`anomalens.api.save_change`). The model that inspects is changed under the inspection lock, so that
        no inspection sees it half changed, and the results after it record the new version.

        ``judged_by``: the version the change was asked for (a result's); :class:`StaleVersion` when the model
        has another one now. ``change``'s own refusals (``CannotLearn``, ``LookupError``) come through as raised.
        """
        with self._changes:
            versions = ModelVersions(self.available[name])
            current = versions.current
            if judged_by is not None and judged_by != current:
                raise StaleVersion(
                    f"the result was judged by version {judged_by} of {name!r}, which is at version {current} now"
                )
            if name != self.model_name:
                detector = load_detector(versions.path_of(current), runtime=CHANGING_RUNTIME)
                return api.save_change(versions.directory, detector, change(detector), by)
            if self.model_version != current:  # a new version made beside the service (anomalens learn)
                self.switch(name)
            with self._lock:
                try:
                    report = api.save_change(versions.directory, self.detector, change(self.detector), by)
                except (CannotLearn, LookupError):
                    raise  # refused before anything was changed
                except Exception:
                    # a change that failed half way must not stay in the detector that inspects
                    self.detector = load_detector(versions.path_of(current))
                    raise
                if report.version is not None:
                    self.model_version = report.version
                return report

    def inspect(self, data: bytes, image_name: str) -> Inspected:
        """Inspect the upload within ``settings.request_timeout_s``, or raise :class:`InspectionTimeout`.

        The limit covers the wait for an inspection still running and this one's own work. A thread cannot be
        stopped, so an inspection that overruns goes on in the background: it holds the lock until it ends, its
        result is then dropped, and meanwhile every other request waits at most its own limit and is refused
        rather than queued, so that no more than one overrun inspection is ever left working.
        """
        image = decode_upload(data, image_name, self.settings)
        limit = self.settings.request_timeout_s
        deadline = time.monotonic() + limit
        if not self._lock.acquire(timeout=limit):
            raise InspectionTimeout(f"the detector is still busy with an earlier inspection after {limit:g} s")
        outcome: Future[Inspected] = Future()
        # a daemon thread: one that never ends must not keep the process from exiting either
        threading.Thread(target=self._judge, args=(image, image_name, outcome), daemon=True).start()
        try:
            return outcome.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise InspectionTimeout(f"the inspection took longer than {limit:g} s and was abandoned") from None

    def _judge(self, image: np.ndarray, image_name: str, outcome: Future[Inspected]) -> None:
        """Predict, record and draw ``image`` into ``outcome``, then release the lock the caller took."""
        try:
            outcome.set_result(self._inspected(image, image_name))
        except BaseException as error:  # handed to the waiting request, which raises it
            outcome.set_exception(error)
        finally:
            self._lock.release()

    def _inspected(self, image: np.ndarray, image_name: str) -> Inspected:
        model_name, model_version, tic = self.model_name, self.model_version, time.perf_counter()
        prediction = self.detector.predict(image)
        milliseconds = 1000 * (time.perf_counter() - tic)
        record = api.inspection_record(image_name, image, prediction, milliseconds, self.taxonomy)
        rgb = to_uint8_rgb(image)
        images = {
            "image": encode_png(rgb),
            "overlay": encode_png(overlay(rgb, prediction)),
            "mask": encode_png(mask_png(prediction)),
        }
        return Inspected(record, model_name, model_version, images, image, prediction)
