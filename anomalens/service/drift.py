"""The service's drift watch: one :class:`~anomalens.postprocessing.drift.DriftState` per model for this station,
updated after every stored inspection and kept in ``drift.json`` in the data dir, so that a restart neither loses
the baseline nor forgets a warning.

States are keyed by station, then by model name (the loaded model's name; a model version can join the key later).
A JSON file rather than a store table: one station writes it, a few hundred bytes per model, and it needs no
migration; a file from another station in the same data dir keeps its own entries.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pydantic import TypeAdapter

from anomalens.postprocessing.drift import DriftAssessment, DriftState, DriftTest
from anomalens.types import Prediction

STATES = TypeAdapter(dict[str, dict[str, DriftState]])  # station -> model -> state


class DriftWatch:
    """Drift states of this ``station``'s models, read from and written to ``path``."""

    def __init__(self, path: Path, station: str, test: DriftTest | None = None):
        self.path, self.station = path, station
        self.test = test or DriftTest()
        self._lock = threading.Lock()
        self._all = STATES.validate_json(path.read_bytes()) if path.is_file() else {}
        self._states = self._all.setdefault(station, {})

    def observe(self, model: str, prediction: Prediction) -> DriftAssessment:
        """Add one inspection by ``model`` to its state, store the states, and say where the model's inputs stand."""
        thresholds = prediction.thresholds
        false_alarm_rate = thresholds.expected.get("false_alarm_rate")
        with self._lock:
            state = self._states.setdefault(model, DriftState())
            self.test.observe(
                state,
                prediction.image_score,
                not prediction.is_anomalous,
                expected_pass_rate=None if false_alarm_rate is None else 1.0 - false_alarm_rate,
                calibration_normals=thresholds.details.get("normal_scores"),
            )
            self._save()
            return self.test.assess(state)

    def assessments(self) -> dict[str, DriftAssessment]:
        """Model name -> the drift watch's answer, for every model this station has inspected with."""
        with self._lock:
            return {model: self.test.assess(state) for model, state in self._states.items()}

    def warning(self, model: str) -> bool:
        with self._lock:
            state = self._states.get(model)
            return state is not None and self.test.warning(state)

    def _save(self) -> None:
        # written aside and renamed, so that a crash mid-write leaves the previous file whole
        partial = self.path.with_suffix(".json.partial")
        partial.write_bytes(STATES.dump_json(self._all))
        os.replace(partial, self.path)
