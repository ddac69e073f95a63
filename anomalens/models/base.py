"""The detector protocol and the machinery every detector shares.

A detector learns from normal images only. Everything that does not depend on the model itself lives here:
turning an image into network-sized views (whole image or tiles of a large frame), turning the network's
score maps back into one map at the input resolution, the verdict from the stored thresholds, and saving
and loading without pickle (settings in JSON, tensors in safetensors).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from anomalens.data.scale import DEFAULT_PIXEL_BUDGET, WorkingScale, choose_working_scale
from anomalens.data.tiling import Tile, stitch_maps, tile_grid
from anomalens.extras import requires_extra
from anomalens.models.device import select_device
from anomalens.models.onnx_runtime import (
    ONNX_FILE,
    OPSET,
    OnnxScorer,
    matching_scorer,
    onnx_available,
    onnx_graph,
    write_whole,
)
from anomalens.postprocessing.outline import OUTLINE_LEVEL, outline_mask
from anomalens.types import Prediction, Thresholds

if TYPE_CHECKING:
    from anomalens.models.versions import Cause

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
STATE_FILE = "state.safetensors"
# how many of the first training images set the working scale (their median shape)
SCALE_SAMPLE = 32
# settings that say where a model runs, not what it computes: the same files loaded elsewhere export the same graph
RUN_ONLY_PARAMS = ("device", "progress", "batch_size")

logger = logging.getLogger(__name__)


def flush_denormals() -> None:
    """Treat float32 denormals as zero. Trained ReLU networks produce many tiny activations, and CPUs handle
    denormal arithmetic in microcode, which made an EfficientAD forward pass several times slower.
    The values involved are below 1e-38, far beneath anything an anomaly map can resolve.

    The setting belongs to the calling thread and is inherited by the threads it creates later, such as the
    OpenMP workers torch starts at the thread's first parallel operation. So every entry where a detector starts
    torch work (fit, load, scoring; the taxonomy's region embeddings) calls this first, in the calling thread:
    nothing changes at import, and the workers of a thread that runs a detector inherit it."""
    torch.set_flush_denormal(True)


@runtime_checkable
class Detector(Protocol):
    """What the CLI, evaluation and service rely on, whatever the model."""

    name: ClassVar[str]

    def fit(self, images: Iterable[np.ndarray]) -> Detector: ...

    def predict(self, image: np.ndarray) -> Prediction: ...

    def save(self, directory: str | Path, cause: Cause = "fit", by: str = "anomalens") -> Path: ...

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> Detector: ...


class NotFittedError(RuntimeError):
    """Raised when a detector is used before ``fit``."""


@dataclass(frozen=True)
class View:
    """One network-sized input cut from an image: the whole image, or one tile of a large frame."""

    tile: Tile
    pixels: np.ndarray  # float32 HxWx3 at the network input size
    frame: tuple[int, int]  # height and width of the image the view was cut from

    def patch_positions(self, rows: int, cols: int) -> torch.Tensor:
        """[rows*cols, 2] centres of a rows x cols grid over the view, as (y, x) fractions of the whole image."""
        ys = self.tile.y0 + (torch.arange(rows, dtype=torch.float32) + 0.5) * self.tile.height / rows
        xs = self.tile.x0 + (torch.arange(cols, dtype=torch.float32) + 0.5) * self.tile.width / cols
        grid = torch.stack(torch.meshgrid(ys / self.frame[0], xs / self.frame[1], indexing="ij"), dim=-1)
        return grid.reshape(-1, 2)


class BaseDetector(ABC):
    """Shared behaviour; subclasses set hyper-parameters in ``__init__`` and learned state in ``fit``.

    Subclasses implement ``fit`` (which passes its images through ``_start_fit`` first: that sets the
    working scale, ``working_scale_``, from the images unless ``image_size`` is given), ``_score_views`` and
    the two ``_state`` hooks. Hyper-parameters must be stored under the same names as the ``__init__``
    arguments (as in scikit-learn), so that ``get_params`` and ``load`` can rebuild the object from JSON.
    """

    name: ClassVar[str] = ""
    # Post-processing, not learned or saved: how far above the image's typical level a pixel must score to be
    # outlined (see anomalens.postprocessing.outline; 0 outlines everything above the pixel threshold).
    outline_level: float = OUTLINE_LEVEL

    def __init__(
        self,
        image_size: int | None = 256,
        tile_size: int | None = None,
        tile_overlap: int = 32,
        pixel_budget: int = DEFAULT_PIXEL_BUDGET,
        score_top_fraction: float = 0.05,
        batch_size: int = 8,
        seed: int = 0,
        progress: bool = False,
        device: str = "auto",
    ):
        self.image_size = image_size
        self.pixel_budget = pixel_budget
        self.score_top_fraction = score_top_fraction
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress
        self.device = device
        self.thresholds_: Thresholds | None = None
        self.working_scale_: WorkingScale | None = None
        self.onnx_scorer_: OnnxScorer | None = None
        self.half_precision_ = False

    @property
    def torch_device(self) -> torch.device:
        return select_device(self.device)

    # -- hyper-parameters -------------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        import inspect

        names: list[str] = []
        for klass in cls.__mro__:
            if "__init__" in klass.__dict__ and issubclass(klass, BaseDetector):
                sig = inspect.signature(klass.__init__)
                names += [p for p in sig.parameters if p not in ("self", "args", "kwargs") and p not in names]
        return names

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    # -- views ----------------------------------------------------------------------------------------------
    def _fitted_scale(self) -> WorkingScale:
        if self.working_scale_ is None:
            raise NotFittedError(f"{type(self).__name__} has no working scale yet: call fit() or load() first")
        return self.working_scale_

    @property
    def input_size(self) -> int:
        """The network input side in pixels (the working scale's, once fitted)."""
        return self._fitted_scale().image_size

    def _start_fit(self, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Set the working scale from the first training images; the images again, none lost."""
        flush_denormals()
        self.onnx_scorer_ = None  # a graph exported before this fit computes the old model
        iterator = iter(images)
        if self.image_size is not None:
            self.working_scale_ = WorkingScale(self.image_size, self.tile_size, (0, 0), "settings")
            return iterator
        first = list(itertools.islice(iterator, SCALE_SAMPLE))
        if not first:
            raise ValueError("fit needs at least one normal image")
        self.working_scale_ = choose_working_scale([image.shape for image in first], self.pixel_budget, self.tile_size)
        return itertools.chain(first, iterator)

    def _views(self, image: np.ndarray) -> list[View]:
        scale = self._fitted_scale()
        height, width = image.shape[:2]
        tiles = (
            tile_grid(height, width, scale.tile_size, self.tile_overlap)
            if scale.tile_size
            else [Tile(0, 0, height, width)]
        )
        size = (scale.image_size, scale.image_size)
        return [
            View(
                t,
                cv2.resize(image[t.y0 : t.y1, t.x0 : t.x1], size[::-1], interpolation=cv2.INTER_AREA),
                (height, width),
            )
            for t in tiles
        ]

    @staticmethod
    def _to_tensor(pixels: Sequence[np.ndarray]) -> torch.Tensor:
        """HxWx3 float arrays of one size -> a contiguous [B,3,H,W] batch."""
        return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()

    def _network_batch_size(self) -> int:
        """How many views go through the network at once; a detector may take fewer than ``batch_size`` where
        smaller batches run faster."""
        return self.batch_size

    def _batches(self, views: list[View]) -> Iterable[list[View]]:
        size = self._network_batch_size()
        for start in range(0, len(views), size):
            yield views[start : start + size]

    # -- prediction -------------------------------------------------------------------------------------------
    def view_scores(self, view_maps: torch.Tensor) -> torch.Tensor:
        """Image-level score of each [B,S,S] view map: the mean of its highest ``score_top_fraction`` pixels.

        A mean over the top pixels is steadier than the single maximum, which one noisy patch can set; a
        tiled frame scores as its worst tile, so a small defect is not diluted by a large frame.
        """
        flat = view_maps.flatten(1)
        if self.score_top_fraction <= 0:
            return flat.max(dim=1).values
        count = max(1, round(self.score_top_fraction * flat.shape[1]))
        return flat.topk(count, dim=1).values.mean(dim=1)

    def score_and_map(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        """Image score and the anomaly map at the input image's resolution (float32 HxW)."""
        return self.score_and_map_batch([image])[0]

    def score_and_map_batch(self, images: Sequence[np.ndarray]) -> list[tuple[float, np.ndarray]]:
        """``score_and_map`` for several images, their views run through the network in shared batches."""
        self._check_fitted()
        if not images:
            return []
        flush_denormals()
        views = [self._views(image) for image in images]
        flat = [view for image_views in views for view in image_views]
        maps: list[torch.Tensor] = []
        with torch.inference_mode():
            for batch in self._batches(flat):
                maps.append(self._score_view_batch(self._to_tensor([v.pixels for v in batch]), batch))
        all_maps = torch.cat(maps)
        results, start = [], 0
        for image, image_views in zip(images, views):
            view_maps = all_maps[start : start + len(image_views)]
            start += len(image_views)
            amap = self._image_map(list(view_maps.numpy()), image_views, image.shape[:2])
            # a score of 0 top fraction is the map's maximum, taken on the map the user sees
            score = float(amap.max()) if self.score_top_fraction <= 0 else float(self.view_scores(view_maps).max())
            results.append((score, amap))
        return results

    @staticmethod
    def _image_map(view_maps: list[np.ndarray], views: list[View], shape: tuple[int, ...]) -> np.ndarray:
        height, width = shape[:2]
        if len(views) == 1:
            return cv2.resize(view_maps[0], (width, height), interpolation=cv2.INTER_LINEAR)
        return stitch_maps(view_maps, [v.tile for v in views], (height, width))

    def anomaly_map(self, image: np.ndarray) -> np.ndarray:
        """Anomaly map at the input image's resolution (float32 HxW)."""
        return self.score_and_map(image)[1]

    def predict(self, image: np.ndarray) -> Prediction:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Predictions for several images at once (their views share network batches: faster on a GPU)."""
        results = self.score_and_map_batch(images)
        return [self._decide(score, amap) for score, amap in results]

    def _decide(self, score: float, amap: np.ndarray) -> Prediction:
        assert self.thresholds_ is not None
        anomalous = score >= self.thresholds_.image
        mask = (
            outline_mask(amap, self.thresholds_.pixel, self.outline_level)
            if anomalous
            else np.zeros(amap.shape, dtype=bool)
        )
        return Prediction(score, amap, anomalous, mask, self.thresholds_)

    # -- runtimes -------------------------------------------------------------------------------------------
    @abstractmethod
    def inference_module(self) -> torch.nn.Module:
        """The network behind ``_score_views`` as one module ([B,3,S,S] -> [B,S,S]), for export."""

    @property
    def runtime(self) -> str:
        """What computes the maps now: "onnx" (ONNX Runtime), "fp16" (PyTorch in float16) or "torch"."""
        if self.onnx_scorer_ is not None and self._graph_scores():
            return "onnx"
        return "fp16" if self.half_precision_ else "torch"

    def _graph_scores(self) -> bool:
        """Whether the exported graph computes this model's maps; a detector whose maps also need what the graph
        does not know (where each view lies, for PatchCore's learned patches) says no while that is so."""
        return True

    def state_fingerprint(self) -> str:
        """A digest of everything the exported graph is made from: the settings, the working scale and the learned
        tensors, with the package version and ONNX opset that export it. Equal fingerprints, equal graphs."""
        import anomalens  # the package, complete by the time a detector exists

        self._check_fitted()
        params = {k: v for k, v in self.get_params().items() if k not in RUN_ONLY_PARAMS}
        settings = [anomalens.__version__, OPSET, self.name, params, self._fitted_scale().to_dict()]
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self._state_tensors().items()):
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name} {flat.dtype} {tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def use_onnx(self, model_dir: str | Path, threads: int | None = None) -> BaseDetector:
        """Predict through ONNX Runtime from ``model_dir/model.onnx``. The graph there is used only when it reads
        and was exported from this detector's state (:meth:`state_fingerprint`); else it is exported again and
        replaced whole, so that two processes exporting at once leave one complete graph. A folder that cannot
        be written to only costs the saved copy: the new graph then runs from memory."""
        path = Path(model_dir) / ONNX_FILE
        with requires_extra("the ONNX runtime (--runtime onnx)"):
            # both packages: one runs the graph, the other exports it again when it is stale
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401

            fingerprint = self.state_fingerprint()
            scorer = matching_scorer(path, fingerprint, threads)
            if scorer is None:
                graph = onnx_graph(self.inference_module(), self.input_size, fingerprint)
                try:
                    write_whole(graph, path)
                except OSError as error:
                    logger.warning("the ONNX graph runs from memory: it cannot be saved as %s (%s)", path, error)
                scorer = OnnxScorer(graph, threads)
        self.onnx_scorer_ = scorer
        return self

    def use_fast_runtime(self, model_dir: str | Path) -> BaseDetector:
        """The runtime "auto": ONNX Runtime where its extra is installed and the network runs on the CPU, where it
        was measured faster than PyTorch for both detectors (bench/results/runtime_choice.md); PyTorch otherwise,
        and also when the graph cannot be exported or run, with a warning that says why."""
        if self.torch_device.type != "cpu" or not self._graph_scores() or not onnx_available():
            return self
        try:
            return self.use_onnx(model_dir)
        except Exception as error:  # whatever the exporter or the runtime raise, PyTorch still predicts
            logger.warning(
                "%s runs in PyTorch: ONNX Runtime cannot run it (%s: %s)", model_dir, type(error).__name__, error
            )
            return self

    def use_half_precision(self) -> BaseDetector:
        """Run the network in float16 autocast (CUDA only), for throughput on GPUs with fast half precision
        (``bench/predict_throughput.py --runtime fp16`` measures it); autocast keeps reductions and
        normalisations in float32."""
        if self.torch_device.type != "cuda":
            raise ValueError("half precision needs a CUDA device (use --runtime onnx for a fast CPU path)")
        self.half_precision_ = True
        return self

    def _check_fitted(self) -> None:
        if self.thresholds_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() or load() first")

    # -- persistence ------------------------------------------------------------------------------------------
    def save(self, directory: str | Path, cause: Cause = "fit", by: str = "anomalens") -> Path:
        """Save into ``directory``. Where it holds no model yet: the files of one model (:meth:`write_files`),
        which count as its version 1. Where it holds one: a new version of it, made current and recorded with
        its ``cause`` and who made it (``by``; see :class:`anomalens.models.versions.ModelVersions`)."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            return self.write_files(directory)
        from anomalens.models.versions import ModelVersions  # it builds on this module

        ModelVersions(directory).add(self, cause, by)
        return directory

    def write_files(self, directory: str | Path) -> Path:
        """Write ``config.json`` (settings, thresholds) and ``state.safetensors`` (learned tensors)."""
        self._check_fitted()
        assert self.thresholds_ is not None
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "format_version": FORMAT_VERSION,
            "detector": self.name,
            "params": self.get_params(),
            "working_scale": self._fitted_scale().to_dict(),
            "thresholds": self.thresholds_.to_dict(),
            "info": self._info(),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        tensors = {k: v.detach().contiguous().cpu() for k, v in self._state_tensors().items()}
        save_file(tensors, str(directory / STATE_FILE))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> BaseDetector:
        """Rebuild a saved detector, on ``device`` if given (else the saved setting). Reads JSON and
        safetensors only: no code from the file is executed."""
        config = read_config(directory)
        if config["detector"] != cls.name:
            raise ValueError(f"{directory} holds a {config['detector']!r} model, not {cls.name!r}")
        params = {k: v for k, v in config["params"].items() if k in cls._param_names()}
        if device is not None:
            params["device"] = device
        flush_denormals()  # before _load_state builds the network
        detector = cls(**params)
        detector.working_scale_ = (
            WorkingScale.from_dict(config["working_scale"])
            if "working_scale" in config
            else WorkingScale(params.get("image_size") or 256, params.get("tile_size"), (0, 0), "settings")
        )
        detector._load_state(load_file(str(Path(directory) / STATE_FILE)), config.get("info", {}))
        detector.thresholds_ = Thresholds.from_dict(config["thresholds"])
        return detector

    def _info(self) -> dict[str, Any]:
        """Learned facts worth keeping in JSON beside the tensors (counts, timings)."""
        return {}

    def _score_view_batch(self, pixels: torch.Tensor, views: Sequence[View]) -> torch.Tensor:
        """[B,S,S] maps on the CPU of a batch of ``views`` (their ``pixels`` as [B,3,S,S]), through ONNX Runtime
        when it is in use, else ``_score_views``. A detector whose maps also depend on where each view lies in its
        image (PatchCore with learned marks) overrides it."""
        if self.onnx_scorer_ is not None:
            return self.onnx_scorer_(pixels)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.half_precision_):
            return self._score_views(pixels.to(self.torch_device)).float().cpu()

    # -- what each detector implements ----------------------------------------------------------------------
    @abstractmethod
    def fit(self, images: Iterable[np.ndarray]) -> BaseDetector:
        """Learn from normal images only; set the state and ``thresholds_``; return ``self``."""

    @abstractmethod
    def _score_views(self, batch: torch.Tensor) -> torch.Tensor:
        """Map a [B,3,S,S] batch in [0,1] to [B,S,S] anomaly maps at the network input size."""

    @abstractmethod
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """Learned tensors to save."""

    @abstractmethod
    def _load_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        """Restore what ``_state_tensors`` saved."""


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no model found in {directory} (missing {CONFIG_FILE})")
    config = json.loads(path.read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported model format version {config.get('format_version')}")
    return config
