"""Settings of the inspection service: one plain object, built by the CLI or by tests."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServiceSettings:
    """Where the models and the store are, and the limits the service enforces.

    ``model_dir`` is one fitted model directory or a folder of them (``GET /models`` lists them by name).
    ``database_url`` is any SQLAlchemy URL (``postgresql+psycopg://...`` for a store shared by stations);
    by default an SQLite file in ``data_dir``. ``api_key`` (default: ``ANOMALENS_API_KEY``) guards every
    endpoint except ``/health`` and the web page itself, ``/metrics`` included unless ``metrics_open`` (for a
    scraper that cannot send the key). ``request_timeout_s`` bounds one inspection, waiting for the detector
    included (see :meth:`anomalens.service.inference.Inspector.inspect`). ``learn_from_feedback``: a false alarm
    judged by a model's current version teaches that model the image as normal (see ``anomalens.service.learning``).
    """

    model_dir: Path
    data_dir: Path = Path("anomalens_data")
    database_url: str | None = None
    api_key: str | None = None
    max_upload_bytes: int = 20 * MiB
    max_batch_files: int = 16
    min_image_side: int = 16
    max_image_pixels: int = 64_000_000
    request_timeout_s: float = 60.0
    taxonomy_dir: Path | None = None
    use_llm: bool = False
    metrics_open: bool = False
    learn_from_feedback: bool = True
    station: str = field(default_factory=lambda: socket.gethostname())  # the host when settings are made

    @classmethod
    def create(cls, model_dir: str | Path, data_dir: str | Path = "anomalens_data", **options) -> ServiceSettings:
        """Settings with paths as ``Path`` and the API key taken from ``ANOMALENS_API_KEY`` unless given."""
        options.setdefault("api_key", os.environ.get("ANOMALENS_API_KEY") or None)
        if options.get("taxonomy_dir") is not None:
            options["taxonomy_dir"] = Path(options["taxonomy_dir"])
        return cls(model_dir=Path(model_dir), data_dir=Path(data_dir), **options)

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'inspections.db').resolve()}"

    @property
    def history_path(self) -> Path:
        """The SQLite defect history that operator feedback feeds (see ``anomalens.explanation.history``)."""
        return self.data_dir / "defect_history.db"

    @property
    def drift_path(self) -> Path:
        """The drift watch's states (see ``anomalens.service.drift``)."""
        return self.data_dir / "drift.json"
