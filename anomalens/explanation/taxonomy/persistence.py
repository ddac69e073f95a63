"""A taxonomy's files: ``taxonomy.json`` (format version, settings, labels, radii) and ``embeddings.safetensors``
(the example vectors). No pickle: the logistic model is refitted from the vectors on load (deterministic, and
cheap for a few examples per type).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
SETTINGS_FILE = "taxonomy.json"
EMBEDDINGS_FILE = "embeddings.safetensors"


def is_saved(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a saved taxonomy."""
    return (Path(path) / SETTINGS_FILE).is_file()


def write(path: str | Path, settings: dict[str, Any], embeddings: np.ndarray) -> Path:
    """Write ``settings`` (JSON-ready) and ``embeddings`` to the folder ``path`` (created); returns the folder."""
    from safetensors.numpy import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": np.ascontiguousarray(embeddings, np.float32)}, str(folder / EMBEDDINGS_FILE))
    (folder / SETTINGS_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **settings}, indent=2))
    return folder


def read(path: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """``(settings, embeddings)`` as :func:`write` wrote them."""
    from safetensors.numpy import load_file

    folder = Path(path)
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    return settings, load_file(str(folder / EMBEDDINGS_FILE))["embeddings"]
