"""Defect types in the user's own taxonomy, learned from a few labelled examples per type.

A region (an image plus a boolean mask of the defect) is turned into a fixed-length vector by
:func:`region_embedding`; a :class:`Taxonomy` keeps the vectors of the labelled examples and names a new region by
the nearest type, or "unknown" when it is further from every type than that type's own examples are from each
other.

What goes into the embedding, and why
-------------------------------------
1. **A crop around the region** (the mask's bounding box, grown by ``CONTEXT`` = 50 % of its size on each side,
   made square and at least ``MIN_CROP`` px, reflect-padded at the image border), resized to ``CROP_SIZE`` px.
   Cropping makes the features describe the defect rather than the whole part, and a square crop keeps the
   defect's shape undistorted; the margin keeps enough surroundings to see what the defect differs from.
2. **Pretrained features** of the frozen backbone (EfficientNet-Lite0, ImageNet weights) at three depths,
   ``blocks.4`` (stride 8: edges, local texture), ``blocks.10`` (stride 16: parts, patterns) and ``blocks.14``
   (stride 32: larger structure), bilinearly upsampled to the ``blocks.4`` grid. Each layer is average-pooled
   (a) under the mask (resized to the grid with area interpolation, i.e. soft weights), which says what the
   defect itself looks like, and (b) over the whole crop, which says what the defect plus its context look
   like. Each pooled vector is L2-normalised on its own so that every layer and pooling counts equally
   (blocks.14 has 192 channels, blocks.4 only 40).
3. **Cheap measured descriptors** of the mask and the pixels, which the scale-free crop cannot see: area
   fraction of the image (log10, /4 -> about [-1, 0]), elongation (log of the major/minor axis ratio, /3), fill
   of the bounding box, number of connected components (log1p, /3), and the mean gray difference between the
   region and a ring of surroundings (x4, clipped to [-1, 1]) plus its gray contrast (std inside, x4). These
   are weighted by ``DESCRIPTOR_WEIGHT`` (about the weight of one pooled feature block).
4. The concatenation is **L2-normalised**, so Euclidean distances lie in [0, 2].

Grayscale images (one channel, or three equal channels) work as they are: a gray image is replicated to three
channels before the backbone, and the descriptors use luma.

Classification
--------------
``method="logistic"`` (default): a multinomial logistic regression (scikit-learn, ``C`` = ``LOGISTIC_C``) on the
example vectors names the type; ``method="knn"``: the type at the smallest distance, a type's distance being the
mean distance to its ``k`` (default 1, at most the number of its examples) nearest examples;
``method="prototype"``: the type whose mean of examples is nearest. Chosen by measurement on MagneticTile
(5 examples per type, ``bench/defect_types_magnetic_tile.py``), mean accuracy over seeds 0-4: on ground-truth
regions logistic 0.817, k-NN k=1 0.787; on the detector's own regions (taxonomy from the detector's regions of
the examples) logistic 0.587, k-NN 0.544. Over seeds 0-2 on ground-truth regions: prototype 0.780, k-NN k=3
0.760, k=1 0.788 (types come in several looks, e.g. a break at the edge vs one across the tile, that one class
mean blurs together; the linear model weighs the feature dimensions that separate the types instead of
treating all 700 alike).

``confidence`` is, for "logistic", the model's probability of the named type; otherwise the softmax over
negative distances (temperature ``temperature``, by default a quarter of the median leave-one-out within-type
distance seen at fit time), taken for the nearest type. Either way it is in [0, 1] and close to 1 only when one
type clearly wins.

"unknown": a type's radius is ``radius_factor`` (default 1.5) x the largest leave-one-out distance of its own
examples to the type (each example held out in turn, measured with the same method); types with a single example
borrow the median radius of the others. A region further than the radius from its nearest type is "unknown"
(``confidence`` then still says how clearly that nearest type wins among the known ones). "logistic" uses the
k-NN distances for this rule, to the type it names.

Files: ``save(path)`` writes ``path/taxonomy.json`` (settings, labels, radii) and ``path/embeddings.safetensors``
(the example vectors); no pickle (the logistic model is refitted from the vectors on load: deterministic and
a few milliseconds).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from anomalens.data import IMAGE_EXTENSIONS, read_image, read_mask
from anomalens.models.base import flush_denormals

UNKNOWN = "unknown"
LAYERS = ("blocks.4", "blocks.10", "blocks.14")
BACKBONE = "efficientnet_lite0"
CROP_SIZE = 160
CONTEXT = 0.5
MIN_CROP = 32
DESCRIPTOR_WEIGHT = 1.0
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
FORMAT_VERSION = 1
METHODS = ("logistic", "knn", "prototype")
LOGISTIC_C = 10.0

def get_extractor(backbone: str = BACKBONE, layers: Sequence[str] = LAYERS) -> torch.nn.Module:
    """A frozen feature extractor, built once per (backbone, layers) and kept (see ``_cached_extractor``)."""
    flush_denormals()   # before the build's forward pass: see its docstring
    return _cached_extractor(backbone, tuple(layers))


# A process embeds with the default backbone and perhaps a taxonomy's own: a few networks are worth keeping,
# while an unbounded cache would hold every network ever asked for until the process ends.
@lru_cache(maxsize=2)
def _cached_extractor(backbone: str, layers: tuple[str, ...]) -> torch.nn.Module:
    from anomalens.models.backbones import build_feature_extractor

    return build_feature_extractor(backbone, layers)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    rgb = np.asarray(image)
    if rgb.dtype == np.uint8:
        rgb = rgb.astype(np.float32) / 255.0
    rgb = rgb.astype(np.float32)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb[..., :3])


def _as_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask).astype(bool)
    if m.ndim == 3:
        m = m.any(axis=2)
    if m.shape != shape:
        m = cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    if not m.any():  # an empty mask says nothing about a place: describe the whole image
        m = np.ones(shape, dtype=bool)
    return m


def _crop_box(mask: np.ndarray) -> tuple[int, int, int]:
    """Square crop (y0, x0, side) around the mask, with context, possibly reaching past the image border."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = max(y1 - y0, x1 - x0)
    side = max(MIN_CROP, int(math.ceil(side * (1 + 2 * CONTEXT))))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return int(round(cy - side / 2.0)), int(round(cx - side / 2.0)), side


def _crop(array: np.ndarray, y0: int, x0: int, side: int, reflect: bool) -> np.ndarray:
    h, w = array.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + side - h), max(0, x0 + side - w)
    if top or left or bottom or right:
        if not reflect:
            mode = cv2.BORDER_CONSTANT
        elif max(top, bottom) < h and max(left, right) < w:
            mode = cv2.BORDER_REFLECT_101
        else:  # reflection cannot reach further than the image is wide: replicate the edge instead
            mode = cv2.BORDER_REPLICATE
        array = cv2.copyMakeBorder(array, top, bottom, left, right, mode, value=0)
        y0, x0 = y0 + top, x0 + left
    return array[y0:y0 + side, x0:x0 + side]


def shape_descriptors(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scaled measured descriptors of a region (see the module docstring, item 3); float32 vector of 6."""
    h, w = mask.shape
    area = int(mask.sum())
    ys, xs = np.nonzero(mask)
    area_fraction = area / float(h * w)
    cov = np.cov(np.stack([ys, xs]).astype(np.float64)) if area > 1 else np.zeros((2, 2))
    eig = np.clip(np.linalg.eigvalsh(np.atleast_2d(cov)), 0.0, None)
    elongation = math.sqrt((eig.max() + 1 / 12) / (eig.min() + 1 / 12))
    box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = area / float(box_area)
    n_components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1
    radius = max(3, int(round(0.5 * math.sqrt(area))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
    inside = gray[mask]
    difference = float(inside.mean() - gray[ring].mean()) if ring.any() else 0.0
    return np.array([
        math.log10(max(area_fraction, 1e-6)) / 4.0,
        math.log(elongation) / 3.0,
        fill,
        math.log1p(max(n_components - 1, 0)) / 3.0,
        float(np.clip(4.0 * difference, -1.0, 1.0)),
        float(np.clip(4.0 * inside.std(), 0.0, 1.0)),
    ], dtype=np.float32)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp_min(1e-8)


@torch.no_grad()
def region_embedding(image: np.ndarray, mask: np.ndarray | None, extractor: torch.nn.Module | None = None,
                     crop_size: int = CROP_SIZE) -> np.ndarray:
    """L2-normalised float32 vector describing the region ``mask`` of ``image`` (module docstring: what and why).

    ``image``: HxWx3 (or HxW / HxWx1, gray) float in [0, 1] or uint8. ``mask``: HxW bool (resized to the image
    when its size differs); None or empty: the whole image. ``extractor``: a module returning a dict of feature
    maps for a [B,3,H,W] batch in [0, 1] (default: the cached EfficientNet-Lite0 with blocks.4/10/14).
    """
    flush_denormals()
    rgb = _as_rgb(image)
    m = _as_mask(mask, rgb.shape[:2])
    y0, x0, side = _crop_box(m)
    crop = _crop(rgb, y0, x0, side, reflect=True)
    crop_mask = _crop(m.astype(np.float32), y0, x0, side, reflect=False)
    crop = cv2.resize(crop, (crop_size, crop_size), interpolation=cv2.INTER_AREA if side > crop_size
                      else cv2.INTER_LINEAR)
    extractor = extractor if extractor is not None else get_extractor()
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None].clamp(0, 1)
    feats = extractor(x)
    grid = max(f.shape[-1] for f in feats.values())
    weights = cv2.resize(crop_mask, (grid, grid), interpolation=cv2.INTER_AREA)
    if weights.sum() <= 1e-6:  # a very thin region can vanish under area interpolation
        weights = cv2.resize(crop_mask, (grid, grid), interpolation=cv2.INTER_NEAREST)
    if weights.sum() <= 1e-6:
        weights = np.ones((grid, grid), np.float32)
    w = torch.from_numpy(weights.astype(np.float32)).view(1, grid, grid)
    parts = []
    for key in sorted(feats, key=lambda k: (len(k), k)):
        f = feats[key][0]
        if f.shape[-1] != grid:
            f = F.interpolate(f[None], size=(grid, grid), mode="bilinear", align_corners=False)[0]
        parts.append(_unit((f * w).sum(dim=(1, 2)) / w.sum()))
        parts.append(_unit(f.mean(dim=(1, 2))))
    gray = rgb @ LUMA
    parts.append(torch.from_numpy(shape_descriptors(gray, m)) * DESCRIPTOR_WEIGHT)
    return _unit(torch.cat(parts)).numpy().astype(np.float32)


def _find_mask(folders: Sequence[Path], stem: str, image_folder: Path | None = None) -> Path | None:
    for folder in folders:
        # next to the image only "<stem>_mask.*" can be its mask ("<stem>.*" is the image itself)
        for base in (f"{stem}_mask",) if folder == image_folder else (f"{stem}_mask", stem):
            for ext in (".png", *IMAGE_EXTENSIONS):
                candidate = folder / f"{base}{ext}"
                if candidate.is_file():
                    return candidate
    return None


def _is_mask_name(path: Path) -> bool:
    return path.stem.endswith("_mask")


def folder_examples(root: str | Path) -> list[tuple[Path, Path | None, str]]:
    """(image, mask or None, type) for every example under ``root`` (layouts: see :meth:`Taxonomy.from_folders`)."""
    root = Path(root)
    if (root / "test").is_dir():
        type_root, gt_root = root / "test", root / "ground_truth"
    else:
        type_root, gt_root = root, root / "ground_truth"
    found = []
    for folder in sorted(p for p in type_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = folder.name
        if label in ("good", "ground_truth", "masks"):
            continue
        mask_dirs = [gt_root / label, folder / "masks", folder]
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS \
                    or _is_mask_name(path):
                continue
            found.append((path, _find_mask(mask_dirs, path.stem, folder), label))
    return found


class Taxonomy:
    """Names defect regions by the user's types, learned from a few labelled examples (module docstring)."""

    def __init__(self, method: str = "logistic", k: int = 1, radius_factor: float = 1.5,
                 temperature: float | None = None, backbone: str = BACKBONE, layers: Sequence[str] = LAYERS,
                 crop_size: int = CROP_SIZE):
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

    def fit(self, examples: Iterable[tuple[np.ndarray, np.ndarray | None, str]],
            names: Sequence[str] | None = None) -> "Taxonomy":
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

    def fit_embeddings(self, embeddings: np.ndarray, labels: Sequence[str],
                       names: Sequence[str] | None = None) -> "Taxonomy":
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
    def from_folders(cls, root: str | Path, detector: Any = None, **settings: Any) -> "Taxonomy":
        """Learn from a folder per type.

        Layouts: MVTec (``root/test/<type>/*`` with masks ``root/ground_truth/<type>/<stem>_mask.png``; a
        ``good`` folder is ignored) or plain (``root/<type>/*`` with masks in ``root/ground_truth/<type>/``,
        ``root/<type>/masks/`` or next to the image as ``<stem>_mask.png``). An image without a mask stands
        for its whole self.

        With a fitted ``detector``, each example also counts as seen through it: the strongest region the
        detector outlines in it (when it calls the example anomalous) is a second example of the type. New
        regions will come from that detector, and its outlines are wider and blurrier than drawn masks: on
        magnetic tile (5 examples per type, seeds 0-4) a taxonomy from drawn masks alone named 0.37 of the
        detector's regions right, from both views 0.63 (bench/defect_types_magnetic_tile.py).
        """
        examples = folder_examples(root)
        if not examples:
            raise FileNotFoundError(f"no labelled example images found under {root}")
        taxonomy = cls(**settings)
        names: list[str] = []

        def triples():
            for path, mask_path, label in examples:
                image = read_image(path)
                mask = read_mask(mask_path, image.shape[:2]) if mask_path is not None else None
                names.append(str(path))
                yield image, mask, label
                outlined = strongest_region(detector, image) if detector is not None else None
                if outlined is not None:
                    names.append(f"{path} (detector region)")
                    yield image, outlined, label

        vectors, labels = [], []
        for image, mask, label in triples():
            vectors.append(taxonomy.embed(image, mask))
            labels.append(label)
        return taxonomy.fit_embeddings(np.stack(vectors), labels, names)

    # -- classification ------------------------------------------------------------------------------------------
    def _distances(self, vector: np.ndarray, bank: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        out = {}
        for t in sorted(set(labels.tolist())):
            members = bank[labels == t]
            if self.method == "prototype":   # "logistic" measures "unknown" with the k-NN distances
                out[t] = float(np.linalg.norm(members.mean(axis=0) - vector))
            else:
                d = np.sort(np.linalg.norm(members - vector, axis=1))
                out[t] = float(d[:max(1, min(self.k, len(d)))].mean())
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
        return {"format_version": FORMAT_VERSION, "method": self.method, "k": self.k,
                "radius_factor": self.radius_factor, "temperature_setting": self.temperature_setting,
                "temperature": self.temperature, "backbone": self.backbone, "layers": list(self.layers),
                "crop_size": self.crop_size, "labels": self.labels, "names": self.names, "radii": self.radii}

    def save(self, path: str | Path) -> Path:
        """Write ``path/taxonomy.json`` and ``path/embeddings.safetensors``; returns the folder."""
        from safetensors.numpy import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": np.ascontiguousarray(self.embeddings, np.float32)},
                  str(folder / "embeddings.safetensors"))
        (folder / "taxonomy.json").write_text(json.dumps(self.config(), indent=2))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> "Taxonomy":
        from safetensors.numpy import load_file

        folder = Path(path)
        cfg = json.loads((folder / "taxonomy.json").read_text())
        taxonomy = cls(method=cfg["method"], k=cfg["k"], radius_factor=cfg["radius_factor"],
                       temperature=cfg.get("temperature_setting"), backbone=cfg["backbone"],
                       layers=cfg["layers"], crop_size=cfg["crop_size"])
        taxonomy.embeddings = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
        taxonomy.labels, taxonomy.names = list(cfg["labels"]), list(cfg.get("names", []))
        taxonomy.radii = {k: float(v) for k, v in cfg["radii"].items()}
        taxonomy.temperature = float(cfg["temperature"])
        taxonomy._fit_classifier()
        return taxonomy

    @staticmethod
    def is_saved(path: str | Path) -> bool:
        return (Path(path) / "taxonomy.json").is_file()

    def with_method(self, method: str, k: int | None = None) -> "Taxonomy":
        """A copy using ``method`` (and ``k``) on the same example vectors, radii relearned."""
        other = Taxonomy(method=method, k=self.k if k is None else k, radius_factor=self.radius_factor,
                         temperature=self.temperature_setting, backbone=self.backbone, layers=self.layers,
                         crop_size=self.crop_size)
        return other.fit_embeddings(self.embeddings, self.labels, self.names)

    def __repr__(self) -> str:
        counts = {t: self.labels.count(t) for t in self.types}
        return f"Taxonomy(method={self.method!r}, k={self.k}, types={counts})"


def region_masks(prediction: Any, findings: Any) -> list[tuple[int, np.ndarray]]:
    """``(region index, bool mask)`` for each region of ``findings`` (all of a region's parts), from the label
    image the findings were measured on; findings read back without it fall back to each region's box."""
    out = []
    for region in findings.regions:
        if getattr(findings, "labels", None) is not None:
            out.append((region.index, findings.region_mask(region)))
            continue
        x0, y0, x1, y1 = region.box
        region_mask = np.zeros(np.asarray(prediction.mask).shape[:2], dtype=bool)
        region_mask[y0:y1, x0:x1] = True
        out.append((region.index, region_mask))
    return out


def strongest_region(detector: Any, image: np.ndarray) -> np.ndarray | None:
    """Mask of the strongest region ``detector`` outlines in ``image``, or None when it calls the image normal."""
    from anomalens.postprocessing.findings import extract_findings

    findings = extract_findings(detector.predict(image), image)
    return findings.region_mask(findings.regions[0]) if findings.regions else None


def load_taxonomy(path: str | Path, save_to: str | Path | None = None, detector: Any = None) -> Taxonomy:
    """A saved taxonomy (``taxonomy.json``), or one learned from the folder of labelled examples at ``path``
    (with ``detector``: its regions of the examples too, see :meth:`Taxonomy.from_folders`); saved to
    ``save_to`` when given."""
    taxonomy = Taxonomy.load(path) if Taxonomy.is_saved(path) else Taxonomy.from_folders(path, detector=detector)
    if save_to is not None:
        taxonomy.save(save_to)
    return taxonomy


__all__ = ["LAYERS", "Taxonomy", "UNKNOWN", "folder_examples", "get_extractor", "load_taxonomy", "region_embedding",
           "region_masks", "strongest_region",
           "shape_descriptors"]
