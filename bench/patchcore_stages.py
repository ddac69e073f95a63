"""Where a PatchCore prediction spends its time, stage by stage, beside each stage's floor on this machine.

For each saved model (``--models``; e.g. the suite's default fits, or one fitted with ``--image-size 256``) one
test image is taken through the stages of ``anomalens predict`` one at a time, each timed as the median of
``--repeats`` runs at batch 1:

decode (file bytes to pixels), views (resize, tiling), backbone (the pretrained network), pooling (neighbourhood
averaging and the layers' concatenation), search (nearest neighbour in the memory bank), smoothing (upsampling
and blur), decision (stitching views, verdict, outline and findings), PNG (overlay and mask written as PNG).
The stages run in PyTorch; where the code can run the patch features in ONNX Runtime (as the fit does), backbone
and pooling are timed that way too, with the total they give in place of PyTorch's two stages.

The machine's rates are measured in the same run: fp32 matrix products (GFLOP/s) and memory copies (GB/s).
The floor of a compute stage is its FLOPs (counted by ``torch.utils.flop_counter``, or 2*Q*M*D for the search)
over the matmul rate; of a memory stage, the bytes it must read and write over the copy rate. Whole predictions
are timed too, with PyTorch and with ONNX Runtime, and at batch 1, 8 and 32. With ``--interleave`` the search and
whole predictions at batch 1 are timed once more with the models taking turns within each repeat, so that a change
in a shared machine's load falls on all of them alike (to compare settings, e.g. ``feature_dims``).

    OMP_NUM_THREADS=2 .venv/bin/python bench/patchcore_stages.py --models /tmp/models/magnetic_tile \\
        --json bench/results/patchcore_stages.json --md bench/results/patchcore_stages.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

# isort: off
import anomalens  # noqa: F401  (first, as in the CLI: it sets the OpenMP threads' wait policy before torch loads)

# isort: on
import numpy as np
import torch
from result_tables import markdown_table
from torch.utils.flop_counter import FlopCounterMode

from anomalens.data import collect_images, decode_image, encode_png, read_image, to_uint8_rgb
from anomalens.models import load_detector
from anomalens.postprocessing.findings import extract_findings
from anomalens.reports.visualize import mask_png, overlay


def median_ms(work: Callable[[], object], repeats: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        work()
        times.append(time.perf_counter() - tic)
    return 1000 * float(np.median(times))


def medians_in_turn(works: dict, repeats: int) -> dict:
    """Median ms of each of ``works`` (name -> callable), the works taking turns within each repeat after one
    warm-up call each, so that a change of a shared machine's load falls on all of them alike."""
    for work in works.values():
        work()
    times: dict = {key: [] for key in works}
    for _ in range(repeats):
        for key, work in works.items():
            tic = time.perf_counter()
            work()
            times[key].append(time.perf_counter() - tic)
    return {key: 1000 * float(np.median(values)) for key, values in times.items()}


def machine_rates(repeats: int) -> dict:
    side = 1024
    a, b = torch.randn(side, side), torch.randn(side, side)
    gflops = 2 * side**3 / median_ms(lambda: a @ b, repeats) / 1e6
    source = torch.empty(64 * 2**20 // 4)
    target = torch.empty_like(source)
    gbytes = 2 * source.numel() * 4 / median_ms(lambda: target.copy_(source), repeats) / 1e6
    return {"matmul_gflop_per_s": round(gflops, 1), "copy_gb_per_s": round(gbytes, 2)}


def flops_of(module: Callable, *inputs: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*inputs)
    return int(counter.get_total_flops())


def stages(detector, path: Path, rates: dict, repeats: int) -> list[dict]:
    """Each stage of one prediction of the image at ``path``: measured ms and floor ms."""
    model = detector.model_
    data = path.read_bytes()
    image = decode_image(data)
    views = detector._views(image)
    pixels = detector._to_tensor([view.pixels for view in views])
    with torch.inference_mode():
        features = model.extractor(pixels)
        embeddings = model.embed(pixels)
        distances = model.patch_scores(embeddings)
        maps = model.smoother(distances)
    score, amap = detector.score_and_map(image)
    prediction = detector._decide(score, amap)
    queries = embeddings.shape[0] * embeddings.shape[2] * embeddings.shape[3]
    bank, dim = model.memory_bank.shape
    gflop_ms = rates["matmul_gflop_per_s"] * 1e6  # FLOPs per ms
    byte_ms = rates["copy_gb_per_s"] * 1e6  # bytes per ms

    def timed(work: Callable[[], object]) -> float:
        with torch.inference_mode():
            return median_ms(work, repeats)

    def write_pngs() -> None:
        encode_png(overlay(to_uint8_rgb(image), prediction))
        encode_png(mask_png(prediction))

    def decide() -> None:
        view_maps = list(maps.numpy())
        full = detector._image_map(view_maps, views, image.shape[:2])
        extract_findings(detector._decide(score, full), image)

    rows = [
        ("decode", lambda: decode_image(data), image.nbytes / byte_ms),
        ("views (resize, tiling)", lambda: detector._views(image), (image.nbytes + pixels.numel() * 4) / byte_ms),
        ("backbone", lambda: model.extractor(pixels), flops_of(model.extractor, pixels) / gflop_ms),
        (
            "pooling",
            lambda: model.embed(pixels),
            sum(f.numel() * 4 for f in features.values()) / byte_ms,
        ),
        ("search", lambda: model.patch_scores(embeddings), 2 * queries * bank * dim / gflop_ms),
        ("smoothing", lambda: model.smoother(distances), flops_of(model.smoother, distances) / gflop_ms),
        ("decision, outline, findings", decide, amap.nbytes * 4 / byte_ms),
        ("PNG (overlay, mask)", write_pngs, None),
    ]
    out = []
    for name, work, floor in rows:
        ms = timed(work)
        if name == "pooling":  # embed runs the backbone too; pooling is what it adds
            ms = max(ms - out[2]["ms"], 0.0)
        out.append({"stage": name, "ms": round(ms, 2), "floor_ms": None if floor is None else round(floor, 3)})
    total = {
        "stage": "total of the stages",
        "ms": round(sum(row["ms"] for row in out), 2),
        "floor_ms": round(sum(row["floor_ms"] or 0.0 for row in out), 3),
    }
    out.append(total)
    if getattr(detector, "patch_features_", None) is not None:  # code that can run the features in ONNX Runtime
        ms = timed(lambda: detector._embed(pixels))  # the warm-up call exports the graph
        if detector.patch_features_.runtime == "onnx":
            torch_ms = out[2]["ms"] + out[3]["ms"]
            floor = out[2]["floor_ms"] + out[3]["floor_ms"]
            out.append(
                {
                    "stage": "backbone and pooling, ONNX Runtime (as the fit runs them)",
                    "ms": round(ms, 2),
                    "floor_ms": round(floor, 3),
                }
            )
            out.append(
                {
                    "stage": "total, with them in ONNX Runtime",
                    "ms": round(total["ms"] - torch_ms + ms, 2),
                    "floor_ms": total["floor_ms"],
                }
            )
    return out


def whole(model_dir: Path, paths: list[Path], runtime: str, batch: int, repeats: int) -> dict:
    """``predict_batch`` on decoded images, ms per image (the images cycled to fill the batches); a runtime the
    code under test lacks (ONNX for PatchCore before it exported) is recorded as such."""
    try:
        detector = load_detector(model_dir, runtime=runtime)
    except ValueError as error:
        return {"runtime": runtime, "batch": batch, "unavailable": str(error)}
    detector.batch_size = batch
    images = [read_image(path) for path in paths]
    batch_images = [images[i % len(images)] for i in range(batch)]
    ms = median_ms(lambda: detector.predict_batch(batch_images), max(3, repeats // batch))
    megapixels = sum(image.shape[0] * image.shape[1] for image in batch_images) / 1e6
    return {
        "runtime": runtime,
        "batch": batch,
        "ms_per_image": round(ms / batch, 2),
        "images_per_second": round(1000 * batch / ms, 2),
        "ms_per_megapixel": round(ms / megapixels, 2),
    }


def profile(model_dir: Path, images: Path, rates: dict, repeats: int, batches: list[int]) -> dict:
    detector = load_detector(model_dir)
    paths = collect_images([images])[:32]
    image = read_image(paths[0])
    runs = [whole(model_dir, paths, "torch", batch, repeats) for batch in batches]
    runs += [whole(model_dir, paths, "onnx", batch, repeats) for batch in batches]
    return {
        "model": str(model_dir),
        "working_scale": detector.working_scale_.describe(),
        "image": f"{paths[0].name} ({image.shape[1]}x{image.shape[0]})",
        "bank": list(detector.model_.memory_bank.shape),
        "stages": stages(detector, paths[0], rates, repeats),
        "whole": runs,
    }


PARTS = ("search", "whole, PyTorch", "whole, ONNX Runtime")


def interleaved(model_dirs: list[Path], images: Path, repeats: int) -> list[dict]:
    """Median ms of each model's search and whole prediction (batch 1, PyTorch and ONNX Runtime) of one image,
    the models taking turns within each repeat."""
    image = read_image(collect_images([images])[0])
    works: dict[tuple[str, str], Callable[[], object]] = {}
    for model_dir in dict.fromkeys(model_dirs):
        torch_detector = load_detector(model_dir, runtime="torch")
        model = torch_detector.model_
        pixels = torch_detector._to_tensor([view.pixels for view in torch_detector._views(image)])
        with torch.inference_mode():
            embeddings = model.embed(pixels)
        onnx_detector = load_detector(model_dir, runtime="onnx")
        works[str(model_dir), PARTS[0]] = lambda model=model, embeddings=embeddings: model.patch_scores(embeddings)
        works[str(model_dir), PARTS[1]] = lambda d=torch_detector: d.predict_batch([image])
        works[str(model_dir), PARTS[2]] = lambda d=onnx_detector: d.predict_batch([image])
    with torch.inference_mode():
        medians = medians_in_turn(works, repeats)
    return [
        {"model": model, **{part: round(medians[model, part], 2) for part in PARTS}}
        for model in dict.fromkeys(model for model, _ in works)
    ]


def markdown(results: list[dict], meta: dict, turns: list[dict]) -> str:
    lines = [
        "# PatchCore, stage by stage (batch 1)",
        "",
        f"`{meta['command']}` on {meta['date']} ({meta['machine']}, {meta['threads']} torch threads). Machine rates "
        f"in the same run: {meta['rates']['matmul_gflop_per_s']} GFLOP/s fp32 matmul, "
        f"{meta['rates']['copy_gb_per_s']} GB/s memory copy. Floor: FLOPs over the matmul rate, or bytes over the "
        "copy rate (`-`: no simple floor).",
    ]
    for result in results:
        lines += [
            "",
            f"## {Path(result['model']).name}: {result['working_scale']}",
            "",
            f"Image {result['image']}; memory bank {result['bank'][0]} x {result['bank'][1]}.",
            "",
        ]
        lines += markdown_table(
            ["stage", "ms", "floor ms", "ms / floor"],
            [
                [row["stage"], row["ms"], "-" if row["floor_ms"] is None else row["floor_ms"]]
                + [f"{row['ms'] / row['floor_ms']:.0f}x" if row["floor_ms"] else "-"]
                for row in result["stages"]
            ],
        )
        lines.append("")
        lines += markdown_table(
            ["runtime", "batch", "ms / image", "images / s", "ms / megapixel"],
            [
                [run["runtime"], run["batch"], "unavailable", "-", "-"]
                if "unavailable" in run
                else [run[key] for key in ("runtime", "batch", "ms_per_image", "images_per_second", "ms_per_megapixel")]
                for run in result["whole"]
            ],
        )
    if turns:
        lines += ["", "## The models in turn within each repeat (batch 1, median ms)", ""]
        lines += markdown_table(
            ["model", *PARTS], [[Path(row["model"]).name, *(row[p] for p in PARTS)] for row in turns]
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="saved PatchCore model folders")
    parser.add_argument(
        "--images", type=Path, help="test images (default: the model folder's name as a category of --data)"
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--interleave", action="store_true", help="also time the models in turn (see above)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    rates = machine_rates(args.repeats)
    results = []
    for model_dir in args.models:
        images = args.images or args.data / model_dir.name / "test"
        results.append(profile(model_dir, images, rates, args.repeats, args.batches))
        print(json.dumps(results[-1]), flush=True)
    meta = {
        "command": "python bench/patchcore_stages.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": torch.get_num_threads(),
        "rates": rates,
    }
    turns = (
        interleaved(args.models, args.images or args.data / args.models[0].name / "test", args.repeats)
        if args.interleave
        else []
    )
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results, "in_turn": turns}, indent=1))
    text = markdown(results, meta, turns)
    if args.md:
        args.md.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
