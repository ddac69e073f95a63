"""``anomalens demo``: fit, inspect, evaluate, explain and report on the data that ships with anomalens."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from anomalens import api
from anomalens.cli.output import console, describe_expected, metrics_table, results_table
from anomalens.data import mvtec_samples
from anomalens.evaluation.evaluate import evaluate, json_ready
from anomalens.explanation.chat import ChatSession
from anomalens.reports.html import build_report, items_from_results
from anomalens.results.record import InspectionRecord

DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data"


def cmd_demo(args: argparse.Namespace) -> int:
    """Learn from the shipped defect-free images, inspect the shipped test images, evaluate, explain, report."""
    out = Path(args.output)
    model_dir = out / "model"
    console.rule("1. learning what a good magnetic tile looks like")
    detector, report = api.fit(DEMO_DATA, "magnetic_tile", "patchcore", progress=True, seed=0)
    detector.save(model_dir, cause="fit", by="anomalens demo")
    console.print(f"fitted on {report.n_images} normal images in {report.seconds:.1f} s -> {model_dir}")
    assert detector.thresholds_ is not None and detector.working_scale_ is not None
    console.print(f"working scale: {detector.working_scale_.describe()}")
    console.print(describe_expected(detector.thresholds_.expected))
    console.rule("2. inspecting test images")
    samples = mvtec_samples(DEMO_DATA, "magnetic_tile", "test")
    run = api.inspect(detector, [s.path for s in samples], out / "predictions", progress=True)
    console.print(results_table(run.results, {str(s.path): s.defect_type for s in samples}))
    console.rule("3. how good is it on these images")
    metrics = evaluate(detector, samples)
    console.print(metrics_table(metrics))
    (out / "metrics.json").write_text(json.dumps(json_ready(metrics), indent=2))
    console.rule("4. what it says about them (offline explainer, no model needed)")
    _demo_words(run.results)
    console.rule("5. report")
    report_path = out / "report.html"
    report_path.write_text(
        build_report(items_from_results(out / "predictions"), title="anomalens demo"), encoding="utf-8"
    )
    console.print(
        f"overlays, masks and results.json in {out / 'predictions'}; metrics in {out / 'metrics.json'}; "
        f"HTML report in {report_path}"
    )
    return 0


def _demo_words(results: list[InspectionRecord], shown: int = 3) -> None:
    """The explanations of a few anomalous images, then AnomalyGPT's questions about the strongest one."""
    anomalous = sorted((r for r in results if r.anomalous), key=lambda r: -r.normalized_score)
    for record in anomalous[:shown]:
        console.print(f"[bold]{Path(record.image).name}[/]: {record.explanation.text}")
    if not anomalous:
        return
    session = ChatSession(anomalous[0])
    console.print(f"\n[bold]a chat about {Path(anomalous[0].image).name}[/] (`anomalens chat MODEL IMAGE`):")
    for question in ("Is there any anomaly in the image?", "Where is it?", "How many are there?", "How severe is it?"):
        console.print(f"  you: {question}\n  anomalens: {session.ask(question).text}")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``demo`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser("demo", help="fit, inspect and evaluate on the data that ships with anomalens")
    p.add_argument("-o", "--output", default="demo_results")
    p.set_defaults(func=cmd_demo)
    return p
