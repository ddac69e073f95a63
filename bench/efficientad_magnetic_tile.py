"""Benchmark: EfficientAD (small / medium / cpu, with and without autoencoder) on magnetic tile.

For each configuration: training seconds and steps, the test-split metrics of ``evaluate`` at the automatic
(simulation-calibrated) threshold and at the normal-only bound the model also stores, per defect type, and
inference milliseconds per 256x256 image at batch 1 and 8 in PyTorch and (on the CPU) ONNX Runtime, beside
the FLOP count of one inference and the limit that this machine's measured fp32 matmul rate puts on it.

    .venv/bin/python bench/efficientad_magnetic_tile.py --configs cpu cpu:noae small small:noae medium medium:noae \
        --steps 100000 --max-seconds 300 --device cpu --json bench/results/efficientad_magnetic_tile.json \
        > bench/results/efficientad_magnetic_tile.md

``--latency-only`` re-measures the speed of models kept by an earlier run with ``--save-dir``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see patchcore_magnetic_tile.py: spin-waiting threads

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from patchcore_magnetic_tile import clean, log, machine_facts, markdown_table  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from anomalens import api  # noqa: E402
from anomalens.data import mvtec_samples  # noqa: E402
from anomalens.evaluation.evaluate import evaluate  # noqa: E402
from anomalens.models import load_detector  # noqa: E402
from anomalens.models.base import flush_denormals  # noqa: E402

SIZE = 256


def matmul_gflops(device: torch.device, side: int = 2048, repeats: int = 10) -> float:
    """Sustained fp32 matrix-multiply rate: the ceiling for conv-heavy networks on this device."""
    a, b = torch.rand(side, side, device=device), torch.rand(side, side, device=device)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * side**3 * repeats / (time.perf_counter() - tic) / 1e9


def inference_gflops(module: torch.nn.Module, device: torch.device) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(torch.rand(1, 3, SIZE, SIZE, device=device))
    return counter.get_total_flops() / 1e9


def ms_per_image(run, batch: int, device: torch.device, repeats: int) -> float:
    images = torch.rand(batch, 3, SIZE, SIZE, device=device)
    for _ in range(2):
        run(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(repeats):
        run(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - tic) / (repeats * batch)


def latency(detector, device: torch.device, repeats: int, onnx: bool) -> dict[str, Any]:
    module = detector.inference_module()
    out: dict[str, Any] = {}
    with torch.inference_mode():
        for batch in (1, 8):
            out[f"torch_b{batch}_ms"] = ms_per_image(module, batch, device, repeats)
        if device.type == "cuda":
            half = module.half()
            for batch in (1, 8):
                out[f"torch_fp16_b{batch}_ms"] = ms_per_image(lambda x: half(x.half()), batch, device, repeats)
            module.float()
    if onnx:
        with tempfile.TemporaryDirectory() as tmp:
            detector.use_onnx(tmp)
            scorer = detector.onnx_scorer_
            for batch in (1, 8):
                out[f"onnx_b{batch}_ms"] = ms_per_image(scorer, batch, torch.device("cpu"), repeats)
            probe = torch.rand(4, 3, SIZE, SIZE)
            with torch.inference_mode():
                reference = module.cpu()(probe)
            out["onnx_max_abs_diff"] = float((scorer(probe) - reference).abs().max())
            module.to(device)
            detector.onnx_scorer_ = None
    return out


def run_config(spec: str, args: argparse.Namespace, device: torch.device, rate: float) -> dict[str, Any]:
    size, _, flag = spec.partition(":")
    params = {
        "size": size,
        "autoencoder": flag != "noae",
        "train_steps": args.steps,
        "device": str(device),
        "max_train_seconds": args.max_seconds,
        "seed": args.seed,
    }
    log(f"{spec}: fitting {params}")
    detector, fit_report = api.fit(args.data, args.category, model="efficientad", **params)
    if args.save_dir:
        detector.save(Path(args.save_dir) / spec.replace(":", "_"))
    log(f"{spec}: fitted in {fit_report.seconds:.1f} s; evaluating")
    report = evaluate(detector, mvtec_samples(args.data, args.category, "test"))
    gflops = inference_gflops(detector.inference_module(), device)
    speed = latency(detector, device, args.repeats, onnx=device.type == "cpu" and not args.skip_onnx)
    best_ms = min(v for k, v in speed.items() if k.endswith("_ms"))
    limit_ms = 1000 * gflops / rate
    return {
        "config": spec,
        "params": params,
        "fit_seconds": fit_report.seconds,
        "training": detector.info_["training"],
        "metrics": report,
        "gflops": gflops,
        "limit_ms": limit_ms,
        "best_ms_over_limit": best_ms / limit_ms,
        **speed,
    }


def latency_only(spec: str, args: argparse.Namespace, device: torch.device, rate: float) -> dict[str, Any]:
    """Speed figures of a model saved by an earlier run (``--save-dir``), without fitting or evaluating."""
    detector = load_detector(Path(args.save_dir) / spec.replace(":", "_"), str(device))
    flush_denormals()
    gflops = inference_gflops(detector.inference_module(), device)
    speed = latency(detector, device, args.repeats, onnx=device.type == "cpu" and not args.skip_onnx)
    limit_ms = 1000 * gflops / rate
    best_ms = min(v for k, v in speed.items() if k.endswith("_ms"))
    return {"config": spec, "gflops": gflops, "limit_ms": limit_ms, "best_ms_over_limit": best_ms / limit_ms, **speed}


def print_speed(results: list[dict[str, Any]]) -> None:
    print("\nSpeed per 256x256 image (ms), FLOPs of one inference and the matmul-rate limit:\n")
    keys = sorted({k for r in results for k in r if k.endswith("_ms") and k != "limit_ms"})
    rows = [
        [r["config"], r["gflops"], r["limit_ms"]] + [r.get(k) for k in keys] + [r["best_ms_over_limit"]]
        for r in results
    ]
    print(markdown_table(["config", "GFLOP", "limit ms"] + keys + ["best / limit"], rows))
    diffs = [f"{r['config']} {r['onnx_max_abs_diff']:.2e}" for r in results if "onnx_max_abs_diff" in r]
    if diffs:
        print("\nONNX Runtime vs PyTorch, max abs difference of the maps: " + ", ".join(diffs))


def print_report(results: list[dict[str, Any]], facts: dict[str, Any], rate: float, device: torch.device) -> None:
    print(f"# EfficientAD on magnetic tile ({device}, {facts['cpu']}, torch threads {facts['torch_threads']})\n")
    print(f"fp32 matmul rate measured: {rate:.0f} GFLOP/s\n")
    rows = []
    for r in results:
        m = r["metrics"]
        old = m.get("at_normal_only_threshold", {})
        rows.append(
            [
                r["config"],
                r["training"]["steps"],
                round(r["fit_seconds"], 1),
                m["image_auroc"],
                m["pixel_auroc"],
                m["pixel_aupro"],
                m["accuracy"],
                m["f1"],
                old.get("accuracy"),
                old.get("f1"),
                m["oracle_accuracy"],
                m["false_positive_rate"],
            ]
        )
    print(
        markdown_table(
            [
                "config",
                "steps",
                "fit s",
                "image AUROC",
                "pixel AUROC",
                "AUPRO",
                "accuracy (auto)",
                "F1 (auto)",
                "accuracy (normal-only)",
                "F1 (normal-only)",
                "oracle acc.",
                "FPR (auto)",
            ],
            rows,
        )
    )
    print("\nPer defect type (image AUROC / AUPRO / recall at the automatic threshold):\n")
    types = sorted(results[0]["metrics"]["per_defect_type"]) if results else []
    rows = [
        [r["config"]]
        + [
            f"{r['metrics']['per_defect_type'][t]['image_auroc']:.3f} / "
            f"{r['metrics']['per_defect_type'][t]['pixel_aupro']:.3f} / "
            f"{r['metrics']['per_defect_type'][t]['recall']:.2f}"
            for t in types
        ]
        for r in results
    ]
    print(markdown_table(["config"] + types, rows))
    print_speed(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--configs", nargs="+", default=["small", "small:noae", "medium", "medium:noae", "cpu"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--save-dir", help="keep the fitted models here, one folder per config")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only the speed figures, of the models an earlier run kept in --save-dir",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from anomalens.models.device import select_device

    device = select_device(args.device)
    rate = matmul_gflops(device, side=8192 if device.type == "cuda" else 2048)
    facts = machine_facts(args.threads)
    if args.latency_only:
        print(
            f"fp32 matmul rate measured: {rate:.0f} GFLOP/s ({device}, {facts['cpu']}, "
            f"torch threads {facts['torch_threads']})"
        )
        print_speed([latency_only(spec, args, device, rate) for spec in args.configs])
        return
    results = []
    for spec in args.configs:
        results.append(run_config(spec, args, device, rate))
        if args.json:  # written after every config, so a long run keeps what it finished
            Path(args.json).write_text(
                json.dumps(
                    clean({"machine": facts, "matmul_gflops": rate, "device": str(device), "results": results}),
                    indent=1,
                )
            )
    print_report(results, facts, rate, device)


if __name__ == "__main__":
    sys.exit(main())
