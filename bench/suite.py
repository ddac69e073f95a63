"""The suite bench: every category of the development suite fitted and evaluated with the defaults a new user
gets, on the report halves (the validation halves chose the defaults), with anomalib beside it.

Per category (and per defect type): image AUROC, pixel AUROC, AUPRO up to 30 % and 5 % FPR, accuracy, recall
and false-alarm rate at the automatic threshold, oracle accuracy, fit seconds, median ms per image, peak
memory. Each detector and category runs in a process of its own, so peak memory is that run's alone.
anomalib 2.7 (``../shared/peer``) runs on the same report halves when its environment exists.

    .venv/bin/python bench/suite.py --json bench/results/suite.json --md bench/results/suite.md
    .venv/bin/python bench/suite.py --detectors patchcore --categories solar_cell_mono   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from result_tables import markdown_table

SUITE = ("magnetic_tile", "ball_screw_drive", "solar_cell_mono", "solar_cell_poly")
HALF = "report"
# our detectors at their defaults; EfficientAD with the cpu student and a fixed training-time budget
DETECTORS = {
    "patchcore": {},
    "efficientad": {"size": "cpu", "autoencoder": False, "max_train_seconds": 300},
}
PEERS = {"anomalib patchcore": ["--model", "patchcore", "--coreset", "0.01"], "anomalib padim": ["--model", "padim"]}
PEER_PYTHON = "/tmp/peerv/bin/python"
PEER_SCRIPT = Path("../shared/peer/run_anomalib.py")


def run_ours(data: str, category: str, detector: str, save_to: str | None = None) -> dict:
    """Fit with the defaults, evaluate on the report half (called in a child process)."""
    from anomalens import api
    from anomalens.data import mvtec_samples
    from anomalens.data.splits import select_half
    from anomalens.evaluation.evaluate import evaluate

    model, fit = api.fit(data, category, detector, **DETECTORS[detector])
    if save_to:
        model.save(Path(save_to) / detector / category)
    report = evaluate(model, select_half(mvtec_samples(data, category, "test"), HALF))
    return {
        "detector": f"anomalens {detector}",
        "category": category,
        "fit_seconds": round(fit.seconds, 1),
        "working_scale": model.working_scale_.describe(),
        "expected": model.thresholds_.expected,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **report,
    }


def half_folder(data: str, category: str, root: Path) -> Path:
    """An MVTec-layout copy of the category (symbolic links) with only the report half as its test set."""
    from anomalens.data import mvtec_samples
    from anomalens.data.splits import select_half

    source = Path(data).resolve() / category
    target = root / category
    (target / "train").mkdir(parents=True)
    (target / "train" / "good").symlink_to(source / "train" / "good")
    for sample in select_half(mvtec_samples(data, category, "test"), HALF):
        folder = target / "test" / sample.defect_type
        folder.mkdir(parents=True, exist_ok=True)
        (folder / sample.path.name).symlink_to(sample.path.resolve())
        if sample.mask_path is not None:
            masks = target / "ground_truth" / sample.defect_type
            masks.mkdir(parents=True, exist_ok=True)
            (masks / sample.mask_path.name).symlink_to(sample.mask_path.resolve())
    return target


def run_peer(data: str, category: str, name: str) -> dict | None:
    if not (Path(PEER_PYTHON).is_file() and PEER_SCRIPT.is_file()):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        half_folder(data, category, Path(tmp))
        done = subprocess.run(
            [PEER_PYTHON, str(PEER_SCRIPT), "--data", tmp, "--category", category, *PEERS[name]],
            capture_output=True,
            text=True,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"detector": name, "category": category, "error": done.stderr[-2000:]}
    peer = json.loads(lines[-1])
    return {
        "detector": name,
        "category": category,
        "image_auroc": peer["image_auroc"],
        "pixel_auroc": peer.get("pixel_auroc"),
        "pixel_aupro": peer.get("pixel_aupro"),
        "image_f1": peer.get("image_f1"),
        "fit_seconds": peer["train_seconds"],
        "predict_ms_median": peer["infer_ms_per_image_b1"],
        "peak_rss_mb": peer["peak_rss_mb"],
        "settings": peer["settings"],
    }


def child(args: argparse.Namespace) -> None:
    result = run_ours(args.data, args.category, args.detector, args.save_models)
    from anomalens.evaluation.evaluate import json_ready

    Path(args.child_out).write_text(json.dumps(json_ready(result)))


def in_child(data: str, category: str, detector: str, save_models: str | None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        saving = ["--save-models", save_models] if save_models else []
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--data",
                data,
                "--child",
                "--category",
                category,
                "--detector",
                detector,
                "--child-out",
                out.name,
                *saving,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            return {"detector": f"anomalens {detector}", "category": category, "error": done.stderr[-2000:]}
        return json.loads(Path(out.name).read_text())


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# Suite bench: report halves, defaults",
        "",
        f"`{meta['command']}` on {meta['date']} ({meta['machine']}). Defaults chosen on the validation "
        "halves (bench/results/choose_defaults.md); figures here on the report halves only. "
        "`-`: absent (no masks, or not measured by that tool)."
        + "".join(
            f" Rows of `{inc['file']}` come from `{inc['command']}` on {inc['date']}."
            for inc in meta.get("included", [])
        ),
        "",
    ]
    quality = ("image_auroc", "pixel_auroc", "pixel_aupro", "pixel_aupro_5", "accuracy", "recall")
    quality += ("false_positive_rate", "oracle_accuracy")
    lines += markdown_table(
        ["category", "detector", "image AUROC", "pixel AUROC", "AUPRO@30", "AUPRO@5", "accuracy", "recall"]
        + ["false alarms", "oracle acc.", "fit s", "ms/image", "peak MB"],
        [
            [r["category"], r["detector"], "failed: see JSON"] + [""] * 10
            if "error" in r
            else [r["category"], r["detector"], *(fmt(r.get(key)) for key in quality)]
            + [fmt(r.get(key), 0) for key in ("fit_seconds", "predict_ms_median", "peak_rss_mb")]
            for r in results
        ],
    )
    lines += ["", "## Per defect type (anomalens, against the category's good report images)", ""]
    per_type = ("image_auroc", "pixel_auroc", "pixel_aupro", "pixel_aupro_5", "recall", "false_positive_rate")
    lines += markdown_table(
        ["category", "detector", "defect", "n", "image AUROC", "pixel AUROC", "AUPRO@30", "AUPRO@5", "recall"]
        + ["false alarms"],
        [
            [r["category"], r["detector"], defect, m["n_defective"], *(fmt(m[key]) for key in per_type)]
            for r in results
            for defect, m in (r.get("per_defect_type") or {}).items()
        ],
    )
    lines += ["", "## Working scale and what the model told the user to expect (from its calibration)", ""]
    lines += markdown_table(
        ["category", "detector", "working scale", "expected false alarms (bound)", "simulated defects caught"],
        [
            [r["category"], r["detector"], r["working_scale"]]
            + [f"{fmt(r['expected'].get('false_alarm_rate'))} ({fmt(r['expected'].get('false_alarm_rate_bound'))})"]
            + [fmt(r["expected"].get("simulated_detection_rate"))]
            for r in results
            if "working_scale" in r
        ],
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--categories", nargs="+", default=list(SUITE))
    parser.add_argument("--detectors", nargs="*", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--json", default="bench/results/suite.json")
    parser.add_argument("--md", default="bench/results/suite.md")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        help="add the rows of an earlier run's JSON to this run's tables (repeatable); its command and date are quoted",
    )
    parser.add_argument("--save-models", help="keep the fitted models under DIR/<detector>/<category>")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--category", help=argparse.SUPPRESS)
    parser.add_argument("--detector", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    results = []
    for category in args.categories:
        for detector in args.detectors:
            results.append(in_child(args.data, category, detector, args.save_models))
            print(json.dumps({k: v for k, v in results[-1].items() if not isinstance(v, (dict, list))}), flush=True)
        for peer in args.peers:
            result = run_peer(args.data, category, peer)
            if result is not None:
                results.append(result)
                print(json.dumps(result), flush=True)
    meta = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
    }
    meta["included"] = []
    for path in args.include:
        earlier = json.loads(Path(path).read_text())
        results += earlier["results"]
        meta["included"].append({"file": path, **earlier["meta"]})
    results.sort(
        key=lambda r: (
            SUITE.index(r["category"]) if r["category"] in SUITE else len(SUITE),
            not r["detector"].startswith("anomalens"),
        )
    )
    Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=lambda v: None))
    Path(args.md).write_text(markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
