"""The service's drift watch: one :class:`~anomalens.postprocessing.drift.DriftState` per model version for this
station, updated after every stored inspection and kept in ``drift.json`` in the data dir, so that a restart
neither loses the baseline nor forgets a warning.

States are keyed by station, model name and model version: a new version (a fit, a learned false alarm, a
rollback) scores images differently, so its scores start a baseline of their own rather than read as drift
against the last version's. A JSON file rather than a store table: one station writes it, a few hundred bytes per
version, and it needs no migration; a file from another station in the same data dir keeps its own entries.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pydantic import TypeAdapter

from anomalens.postprocessing.drift import DriftAssessment, DriftState, DriftTest
from anomalens.types import Prediction

STATES = TypeAdapter(dict[str, dict[str, dict[int, DriftState]]])  # station -> model -> version -> state


class DriftWatch:
    """Drift states of this ``station``'s models, read from and written to ``path``."""

    def __init__(self, path: Path, station: str, test: DriftTest | None = None):
        self.path, self.station = path, station
        self.test = test or DriftTest()
        self._lock = threading.Lock()
        self._all = STATES.validate_json(path.read_bytes()) if path.is_file() else {}
        self._states = self._all.setdefault(station, {})

    def observe(self, model: str, version: int, prediction: Prediction) -> DriftAssessment:
        """Add one inspection by ``version`` of ``model`` to its state, store the states, and say where that
        version's inputs stand."""
        thresholds = prediction.thresholds
        false_alarm_rate = thresholds.expected.get("false_alarm_rate")
        with self._lock:
            state = self._states.setdefault(model, {}).setdefault(version, DriftState())
            self.test.observe(
                state,
                prediction.image_score,
                not prediction.is_anomalous,
                expected_pass_rate=None if false_alarm_rate is None else 1.0 - false_alarm_rate,
                calibration_normals=thresholds.details.get("normal_scores"),
            )
            self._save()
            return self.test.assess(state)

    def assessments(self) -> dict[tuple[str, int], DriftAssessment]:
        """(model name, version) -> the drift watch's answer, for every version this station has inspected with."""
        with self._lock:
            return {
                (model, version): self.test.assess(state)
                for model, versions in self._states.items()
                for version, state in versions.items()
            }

    def warning(self, model: str, version: int) -> bool:
        with self._lock:
            state = self._states.get(model, {}).get(version)
            return state is not None and self.test.warning(state)

    def _save(self) -> None:
        # written aside and renamed, so that a crash mid-write leaves the previous file whole
        partial = self.path.with_suffix(".json.partial")
        partial.write_bytes(STATES.dump_json(self._all))
        os.replace(partial, self.path)
