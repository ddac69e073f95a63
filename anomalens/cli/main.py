"""``anomalens`` command line: a thin shell over ``anomalens.api`` and ``anomalens.evaluation``.

Every failure the user can cause (missing path, unreadable model, bad option) ends as one line on stderr and
exit status 2, never a traceback; ``ANOMALENS_DEBUG=1`` shows the traceback for bug reports.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from anomalens import api, engine
from anomalens.data import mvtec_samples
from anomalens.cli.chat import add_parser as add_chat_parser
from anomalens.cli.classify import add_parser as add_classify_parser
from anomalens.cli.fit_many import add_engine_options
from anomalens.cli.fit_many import add_parser as add_fit_many_parser
from anomalens.cli.report import add_parser as add_report_parser
from anomalens.cli.serve import add_parser as add_serve_parser
from anomalens.cli.simulate import add_parser as add_simulate_parser
from anomalens.data.splits import HALVES, select_half
from anomalens.evaluation.evaluate import evaluate, json_ready
from anomalens.explanation.chat import ChatSession, findings_of
from anomalens.explanation.taxonomy import Taxonomy, load_taxonomy
from anomalens.models import DETECTORS, RUNTIMES, load_detector
from anomalens.models.device import DEVICE_CHOICES
from anomalens.models.efficientad.pdn import PDN_WIDTHS
from anomalens.reports.html import build_report, items_from_results

console = Console()
DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data"


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a rate between 0 and 1 (exclusive), e.g. 0.05, not {text}")
    return value


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="patchcore", choices=sorted(DETECTORS))
    parser.add_argument("--shots", type=int, help="fit on this many normal images only (few-shot)")
    parser.add_argument("--backbone", help="feature backbone (default efficientnet_lite0)")
    parser.add_argument("--image-size", type=int, help="network input size in pixels (default: chosen from the "
                        "training images, their own scale up to --pixel-budget; EfficientAD: 256)")
    parser.add_argument("--tile-size", type=int, help="cut large frames into tiles of this many pixels")
    parser.add_argument("--pixel-budget", type=int, help="largest working image in pixels when the scale is "
                        "chosen from the training images (default 147456 = 384x384); larger images shrink to it")
    parser.add_argument("--max-false-alarm-rate", type=_rate, help="largest share of good parts the automatic "
                        "threshold may flag, bounded on held-out normal images (default 0.05)")
    parser.add_argument("--tile-overlap", type=int, help="overlap between tiles in pixels (default 32)")
    parser.add_argument("--coreset-ratio", type=float, help="share of normal patches kept in the memory bank")
    parser.add_argument("--calibration", choices=("simulated", "normal"),
                        help="threshold from normals vs simulated defects, never above the false-alarm "
                             "bound (default), or from the false-alarm bound alone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="where the network runs (auto: a CUDA GPU when there is one)")
    ead = parser.add_argument_group("EfficientAD (--model efficientad)")
    ead.add_argument("--size", choices=sorted(PDN_WIDTHS), help="student network: small (default), medium, or "
                     "cpu (small at half width, for 2-core line PCs)")
    ead.add_argument("--autoencoder", dest="autoencoder", action="store_true", default=None,
                     help="add the autoencoder for logical anomalies (off by default: undertrained on a CPU budget)")
    ead.add_argument("--no-autoencoder", dest="autoencoder", action="store_false",
                     help="local (student-teacher) map only (the default)")
    ead.add_argument("--train-steps", type=int, help="training steps (default 2000)")
    ead.add_argument("--max-train-seconds", type=float, help="stop training after this many seconds (default 600)")
    ead.add_argument("--patience", type=int, help="stop early after this many validation checks (every 100 "
                     "steps) without improvement")
    ead.add_argument("--checkpoint-dir", help="save training state here every 200 steps; resume from it")


def _model_params(args: argparse.Namespace) -> dict[str, Any]:
    names = ("backbone", "image_size", "tile_size", "pixel_budget", "max_false_alarm_rate", "tile_overlap",
             "coreset_ratio", "calibration", "size",
             "autoencoder", "train_steps", "max_train_seconds", "patience", "checkpoint_dir")
    params = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    accepted = DETECTORS[args.model]._param_names()
    ignored = sorted(set(params) - set(accepted))
    if ignored:
        raise ValueError(f"--{ignored[0].replace('_', '-')} does not apply to --model {args.model}")
    return {**params, "seed": args.seed, "device": args.device, "progress": True}


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICE_CHOICES, help="where the network runs (default: as fitted)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch",
                        help="onnx: run the network through ONNX Runtime on the CPU (exported to "
                             "MODEL_DIR/model.onnx on first use); fp16: float16 autocast on a CUDA GPU")


def _on_error(args: argparse.Namespace) -> api.OnError:
    return "raise" if args.stop_on_error else "skip"


def _report_skipped(skipped: list) -> None:
    for path, message in skipped:
        console.print(f"[yellow]skipped[/] {path}: {message}")


def cmd_fit(args: argparse.Namespace) -> int:
    detector, report = api.fit(args.data_root, args.category, args.model, args.shots, _on_error(args),
                               **_model_params(args))
    _report_skipped(report.skipped)
    detector.save(args.output)
    assert detector.thresholds_ is not None and detector.working_scale_ is not None
    console.print(f"fitted {args.model} on {report.n_images} images in {report.seconds:.1f} s; "
                  f"image threshold {detector.thresholds_.image:.4f}; saved to {args.output}")
    console.print(f"working scale: {detector.working_scale_.describe()}")
    console.print(describe_expected(detector.thresholds_.expected))
    return 0


def describe_expected(expected: dict[str, float]) -> str:
    """What the automatic threshold promises, in a line."""
    parts = []
    if "false_alarm_rate" in expected:
        parts.append(f"flags {100 * expected['false_alarm_rate']:.1f} % of {expected['n_normal']} held-out good "
                     f"images (new good parts: at most {100 * expected['false_alarm_rate_bound']:.1f} % with 90 % "
                     "confidence, if they look like the training images)")
    if "simulated_detection_rate" in expected:
        parts.append(f"catches {100 * expected['simulated_detection_rate']:.0f} % of simulated defects")
    return "expected at the automatic threshold: " + "; ".join(parts) if parts else ""


def _results_table(results: list[dict[str, Any]], truth: dict[str, str] | None = None) -> Table:
    """One row per image; ``truth`` (path -> defect type, "good" for normal) adds a ground-truth column."""
    table = Table(title="inspection results")
    for column in ("image", *(("truth",) if truth else ()), "verdict", "score", "score / threshold", "area %",
                   "regions", "where"):
        table.add_column(column)
    for r in results:
        style = "red" if r["anomalous"] else "green"
        known = (truth.get(r["image"], "?"),) if truth else ()
        where = ", ".join(region["position"] for region in r["regions"][:2]) or "-"
        table.add_row(Path(r["image"]).name, *known, f"[{style}]{r['verdict']}[/]", f"{r['score']:.4f}",
                      f"{r['normalized_score']:.2f}", f"{100 * r['anomalous_area_fraction']:.2f}",
                      str(r["region_count"]), where)
    return table


def cmd_predict(args: argparse.Namespace) -> int:
    taxonomy = None
    if args.taxonomy:   # examples of a folder are also seen through the detector that will find the regions
        detector = None if Taxonomy.is_saved(args.taxonomy) else load_detector(args.model_dir)
        taxonomy = load_taxonomy(args.taxonomy, detector=detector)
    run = engine.predict(args.model_dir, args.inputs, args.output, args.engine, address=args.address,
                         workers=args.workers, device=args.device, runtime=args.runtime,
                         on_error=_on_error(args), progress=True, taxonomy=taxonomy)
    console.print(_results_table(run.results))
    for error in run.errors:
        console.print(f"[yellow]skipped[/] {error['path']}: {error['error']}")
    summary = run.to_dict()["summary"]
    console.print(f"{summary['n_anomalous']} of {summary['n_images']} images anomalous; "
                  f"results in {args.output}/results.json, counts in summary.json")
    return 0


def _format(value: Any) -> str:
    return "-" if isinstance(value, float) and math.isnan(value) else f"{value:.3f}"


def _metrics_table(report: dict[str, Any]) -> Table:
    columns = ("image_auroc", "pixel_auroc", "pixel_aupro", "pixel_aupro_5", "accuracy", "recall",
               "false_positive_rate", "oracle_accuracy", "pixel_f1")
    table = Table(title="evaluation (accuracy, recall, false_positive_rate: at the model's automatic threshold; "
                        "-: absent, e.g. no masks)")
    table.add_column("subset")
    table.add_column("n")
    for column in columns:
        table.add_column(column)
    rows = [("all", report)] + list(report["per_defect_type"].items())
    for name, metrics in rows:
        table.add_row(name, str(metrics["n_images"]), *(_format(metrics[c]) for c in columns))
    return table


def cmd_evaluate(args: argparse.Namespace) -> int:
    detector = load_detector(args.model_dir, args.device, args.runtime)
    samples = select_half(mvtec_samples(args.data_root, args.category, "test"), args.half)
    report = evaluate(detector, samples, progress=True)
    console.print(_metrics_table(report))
    console.print(f"{report['n_images']} images in {report['seconds']:.1f} s "
                  f"(median {report['predict_ms_median']:.0f} ms per image)")
    if args.json:
        Path(args.json).write_text(json.dumps(json_ready(report), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Learn from the shipped defect-free images, inspect the shipped test images, evaluate, explain, report."""
    out = Path(args.output)
    model_dir = out / "model"
    console.rule("1. learning what a good magnetic tile looks like")
    detector, report = api.fit(DEMO_DATA, "magnetic_tile", "patchcore", progress=True, seed=0)
    detector.save(model_dir)
    console.print(f"fitted on {report.n_images} normal images in {report.seconds:.1f} s -> {model_dir}")
    assert detector.thresholds_ is not None and detector.working_scale_ is not None
    console.print(f"working scale: {detector.working_scale_.describe()}")
    console.print(describe_expected(detector.thresholds_.expected))
    console.rule("2. inspecting test images")
    samples = mvtec_samples(DEMO_DATA, "magnetic_tile", "test")
    run = api.inspect(detector, [s.path for s in samples], out / "predictions", progress=True)
    console.print(_results_table(run.results, {str(s.path): s.defect_type for s in samples}))
    console.rule("3. how good is it on these images")
    metrics = evaluate(detector, samples)
    console.print(_metrics_table(metrics))
    (out / "metrics.json").write_text(json.dumps(json_ready(metrics), indent=2))
    console.rule("4. what it says about them (offline explainer, no model needed)")
    _demo_words(run.results)
    console.rule("5. report")
    report_path = out / "report.html"
    report_path.write_text(build_report(items_from_results(out / "predictions"), title="anomalens demo"),
                           encoding="utf-8")
    console.print(f"overlays, masks and results.json in {out / 'predictions'}; metrics in {out / 'metrics.json'}; "
                  f"HTML report in {report_path}")
    return 0


def _demo_words(results: list[dict[str, Any]], shown: int = 3) -> None:
    """The explanations of a few anomalous images, then AnomalyGPT's questions about the strongest one."""
    anomalous = sorted((r for r in results if r["anomalous"]), key=lambda r: -r["normalized_score"])
    for record in anomalous[:shown]:
        console.print(f"[bold]{Path(record['image']).name}[/]: {record['explanation']['text']}")
    if not anomalous:
        return
    session = ChatSession(findings_of(anomalous[0]))
    console.print(f"\n[bold]a chat about {Path(anomalous[0]['image']).name}[/] (`anomalens chat MODEL IMAGE`):")
    for question in ("Is there any anomaly in the image?", "Where is it?", "How many are there?",
                     "How severe is it?"):
        console.print(f"  you: {question}\n  anomalens: {session.ask(question).text}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomalens", description="Visual inspection from normal images.")
    parser.add_argument("--stop-on-error", action="store_true",
                        help="stop at the first unreadable image instead of reporting and skipping it")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="learn a model from defect-free images")
    p.add_argument("data_root", help="MVTec-layout root (with --category) or a folder of good images")
    p.add_argument("--category", help="category folder under DATA_ROOT; uses its train/good images")
    p.add_argument("-o", "--output", required=True, help="model directory to write")
    _add_fit_options(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("predict", help="inspect images with a fitted model")
    p.add_argument("model_dir")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="folder for overlays, masks and results.json")
    p.add_argument("--taxonomy", help="defect types: a saved taxonomy or a folder per type of labelled examples")
    add_engine_options(p)
    add_runtime_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="measure a model on a labelled MVTec-layout test set")
    p.add_argument("model_dir")
    p.add_argument("data_root")
    p.add_argument("--category", required=True)
    p.add_argument("--json", help="write all metrics to this JSON file")
    p.add_argument("--half", choices=("all", *HALVES), default="all",
                   help="evaluate on one half of the test set (validation: for choosing settings; report: for "
                        "figures), split once per category, stratified by defect type")
    add_runtime_options(p)
    p.set_defaults(func=cmd_evaluate)

    add_simulate_parser(sub)
    add_chat_parser(sub)
    add_classify_parser(sub)
    add_serve_parser(sub)
    add_report_parser(sub)
    add_fit_many_parser(sub)

    p = sub.add_parser("demo", help="fit, inspect and evaluate on the data that ships with anomalens")
    p.add_argument("-o", "--output", default="demo_results")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("anomalens: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line for users; the traceback on request
        if os.environ.get("ANOMALENS_DEBUG"):
            raise
        print(f"anomalens: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
