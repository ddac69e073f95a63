"""EfficientAD detector: student-teacher (+ autoencoder) discrepancy, trained on normal images only.

Fitting holds back a share of the normal images, trains the student (and autoencoder) on the rest, sets the
map normalisation from quantiles of the held-back images' maps (the paper's 0.9 and 0.995, so the local and
global maps meet on one scale), and calibrates the thresholds on the held-back images with and without
simulated defects (``models/calibration.py``), like every detector here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from anomalens.data.scale import DEFAULT_PIXEL_BUDGET
from anomalens.models.base import BaseDetector, flush_denormals
from anomalens.models.calibration import calibrate
from anomalens.models.efficientad.torch_model import EfficientADModel
from anomalens.models.efficientad.training import Trainer, TrainingReport, TrainingSettings
from anomalens.types import Thresholds

MAP_QUANTILES = (0.9, 0.995)
MIN_IMAGES_TO_HOLD_BACK = 4
# a fine-tune's default budget, and the share of its training draws that the images declared normal make up, so
# that a short run sees each of them many times
FINE_TUNE_STEPS = 500
FINE_TUNE_SECONDS = 120.0
FINE_TUNE_EXTRA_SHARE = 0.25


@dataclass(frozen=True)
class _Split:
    train: np.ndarray
    validation: np.ndarray
    owners: np.ndarray  # the validation image of each validation view
    held_back: int  # how many images were held back (0: validation on the training images)


class EfficientAD(BaseDetector):
    """EfficientAD (Batzner et al., 2024) with a pretrained EfficientNet-Lite teacher.

    Parameters
    ----------
    size: student PDN, "small" or "medium" as in the paper, or "cpu" (small at half width, for 2-core PCs).
    autoencoder: add the autoencoder and its global map for logical anomalies (``--autoencoder``). Off by
        default: within a CPU training budget it stays undertrained and lowers image AUROC
        (bench/results/efficientad_magnetic_tile.md).
    backbone, layers: the pretrained teacher's features (channels concatenated on the PDN grid).
    train_steps, max_train_seconds, train_batch_size, train_crop, learning_rate: the training budget; the
        run stops at whichever of steps and seconds comes first (by default 10 minutes, so that a fit on a
        busy CPU ends in a known time).
    hard_quantile: the student learns only from feature distances above this quantile (the paper's 0.999).
    patience: stop early after this many validation checks (every 100 steps) without improvement.
    checkpoint_dir: save the training state there every 200 steps and resume from it when present.
    validation_fraction: share of the normal images held back for map normalisation and thresholds.
    calibration, simulated_per_image, max_false_alarm_rate: the automatic thresholds (see ``calibration.py``).
    smoothing_sigma: Gaussian blur of the map at input resolution, in pixels.
    score_top_fraction: 0 scores an image by its map's maximum, as the paper does (on magnetic tile it ranked
        images better than the mean of the top 5 %, which suits PatchCore's smoother maps).
    train_batch_size: 2 by default: more, smaller steps learned more in the same time on a 2-core CPU.
    """

    name = "efficientad"
    # the suite's validation chose 0.75 on PatchCore's maps (bench/results/outline_validation.md); EfficientAD's
    # sharper maps keep the half maximum until they are measured the same way
    outline_level = 0.5

    def __init__(
        self,
        size: str = "small",
        autoencoder: bool = False,
        backbone: str = "efficientnet_lite0",
        layers: tuple[str, ...] = ("blocks.4", "blocks.10"),
        image_size: int = 256,
        train_steps: int = 2000,
        max_train_seconds: float | None = 600.0,
        train_batch_size: int = 2,
        train_crop: int = 128,
        learning_rate: float = 1e-3,
        hard_quantile: float = 0.999,
        patience: int | None = None,
        checkpoint_dir: str | None = None,
        validation_fraction: float = 0.1,
        calibration: str = "simulated",
        simulated_per_image: int = 2,
        max_false_alarm_rate: float = 0.05,
        smoothing_sigma: float = 2.0,
        tile_size: int | None = None,
        tile_overlap: int = 32,
        pixel_budget: int = DEFAULT_PIXEL_BUDGET,
        score_top_fraction: float = 0.0,
        batch_size: int = 8,
        seed: int = 0,
        progress: bool = False,
        device: str = "auto",
    ):
        super().__init__(
            image_size=image_size,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            pixel_budget=pixel_budget,
            score_top_fraction=score_top_fraction,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            device=device,
        )
        self.size = size
        self.autoencoder = autoencoder
        self.backbone = backbone
        self.layers = tuple(layers)
        self.train_steps = train_steps
        self.max_train_seconds = max_train_seconds
        self.train_batch_size = train_batch_size
        self.train_crop = train_crop
        self.learning_rate = learning_rate
        self.hard_quantile = hard_quantile
        self.patience = patience
        self.checkpoint_dir = checkpoint_dir
        self.validation_fraction = validation_fraction
        self.calibration = calibration
        self.simulated_per_image = simulated_per_image
        self.max_false_alarm_rate = max_false_alarm_rate
        self.smoothing_sigma = smoothing_sigma
        self.model_: EfficientADModel | None = None
        self.info_: dict[str, Any] = {}

    def _build_model(self) -> EfficientADModel:
        return (
            EfficientADModel(
                self.size, self.backbone, self.layers, self.input_size, self.autoencoder, self.smoothing_sigma
            )
            .to(self.torch_device)
            .eval()
        )

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(self, images: Iterable[np.ndarray]) -> EfficientAD:
        torch.manual_seed(self.seed)
        per_image = [[view.pixels for view in self._views(image)] for image in self._start_fit(images)]
        if not per_image:
            raise ValueError("fit needs at least one normal image")
        split = self._split(per_image)
        self.model_ = self._build_model()
        self._set_teacher_statistics(split.train)
        settings = self._training_settings(self.train_steps, self.max_train_seconds)
        report = Trainer(self.model_, settings, self.torch_device, self.checkpoint_dir, self.progress).train(
            split.train, split.validation
        )
        self._set_map_quantiles(split.validation)
        self.thresholds_ = self._calibrate(split.validation, split.owners)
        self.info_ = {
            "n_images": len(per_image),
            "n_training_views": len(split.train),
            "n_validation_images": split.held_back,
            "validation": "held-back images" if split.held_back else "training images (too few to hold back)",
            "training": {**asdict(report), "settings": asdict(settings)},
        }
        return self

    def fine_tune(
        self,
        normal_images: Iterable[np.ndarray],
        extra_images: Sequence[np.ndarray],
        steps: int = FINE_TUNE_STEPS,
        max_seconds: float | None = FINE_TUNE_SECONDS,
    ) -> TrainingReport:
        """Go on training the fitted student on ``normal_images`` and ``extra_images`` (images declared normal
        after the fit: always trained on, never held back, and drawn as ``FINE_TUNE_EXTRA_SHARE`` of the
        training samples), then set the map normalisation and thresholds on the held-back normal images as
        ``fit`` does. The teacher's statistics stay the fit's: they define what the student has learned."""
        self._check_fitted()
        assert self.model_ is not None
        flush_denormals()
        self.onnx_scorer_ = None  # a graph exported before this training computes the old student
        torch.manual_seed(self.seed)
        per_image = [[view.pixels for view in self._views(image)] for image in normal_images]
        if not per_image:
            raise ValueError("fine-tuning needs normal images too, or the student forgets what normal looks like")
        extra = [view.pixels for image in extra_images for view in self._views(image)]
        split = self._split(per_image)
        train = np.concatenate([split.train, np.stack(extra)]) if extra else split.train
        weights = np.ones(len(train))
        if extra:
            weights[len(split.train) :] = (
                FINE_TUNE_EXTRA_SHARE / (1 - FINE_TUNE_EXTRA_SHARE) * len(split.train) / len(extra)
            )
        settings = self._training_settings(steps, max_seconds)
        report = Trainer(self.model_, settings, self.torch_device, progress=self.progress).train(
            train, split.validation, weights / weights.sum()
        )
        self._set_map_quantiles(split.validation)
        self.thresholds_ = self._calibrate(split.validation, split.owners)
        record = {"n_images": len(per_image), "n_extra_images": len(extra_images), **asdict(report)}
        self.info_.setdefault("fine_tuning", []).append(record)
        return report

    def _training_settings(self, steps: int, max_seconds: float | None) -> TrainingSettings:
        return TrainingSettings(
            steps=steps,
            max_seconds=max_seconds,
            batch_size=self.train_batch_size,
            crop=self.train_crop,
            learning_rate=self.learning_rate,
            hard_quantile=self.hard_quantile,
            patience=self.patience,
            seed=self.seed,
        )

    def _split(self, per_image: list[list[np.ndarray]]) -> _Split:
        """Training views and held-back validation views (with the image of each) of the normal images."""
        held_back = sorted(self._held_back(len(per_image)))
        train = np.stack([v for i, views in enumerate(per_image) if i not in held_back for v in views])
        # validation units are whole images (all their tiles), as a frame is judged by its worst tile
        validation_images = [per_image[i] for i in held_back] if held_back else per_image
        validation = np.stack([v for views in validation_images for v in views])
        owners = np.repeat(np.arange(len(validation_images)), [len(views) for views in validation_images])
        return _Split(train, validation, owners, len(held_back))

    def _held_back(self, n_images: int) -> set[int]:
        """Every k-th image is held back (none when there are too few to spare)."""
        if n_images < MIN_IMAGES_TO_HOLD_BACK:
            return set()
        count = max(1, round(self.validation_fraction * n_images))
        return {int(i) for i in np.linspace(0, n_images - 1, count + 2)[1:-1].round()}

    def _batched(self, views: np.ndarray) -> Iterable[torch.Tensor]:
        for start in range(0, len(views), self.batch_size):
            yield self._to_tensor(list(views[start : start + self.batch_size])).to(self.torch_device)

    def _set_teacher_statistics(self, views: np.ndarray) -> None:
        """Per-channel mean and std of the teacher's features on the training views."""
        assert self.model_ is not None
        total, squares, count = 0.0, 0.0, 0
        with torch.inference_mode():
            for batch in self._batched(views):
                features = self.model_.teacher.raw(batch).double()
                total = total + features.sum(dim=(0, 2, 3))
                squares = squares + features.pow(2).sum(dim=(0, 2, 3))
                count += features.shape[0] * features.shape[2] * features.shape[3]
        mean = total / count
        std = (squares / count - mean.pow(2)).clamp_min(1e-12).sqrt()
        self.model_.teacher.mean.copy_(mean.float().view(1, -1, 1, 1))
        self.model_.teacher.std.copy_(std.float().view(1, -1, 1, 1))

    def _set_map_quantiles(self, validation: np.ndarray) -> None:
        assert self.model_ is not None
        local_maps, global_maps = [], []
        with torch.inference_mode():
            for batch in self._batched(validation):
                local, global_ = self.model_.raw_maps(batch)
                local_maps.append(local.cpu().numpy().ravel())
                if global_ is not None:
                    global_maps.append(global_.cpu().numpy().ravel())
        self.model_.local_quantiles.copy_(
            torch.from_numpy(np.quantile(np.concatenate(local_maps), MAP_QUANTILES).astype(np.float32))
        )
        if global_maps:
            self.model_.global_quantiles.copy_(
                torch.from_numpy(np.quantile(np.concatenate(global_maps), MAP_QUANTILES).astype(np.float32))
            )

    def _calibrate(self, validation: np.ndarray, owners: np.ndarray) -> Thresholds:
        """Thresholds from the held-back images (``owners``: the image of each validation view)."""
        assert self.model_ is not None
        model = self.model_
        members = {int(i): [int(v) for v in np.flatnonzero(owners == i)] for i in np.unique(owners)}

        def score(pixels: list[np.ndarray]) -> torch.Tensor:
            return torch.cat([model(batch) for batch in self._batched(np.stack(pixels))])

        return calibrate(
            list(members),
            lambda i: score([validation[v] for v in members[i]]),
            [(i, [validation[v] for v in views]) for i, views in members.items()],
            lambda i, pixels: score([pixels]),
            self.view_scores,
            self.calibration,
            self.simulated_per_image,
            self.max_false_alarm_rate,
            self.seed,
        )

    # -- inference and persistence -----------------------------------------------------------------------
    def _score_views(self, batch: torch.Tensor) -> torch.Tensor:
        assert self.model_ is not None
        return self.model_(batch)

    def inference_module(self) -> torch.nn.Module:
        self._check_fitted()
        assert self.model_ is not None
        return self.model_

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.model_ is not None
        # the teacher's backbone weights come from their package; only what was learned here is saved
        return {k: v for k, v in self.model_.state_dict().items() if not k.startswith("teacher.extractor.")}

    def _load_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        self.model_ = self._build_model()
        missing, unexpected = self.model_.load_state_dict(tensors, strict=False)
        missing = [k for k in missing if not k.startswith("teacher.extractor.")]
        if missing or unexpected:
            raise ValueError(
                f"saved EfficientAD state does not match the model: missing {missing}, unexpected {unexpected}"
            )
        self.model_.to(self.torch_device)
        self.info_ = info

    def _info(self) -> dict[str, Any]:
        return self.info_
