"""A model directory's versions: every change (fit, learn, recalibrate, rollback) is kept, never overwritten.

Layout of a versioned model directory::

    versions.json          the manifest: every version (parent, cause, who, when, calibration) and ``current``
    versions/<n>/          version n's files: config.json + safetensors, the format a plain model directory has
    config.json, *.safetensors   a copy of the current version's files

The top-level copy keeps the directory a plain model directory, so everything that reads one (``load_detector``,
the engines, the ONNX export beside the model) reads the current version unchanged. A plain model directory without
a manifest counts as version 1; its first new version moves it under ``versions/1/`` first. A rollback adds a
version that references the restored version's files (``files``) rather than copying them.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from anomalens.models.base import CONFIG_FILE, read_config
from anomalens.models.onnx_runtime import ONNX_FILE
from anomalens.types import Thresholds

if TYPE_CHECKING:
    from anomalens.models.base import BaseDetector

MANIFEST_FILE = "versions.json"
VERSIONS_DIR = "versions"
Cause = Literal["fit", "learn", "undo", "recalibrate", "rollback"]
# who made a plain model directory's version 1 is not recorded anywhere
UNKNOWN_AUTHOR = "unknown"


class UnknownVersion(LookupError):
    """The model directory has no such version; the message lists the ones it has."""


class ModelVersion(BaseModel):
    """One version of a model: where it came from, what made it, and what its calibration expects."""

    version: int = Field(ge=1)
    parent: int | None = Field(default=None, description="the version that was current when this one was made")
    created_at: datetime
    cause: Cause
    by: str = Field(description="who or what made it: a command such as 'anomalens fit', or a user name")
    files: int = Field(description="the version whose files it uses: itself, or the restored one for a rollback")
    note: str | None = Field(default=None, description="what changed, in words (e.g. which marks were learned)")
    expected: dict[str, float | int] = Field(
        default_factory=dict, description="the thresholds' expected rates (Thresholds.expected)"
    )


class Manifest(BaseModel):
    """``versions.json``: every version, oldest first, and the one in use."""

    current: int
    versions: list[ModelVersion]

    def entry(self, version: int) -> ModelVersion:
        for entry in self.versions:
            if entry.version == version:
                return entry
        known = ", ".join(str(v.version) for v in self.versions)
        raise UnknownVersion(f"no version {version} of this model; it has {known}")


def _model_files(directory: Path) -> list[Path]:
    """The files of one version in ``directory``: its config, its tensors and an ONNX export made from them."""
    return sorted(
        p for p in directory.iterdir() if p.name in (CONFIG_FILE, ONNX_FILE) or p.name.endswith(".safetensors")
    )


def _replace_file(source: Path, target: Path) -> None:
    """Copy ``source`` over ``target`` so that a reader sees either the old file or the new one, whole."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


class ModelVersions:
    """The versions of the model saved in ``directory``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_FILE

    def manifest(self) -> Manifest:
        """The manifest; a plain model directory's is one version 1 made by a fit."""
        if self.manifest_path.is_file():
            return Manifest.model_validate_json(self.manifest_path.read_text())
        config = read_config(self.directory)  # says clearly when there is no model at all
        made = datetime.fromtimestamp((self.directory / CONFIG_FILE).stat().st_mtime, timezone.utc)
        expected = Thresholds.from_dict(config["thresholds"]).expected
        first = ModelVersion(version=1, created_at=made, cause="fit", by=UNKNOWN_AUTHOR, files=1, expected=expected)
        return Manifest(current=1, versions=[first])

    def list(self) -> list[ModelVersion]:
        return self.manifest().versions

    @property
    def current(self) -> int:
        return self.manifest().current

    def path_of(self, version: int) -> Path:
        """The directory holding ``version``'s files (loadable with ``load_detector``)."""
        entry = self.manifest().entry(version)
        if not self.manifest_path.is_file():
            return self.directory
        return self.directory / VERSIONS_DIR / str(entry.files)

    def add(self, detector: BaseDetector, cause: Cause, by: str, note: str | None = None) -> ModelVersion:
        """Write ``detector`` as a new version (its parent the current one) and make it current."""
        assert detector.thresholds_ is not None
        manifest = self._versioned() if (self.directory / CONFIG_FILE).is_file() else Manifest(current=0, versions=[])
        number = max((v.version for v in manifest.versions), default=0) + 1
        partial = self.directory / VERSIONS_DIR / f".{number}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        detector.write_files(partial)
        partial.rename(self.directory / VERSIONS_DIR / str(number))
        entry = ModelVersion(
            version=number,
            parent=manifest.current or None,
            created_at=datetime.now(timezone.utc),
            cause=cause,
            by=by,
            files=number,
            expected=detector.thresholds_.expected,
            note=note,
        )
        self._publish(Manifest(current=number, versions=[*manifest.versions, entry]))
        return entry

    def rollback(self, version: int, by: str = "anomalens") -> ModelVersion:
        """Make ``version`` current again, as a new version with cause "rollback" that uses its files."""
        manifest = self._versioned()
        restored = manifest.entry(version)
        number = max(v.version for v in manifest.versions) + 1
        entry = ModelVersion(
            version=number,
            parent=manifest.current,
            created_at=datetime.now(timezone.utc),
            cause="rollback",
            by=by,
            files=restored.files,
            expected=restored.expected,
        )
        self._publish(Manifest(current=number, versions=[*manifest.versions, entry]))
        return entry

    def _versioned(self) -> Manifest:
        """The manifest, after moving a plain model directory's files under ``versions/1/``."""
        manifest = self.manifest()
        if not self.manifest_path.is_file():
            first = self.directory / VERSIONS_DIR / "1"
            first.mkdir(parents=True, exist_ok=True)
            for path in _model_files(self.directory):
                shutil.copyfile(path, first / path.name)
            self._write_manifest(manifest)
        return manifest

    def _publish(self, manifest: Manifest) -> None:
        """Record ``manifest``, then mirror its current version's files at the top level."""
        self._write_manifest(manifest)
        source = self.directory / VERSIONS_DIR / str(manifest.entry(manifest.current).files)
        wanted = {path.name: path for path in _model_files(source)}
        for stale in _model_files(self.directory):
            if stale.name not in wanted:
                stale.unlink()
        # the config last: a plain reader that sees the new config finds the new tensors beside it
        for name in sorted(wanted, key=lambda name: name == CONFIG_FILE):
            _replace_file(wanted[name], self.directory / name)

    def _write_manifest(self, manifest: Manifest) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.manifest_path.with_name(f".{MANIFEST_FILE}.partial")
        partial.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
        os.replace(partial, self.manifest_path)
