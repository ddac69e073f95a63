"""The EfficientAD training loop, kept apart from the networks (``torch_model.py``) and the detector.

Each step trains on random crops: a PDN output cell sees only a 33-pixel patch and the network has no
padding, so the student's output on a crop is exactly the whole view's output over the crop's cells, learned
at a fraction of the cost. The frozen teacher's maps of the training views are computed once (half
precision) and cropped to match; the autoencoder needs the whole view. With the autoencoder, inputs get a
random colour jitter while the targets stay the teacher's maps of the unjittered views, so neither network
learns to follow lighting changes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from anomalens.data.generic import random_generic_crops
from anomalens.models.efficientad.pdn import STRIDE, pdn_grid
from anomalens.models.efficientad.torch_model import EfficientADModel
from anomalens.progress import track

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"


@dataclass
class TrainingSettings:
    steps: int = 2000
    max_seconds: float | None = None
    batch_size: int = 8
    crop: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    hard_quantile: float = 0.999
    penalty_weight: float = 1.0
    patience: int | None = None  # evaluations without improvement before stopping early
    eval_every: int = 100
    checkpoint_every: int = 200
    seed: int = 0


@dataclass
class TrainingReport:
    steps: int
    seconds: float
    stopped_early: bool
    resumed_from: int
    final_loss: float
    validation_losses: list[float]


def hard_feature_loss(teacher: torch.Tensor, student: torch.Tensor, quantile: float) -> torch.Tensor:
    """Mean of the squared differences at or above their ``quantile``: the student is trained only where it
    is still furthest from the teacher (the paper's hard feature loss), not where it already matches."""
    distances = (teacher - student).pow(2)
    flat = distances.flatten()
    if flat.numel() > 1_000_000:  # torch.quantile's input limit; a random sample estimates it well
        flat = flat[torch.randint(flat.numel(), (1_000_000,), device=flat.device)]
    cut = torch.quantile(flat.detach(), quantile)
    return distances[distances >= cut].mean()


def colour_jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation (each within +-20 %) per image of a [B,3,H,W] batch."""
    batch = images.shape[0]

    def factors() -> torch.Tensor:
        return (0.8 + 0.4 * torch.rand(batch, 1, 1, 1, generator=generator)).to(images.device)

    images = images * factors()
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factors() + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * factors() + grey
    return images.clamp(0.0, 1.0)


def crop_offset(rng: np.random.Generator, size: int, crop: int) -> int:
    """A random crop start on the PDN's 4-pixel grid."""
    return int(rng.integers((size - crop) // STRIDE + 1)) * STRIDE


class Trainer:
    """Trains ``model``'s student (and autoencoder) on normal views; resumable from ``checkpoint_dir``."""

    def __init__(
        self,
        model: EfficientADModel,
        settings: TrainingSettings,
        device: torch.device,
        checkpoint_dir: str | Path | None = None,
        progress: bool = False,
    ):
        self.model = model
        self.settings = settings
        self.device = device
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.progress = progress
        parameters = list(model.student.parameters())
        if model.autoencoder is not None:
            parameters += list(model.autoencoder.parameters())
        self.optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        # the paper's schedule: the learning rate drops tenfold for the last 5 % of the steps
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, max(1, int(0.95 * settings.steps)), 0.1)

    def train(
        self, views: np.ndarray, validation: np.ndarray, draw_weights: np.ndarray | None = None
    ) -> TrainingReport:
        """``views``: [N,S,S,3] normal training views; ``validation``: held-back normal views for stopping;
        ``draw_weights``: each view's probability of being drawn into a batch (by default all the same)."""
        settings, model = self.settings, self.model
        if pdn_grid(min(settings.crop, views.shape[1])) < 1:
            raise ValueError(f"training crop {settings.crop} is too small: at least 36 pixels")
        start_step = self._resume()
        images = torch.from_numpy(views).permute(0, 3, 1, 2)
        teacher_maps = self.teacher_maps(images)
        started = time.perf_counter()
        best, stale, losses, stopped_early, loss = float("inf"), 0, [], False, float("nan")
        model.student.train()
        if model.autoencoder is not None:
            model.autoencoder.train()
        steps = range(start_step, settings.steps)
        for step in track(steps, "training EfficientAD", enabled=self.progress):
            loss = self._step(images, teacher_maps, step, draw_weights)
            done = step + 1
            if self.checkpoint_dir and (done % settings.checkpoint_every == 0 or done == settings.steps):
                self.save_checkpoint(done)
            if settings.patience is not None and done % settings.eval_every == 0 and len(validation):
                losses.append(self.validation_loss(validation))
                best, stale = (losses[-1], 0) if losses[-1] < best else (best, stale + 1)
                if stale >= settings.patience:
                    stopped_early = True
                    break
            if settings.max_seconds is not None and time.perf_counter() - started > settings.max_seconds:
                stopped_early = True
                break
        else:
            done = max(start_step, settings.steps)
        model.eval()
        if self.checkpoint_dir and stopped_early:
            self.save_checkpoint(done)
        return TrainingReport(done, time.perf_counter() - started, stopped_early, start_step, loss, losses)

    def teacher_maps(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's normalised maps of all training views, [N,D,g,g] in half precision."""
        with torch.inference_mode():
            maps = [
                self.model.teacher(images[i : i + 16].to(self.device)).half().cpu() for i in range(0, len(images), 16)
            ]
        return torch.cat(maps)

    def _step(
        self, images: torch.Tensor, teacher_maps: torch.Tensor, step: int, draw_weights: np.ndarray | None
    ) -> float:
        settings, model = self.settings, self.model
        # randomness derived from (seed, step), so a resumed run draws what an uninterrupted one would have
        rng = np.random.default_rng([settings.seed, step])
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        torch.manual_seed(settings.seed * 1_000_003 + step)
        size = images.shape[-1]
        chosen = torch.from_numpy(rng.choice(len(images), size=settings.batch_size, p=draw_weights))
        batch = images[chosen].to(self.device)
        teacher = teacher_maps[chosen].to(self.device).float()
        if model.autoencoder is not None:
            batch = colour_jitter(batch, generator)
        crop = min(settings.crop, size)
        y0, x0 = (crop_offset(rng, size, crop) for _ in range(2))
        cells = pdn_grid(crop)
        gy, gx = y0 // STRIDE, x0 // STRIDE

        def cropped(grid: torch.Tensor) -> torch.Tensor:
            return grid[..., gy : gy + cells, gx : gx + cells]

        student = model.student(batch[..., y0 : y0 + crop, x0 : x0 + crop])
        channels = model.channels
        loss = hard_feature_loss(cropped(teacher), student[:, :channels], settings.hard_quantile)
        generic = torch.from_numpy(random_generic_crops(rng, max(1, settings.batch_size // 4), crop))
        penalty = model.student(generic.permute(0, 3, 1, 2).to(self.device))[:, :channels].pow(2).mean()
        loss = loss + settings.penalty_weight * penalty
        if model.autoencoder is not None:
            reconstruction = model.autoencoder(batch)
            loss = loss + (teacher - reconstruction).pow(2).mean()
            loss = loss + (cropped(reconstruction).detach() - student[:, channels:]).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def validation_loss(self, validation: np.ndarray) -> float:
        """Mean student-teacher distance on held-back normal views (what early stopping watches)."""
        model = self.model
        model.eval()
        with torch.inference_mode():
            local, _ = model.raw_maps(torch.from_numpy(validation).permute(0, 3, 1, 2).to(self.device))
        model.student.train()
        if model.autoencoder is not None:
            model.autoencoder.train()
        return float(local.mean())

    # -- checkpoints: safetensors + JSON, no pickle ---------------------------------------------------------
    def save_checkpoint(self, step: int) -> None:
        assert self.checkpoint_dir is not None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"student.{k}": v for k, v in self.model.student.state_dict().items()}
        if self.model.autoencoder is not None:
            tensors.update({f"autoencoder.{k}": v for k, v in self.model.autoencoder.state_dict().items()})
        optimizer = self.optimizer.state_dict()
        for index, state in optimizer["state"].items():
            tensors.update({f"optimizer.{index}.{k}": torch.as_tensor(v) for k, v in state.items()})
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(self.checkpoint_dir / CHECKPOINT_TENSORS),
        )
        meta = {
            "step": step,
            "settings": asdict(self.settings),
            "param_groups": optimizer["param_groups"],
            "scheduler": self.scheduler.state_dict(),
        }
        (self.checkpoint_dir / CHECKPOINT_STATE).write_text(json.dumps(meta, indent=2))

    def _resume(self) -> int:
        """Load the checkpoint when there is one for the same settings; the step to go on from."""
        if self.checkpoint_dir is None or not (self.checkpoint_dir / CHECKPOINT_STATE).is_file():
            return 0
        meta: dict[str, Any] = json.loads((self.checkpoint_dir / CHECKPOINT_STATE).read_text())
        ignore = {"steps", "max_seconds", "patience", "checkpoint_every", "eval_every"}
        saved = {k: v for k, v in meta["settings"].items() if k not in ignore}
        if saved != {k: v for k, v in asdict(self.settings).items() if k not in ignore}:
            raise ValueError(
                f"the checkpoint in {self.checkpoint_dir} was made with other training settings; "
                "use another --checkpoint-dir or delete it"
            )
        tensors = load_file(str(self.checkpoint_dir / CHECKPOINT_TENSORS))

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.model.student.load_state_dict(part("student."))
        if self.model.autoencoder is not None:
            self.model.autoencoder.load_state_dict(part("autoencoder."))
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in part("optimizer.").items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.scheduler.load_state_dict(meta["scheduler"])
        return int(meta["step"])
