"""The :class:`Taxonomy`: names a region by the nearest of the user's defect types, or "unknown" when it is
further from every type than that type's own examples are from each other. Regions are compared as
:func:`~anomalens.explanation.taxonomy.embedding.region_embedding` vectors.

Classification
--------------
``method="logistic"`` (default): a multinomial logistic regression (scikit-learn, ``C`` = ``LOGISTIC_C``) on the
example vectors names the type; ``method="knn"``: the type at the smallest distance, a type's distance being the
mean distance to its ``k`` (default 1, at most the number of its examples) nearest examples;
``method="prototype"``: the type whose mean of examples is nearest. Chosen by measurement on MagneticTile
(5 examples per type, seeds 0-4): logistic named the most regions right, both on ground-truth regions and on
the detector's own regions (``bench/defect_types_magnetic_tile.py``, figures in
``bench/results/defect_types_magnetic_tile.md``). Types come in several looks, e.g. a break at the edge vs one
across the tile, that one class mean blurs together; the linear model weighs the feature dimensions that
separate the types instead of treating all 700 alike.

``confidence`` is, for "logistic", the model's probability of the named type; otherwise the softmax over
negative distances (temperature ``temperature``, by default a quarter of the median leave-one-out within-type
distance seen at fit time), taken for the nearest type. Either way it is in [0, 1] and close to 1 only when one
type clearly wins.

"unknown": a type's radius is ``radius_factor`` (default 1.5) x the largest leave-one-out distance of its own
examples to the type (each example held out in turn, measured with the same method); types with a single example
borrow the median radius of the others. A region further than the radius from its nearest type is "unknown"
(``confidence`` then still says how clearly that nearest type wins among the known ones). "logistic" uses the
k-NN distances for this rule, to the type it names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalens.explanation.taxonomy import persistence
from anomalens.explanation.taxonomy.embedding import BACKBONE, CROP_SIZE, LAYERS, get_extractor, region_embedding
from anomalens.explanation.taxonomy.folders import labelled_regions

UNKNOWN = "unknown"
METHODS = ("logistic", "knn", "prototype")
LOGISTIC_C = 10.0


class Taxonomy:
    """Names defect regions by the user's types, learned from a few labelled examples (module docstring)."""

    def __init__(
        self,
        method: str = "logistic",
        k: int = 1,
        radius_factor: float = 1.5,
        temperature: float | None = None,
        backbone: str = BACKBONE,
        layers: Sequence[str] = LAYERS,
        crop_size: int = CROP_SIZE,
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method, self.k, self.radius_factor = method, int(k), float(radius_factor)
        self.temperature_setting = temperature
        self.backbone, self.layers, self.crop_size = backbone, tuple(layers), int(crop_size)
        self.embeddings = np.zeros((0, 0), np.float32)
        self.labels: list[str] = []
        self.names: list[str] = []
        self.radii: dict[str, float] = {}
        self.temperature = 1.0
        self.classifier_: Any = None

    # -- fitting -------------------------------------------------------------------------------------------------
    @property
    def types(self) -> list[str]:
        return sorted(set(self.labels))

    @property
    def extractor(self) -> torch.nn.Module:
        return get_extractor(self.backbone, self.layers)

    def embed(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        return region_embedding(image, mask, self.extractor, self.crop_size)

    def fit(
        self, examples: Iterable[tuple[np.ndarray, np.ndarray | None, str]], names: Sequence[str] | None = None
    ) -> Taxonomy:
        """Learn from ``(image, mask or None, label)`` triples (at least one type; a few examples each)."""
        vectors, labels = [], []
        for image, mask, label in examples:
            vectors.append(self.embed(image, mask))
            labels.append(str(label))
        if not vectors:
            raise ValueError("a taxonomy needs at least one labelled example")
        if UNKNOWN in labels:
            raise ValueError(f"{UNKNOWN!r} is reserved for regions that match no type")
        return self.fit_embeddings(np.stack(vectors), labels, names)

    def fit_embeddings(
        self, embeddings: np.ndarray, labels: Sequence[str], names: Sequence[str] | None = None
    ) -> Taxonomy:
        """Learn from precomputed :func:`region_embedding` vectors (same backbone settings)."""
        self.embeddings = np.asarray(embeddings, np.float32)
        self.labels = [str(v) for v in labels]
        self.names = [str(n) for n in names] if names is not None else [""] * len(self.labels)
        self._learn_radii()
        self._fit_classifier()
        return self

    def _fit_classifier(self) -> None:
        """The logistic model for ``method="logistic"`` (None with one type: nothing to choose between)."""
        self.classifier_ = None
        if self.method == "logistic" and len(self.types) > 1:
            from sklearn.linear_model import LogisticRegression

            self.classifier_ = LogisticRegression(C=LOGISTIC_C, max_iter=5000).fit(self.embeddings, self.labels)

    def _learn_radii(self) -> None:
        loo: dict[str, list[float]] = {t: [] for t in self.types}
        labels = np.array(self.labels)
        for i, label in enumerate(self.labels):
            keep = np.ones(len(labels), bool)
            keep[i] = False
            if not (labels[keep] == label).any():
                continue
            d = self._distances(self.embeddings[i], self.embeddings[keep], labels[keep])
            loo[label].append(d[label])
        measured = {t: max(v) for t, v in loo.items() if v}
        fallback = float(np.median(list(measured.values()))) if measured else 0.5
        self.radii = {t: self.radius_factor * measured.get(t, fallback) for t in self.types}
        all_loo = [d for v in loo.values() for d in v]
        if self.temperature_setting is not None:
            self.temperature = float(self.temperature_setting)
        else:
            self.temperature = max(0.25 * float(np.median(all_loo)) if all_loo else 0.1, 1e-3)

    @classmethod
    def from_folders(cls, root: str | Path, detector: Any = None, **settings: Any) -> Taxonomy:
        """Learn from a folder per type (layouts: :mod:`anomalens.explanation.taxonomy.folders`).

        With a fitted ``detector``, each example also counts as seen through it: the strongest region the
        detector outlines in it (when it calls the example anomalous) is a second example of the type. New
        regions will come from that detector, and its outlines are wider and blurrier than drawn masks: on
        magnetic tile a taxonomy from both views named far more of the detector's regions right than one from
        drawn masks alone (bench/results/defect_types_magnetic_tile.md).
        """
        taxonomy = cls(**settings)
        vectors, labels, names = [], [], []
        for image, mask, label, name in labelled_regions(root, detector):
            vectors.append(taxonomy.embed(image, mask))
            labels.append(label)
            names.append(name)
        return taxonomy.fit_embeddings(np.stack(vectors), labels, names)

    # -- classification ------------------------------------------------------------------------------------------
    def _distances(self, vector: np.ndarray, bank: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        out = {}
        for t in sorted(set(labels.tolist())):
            members = bank[labels == t]
            if self.method == "prototype":  # "logistic" measures "unknown" with the k-NN distances
                out[t] = float(np.linalg.norm(members.mean(axis=0) - vector))
            else:
                d = np.sort(np.linalg.norm(members - vector, axis=1))
                out[t] = float(d[: max(1, min(self.k, len(d)))].mean())
        return out

    def distances(self, vector: np.ndarray) -> dict[str, float]:
        """Distance of an embedding to every type (method-dependent, see the module docstring)."""
        if not self.labels:
            raise RuntimeError("the taxonomy has no examples: call fit or from_folders first")
        return self._distances(np.asarray(vector, np.float32), self.embeddings, np.array(self.labels))

    def closed_set(self, vector: np.ndarray) -> tuple[str, float, dict[str, float]]:
        """``(type, confidence, {type: distance})``: the type that wins among the known ones, before the
        "unknown" rule."""
        distances = self.distances(vector)
        if self.classifier_ is not None:
            probabilities = self.classifier_.predict_proba(np.asarray(vector, np.float64)[None])[0]
            best = int(np.argmax(probabilities))
            return str(self.classifier_.classes_[best]), float(probabilities[best]), distances
        names = list(distances)
        d = np.array([distances[n] for n in names])
        logits = -d / self.temperature
        p = np.exp(logits - logits.max())
        p /= p.sum()
        best = int(np.argmin(d))
        return names[best], float(np.clip(p[best], 0.0, 1.0)), distances

    def classify_embedding(self, vector: np.ndarray) -> tuple[str, float, dict[str, float]]:
        """Like :meth:`closed_set`, with "unknown" for a vector further than the named type's radius."""
        name, confidence, distances = self.closed_set(vector)
        label = name if distances[name] <= self.radii.get(name, math.inf) else UNKNOWN
        return label, confidence, distances

    def classify(self, image: np.ndarray, mask: np.ndarray | None = None) -> tuple[str, float, dict[str, float]]:
        """``(type or "unknown", confidence in [0, 1], {type: distance})`` for the region ``mask`` of ``image``."""
        return self.classify_embedding(self.embed(image, mask))

    # -- files ---------------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Settings, labels and radii as saved in ``taxonomy.json``."""
        return {
            "method": self.method,
            "k": self.k,
            "radius_factor": self.radius_factor,
            "temperature_setting": self.temperature_setting,
            "temperature": self.temperature,
            "backbone": self.backbone,
            "layers": list(self.layers),
            "crop_size": self.crop_size,
            "labels": self.labels,
            "names": self.names,
            "radii": self.radii,
        }

    def save(self, path: str | Path) -> Path:
        """Write the taxonomy's files (:mod:`~anomalens.explanation.taxonomy.persistence`); returns the folder."""
        return persistence.write(path, self.config(), self.embeddings)

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        cfg, embeddings = persistence.read(path)
        taxonomy = cls(
            method=cfg["method"],
            k=cfg["k"],
            radius_factor=cfg["radius_factor"],
            temperature=cfg.get("temperature_setting"),
            backbone=cfg["backbone"],
            layers=cfg["layers"],
            crop_size=cfg["crop_size"],
        )
        taxonomy.embeddings = embeddings
        taxonomy.labels, taxonomy.names = list(cfg["labels"]), list(cfg.get("names", []))
        taxonomy.radii = {k: float(v) for k, v in cfg["radii"].items()}
        taxonomy.temperature = float(cfg["temperature"])
        taxonomy._fit_classifier()
        return taxonomy

    @staticmethod
    def is_saved(path: str | Path) -> bool:
        return persistence.is_saved(path)

    def with_method(self, method: str, k: int | None = None) -> Taxonomy:
        """A copy using ``method`` (and ``k``) on the same example vectors, radii relearned."""
        other = Taxonomy(
            method=method,
            k=self.k if k is None else k,
            radius_factor=self.radius_factor,
            temperature=self.temperature_setting,
            backbone=self.backbone,
            layers=self.layers,
            crop_size=self.crop_size,
        )
        return other.fit_embeddings(self.embeddings, self.labels, self.names)

    def __repr__(self) -> str:
        counts = {t: self.labels.count(t) for t in self.types}
        return f"Taxonomy(method={self.method!r}, k={self.k}, types={counts})"


def load_taxonomy(path: str | Path, save_to: str | Path | None = None, detector: Any = None) -> Taxonomy:
    """A saved taxonomy (``taxonomy.json``), or one learned from the folder of labelled examples at ``path``
    (with ``detector``: its regions of the examples too, see :meth:`Taxonomy.from_folders`); saved to
    ``save_to`` when given."""
    taxonomy = Taxonomy.load(path) if Taxonomy.is_saved(path) else Taxonomy.from_folders(path, detector=detector)
    if save_to is not None:
        taxonomy.save(save_to)
    return taxonomy
