"""Options and argument types shared by several sub-commands, and what the commands read back from them."""

from __future__ import annotations

import argparse
import math
from typing import Any

from anomalens import api, engine
from anomalens.models import DEFAULT_RUNTIME, DETECTORS, RUNTIMES
from anomalens.models.device import DEVICE_CHOICES
from anomalens.models.efficientad.pdn import PDN_WIDTHS
from anomalens.models.patchcore.torch_model import PADDINGS

MODEL_PARAMS = (
    "backbone",
    "layers",
    "neighbourhood_padding",
    "feature_dims",
    "image_size",
    "tile_size",
    "pixel_budget",
    "max_false_alarm_rate",
    "tile_overlap",
    "coreset_ratio",
    "calibration",
    "size",
    "autoencoder",
    "train_steps",
    "max_train_seconds",
    "patience",
    "checkpoint_dir",
)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def rate(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a rate between 0 and 1 (exclusive), e.g. 0.05, not {text}")
    return value


def add_stop_on_error_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stop-on-error",
        action="store_true",
        help="stop at the first unreadable image instead of reporting and skipping it",
    )


def on_error(args: argparse.Namespace) -> api.OnError:
    """What the API does with an unreadable image, from ``--stop-on-error``."""
    return "raise" if args.stop_on_error else "skip"


def add_output_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("-o", "--output", required=True, help=help_text)


def add_taxonomy_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--taxonomy", help="defect types: a saved taxonomy or a folder per type of labelled examples")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The detector to fit and its settings (``fit``, ``fit-many``); :func:`model_params` reads them back."""
    parser.add_argument("--model", default="patchcore", choices=sorted(DETECTORS))
    parser.add_argument("--shots", type=int, help="fit on this many normal images only (few-shot)")
    parser.add_argument("--backbone", help="feature backbone (default efficientnet_lite0)")
    parser.add_argument(
        "--layers",
        nargs="+",
        help="PatchCore: the backbone's feature layers (default blocks.4 blocks.10 of Lite0; "
        "for efficientnet_lite2 the same stages are blocks.6 blocks.14)",
    )
    parser.add_argument(
        "--feature-dims",
        type=positive_int,
        help="PatchCore: reduce patch features to this many dimensions (a PCA) for a faster search",
    )
    parser.add_argument(
        "--neighbourhood-padding",
        choices=PADDINGS,
        help="PatchCore: how the 3x3 feature average sees past the view's edge (default zero)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="network input size in pixels (default: chosen from the "
        "training images, their own scale up to --pixel-budget; EfficientAD: 256)",
    )
    parser.add_argument("--tile-size", type=int, help="cut large frames into tiles of this many pixels")
    parser.add_argument(
        "--pixel-budget",
        type=int,
        help="largest working image in pixels when the scale is "
        "chosen from the training images (default 147456 = 384x384); larger images shrink to it",
    )
    parser.add_argument(
        "--max-false-alarm-rate",
        type=rate,
        help="largest share of good parts the automatic "
        "threshold may flag, bounded on held-out normal images (default 0.05)",
    )
    parser.add_argument("--tile-overlap", type=int, help="overlap between tiles in pixels (default 32)")
    parser.add_argument("--coreset-ratio", type=float, help="share of normal patches kept in the memory bank")
    parser.add_argument(
        "--calibration",
        choices=("simulated", "normal"),
        help="threshold from normals vs simulated defects, never above the false-alarm "
        "bound (default), or from the false-alarm bound alone",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="where the network runs (auto: a CUDA GPU when there is one)",
    )
    _add_efficientad_options(parser)


def _add_efficientad_options(parser: argparse.ArgumentParser) -> None:
    """The settings only EfficientAD takes, in their own help section."""
    ead = parser.add_argument_group("EfficientAD (--model efficientad)")
    ead.add_argument(
        "--size",
        choices=sorted(PDN_WIDTHS),
        help="student network: small (default), medium, or cpu (small at half width, for 2-core line PCs)",
    )
    ead.add_argument(
        "--autoencoder",
        dest="autoencoder",
        action="store_true",
        default=None,
        help="add the autoencoder for logical anomalies (off by default: undertrained on a CPU budget)",
    )
    ead.add_argument(
        "--no-autoencoder",
        dest="autoencoder",
        action="store_false",
        help="local (student-teacher) map only (the default)",
    )
    ead.add_argument("--train-steps", type=int, help="training steps (default 2000)")
    ead.add_argument("--max-train-seconds", type=float, help="stop training after this many seconds (default 600)")
    ead.add_argument(
        "--patience",
        type=int,
        help="stop early after this many validation checks (every 100 steps) without improvement",
    )
    ead.add_argument("--checkpoint-dir", help="save training state here every 200 steps; resume from it")


def model_params(args: argparse.Namespace) -> dict[str, Any]:
    """The detector settings given on the command line, refusing one that ``--model`` does not take."""
    params = {name: getattr(args, name) for name in MODEL_PARAMS if getattr(args, name) is not None}
    accepted = DETECTORS[args.model]._param_names()
    ignored = sorted(set(params) - set(accepted))
    if ignored:
        raise ValueError(f"--{ignored[0].replace('_', '-')} does not apply to --model {args.model}")
    return {**params, "seed": args.seed, "device": args.device, "progress": True}


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """How a fitted model runs (``predict``, ``evaluate``)."""
    parser.add_argument("--device", choices=DEVICE_CHOICES, help="where the network runs (default: as fitted)")
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=DEFAULT_RUNTIME,
        help="auto (default): onnx where the onnx extra is installed and the network runs on the CPU, else torch; "
        "onnx: ONNX Runtime on the CPU (exported to MODEL_DIR/model.onnx, again whenever the model changed); "
        "torch: PyTorch; fp16: float16 autocast on a CUDA GPU",
    )


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Where the work runs (``predict``, ``fit-many``)."""
    parser.add_argument(
        "--engine",
        choices=engine.ENGINES,
        default="local",
        help="where the work runs: this process (default) or a Ray cluster",
    )
    parser.add_argument(
        "--address", help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local one for this run"
    )
    parser.add_argument(
        "--workers", type=int, help="Ray: CPUs of the local cluster and number of model replicas (default: all cores)"
    )
