"""Engines: the Ray engine gives the local engine's results, resumes stopped runs, reports failures.

A real Ray cluster runs on this machine (2 CPUs, loopback only), started once for the module. conftest runs
torch on one thread in this process, as Ray runs it in each worker: so the two engines can agree to the bit.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from anomalens import api, engine
from anomalens.cli.main import main
from anomalens.data import read_image
from anomalens.models import PatchCore, load_detector
from anomalens.results.record import InspectionRecord

ray = pytest.importorskip("ray")

FAST = {"image_size": 64, "min_bank_size": 256, "coreset_ratio": 0.1, "augment_below": 4}
TIMING = "milliseconds"  # the one field that may differ between two runs


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_mvtec_factory):
    """Two categories of a tiny MVTec-layout set (the second only to fit), and a saved model of the first."""
    root = tmp_path_factory.mktemp("data")
    tiny = tiny_mvtec_factory(root, "tex")
    tiny_mvtec_factory(root, "tex2")
    model_dir = root / "model"
    PatchCore(**FAST).fit(_images(tiny.train)).save(model_dir)
    return {"root": root, "model": model_dir, "tiny": tiny}


def _images(paths: list[Path]) -> list:
    return [read_image(p) for p in paths]


@pytest.fixture(scope="module")
def inbox(data, tmp_path_factory) -> list[Path]:
    """The test images in two folders (so two files share each stem) plus a file that is not an image."""
    folder = tmp_path_factory.mktemp("inbox")
    (folder / "zz_corrupt.png").write_text("not a PNG")
    tiny = data["tiny"]
    return [tiny.test_good[0].parent, tiny.test_spot[0].parent, folder]


@pytest.fixture(scope="module")
def local_run(data, inbox, tmp_path_factory) -> tuple[api.InspectionRun, Path]:
    out = tmp_path_factory.mktemp("local")
    return engine.predict(data["model"], inbox, out), out


def _without_timing(records: list[InspectionRecord] | list[dict]) -> list[dict]:
    as_dicts = [r.to_dict() if isinstance(r, InspectionRecord) else r for r in records]
    return [{k: v for k, v in r.items() if k != TIMING} for r in as_dicts]


def _assert_same_up_to_float_rounding(batched: list[InspectionRecord], single: list[InspectionRecord]) -> None:
    """Images through the network together round floats differently: same verdicts and regions, scores
    equal to float32 precision."""
    assert [r.image for r in batched] == [r.image for r in single]
    for record, alone in zip(batched, single):
        assert (record.anomalous, record.region_count) == (alone.anomalous, alone.region_count)
        assert record.score == pytest.approx(alone.score, rel=1e-5)


def _output_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def test_ray_predict_gives_the_local_results_record_for_record(ray_cluster, data, inbox, local_run, tmp_path):
    local, local_out = local_run
    out = tmp_path / "ray"
    run = engine.predict(data["model"], inbox, out, "ray", workers=1)  # on a CPU one image at a time

    assert len(run.results) == 6 and sum(r.anomalous for r in run.results) >= 3
    assert _without_timing(run.results) == _without_timing(local.results)
    assert run.errors == local.errors and len(run.errors) == 1 and "zz_corrupt.png" in run.errors[0]["error"]
    assert _output_files(out) == _output_files(local_out)  # same names (000.png twice), same pixels
    assert _without_timing(json.loads((out / "results.json").read_text())) == _without_timing(local.results)
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["n_images"] == 6 and summary["n_errors"] == 1


def test_ray_predict_resumes_a_stopped_run_without_redoing_finished_images(
    ray_cluster, data, inbox, local_run, tmp_path
):
    local, local_out = local_run
    out = tmp_path / "ray"
    # what a run killed after two images leaves: two lines, a third cut short, no results.json yet
    lines = (local_out / "results.jsonl").read_text().splitlines()
    out.mkdir()
    (out / "results.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    finished = [json.loads(line) for line in lines[:2]]

    run = engine.predict(data["model"], inbox, out, "ray", batch_size=4, workers=1)

    _assert_same_up_to_float_rounding(run.results, local.results)
    written = {p.name for p in out.glob("*_overlay.png")}  # a finished image predicted again would have its own
    assert len(written) == 4 and not written & {r["overlay"] for r in finished}
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
    assert len(json.loads((out / "results.json").read_text())) == 6


def test_a_batch_that_keeps_failing_is_reported_and_the_rest_delivered(ray_cluster, data, inbox, tmp_path):
    out = tmp_path / "ray"
    (out / "001_overlay.png").mkdir(parents=True)  # the overlay of good/001.png cannot be written, every time
    run = engine.predict(data["model"], inbox, out, "ray", batch_size=1, workers=1)

    failed = data["tiny"].test_good[1]
    assert len(run.results) == 5 and str(failed) not in {r.image for r in run.results}
    assert [e["path"] for e in run.errors] == [str(failed), str(inbox[2] / "zz_corrupt.png")]
    assert "failed 3 times" in run.errors[0]["error"]


def test_stop_on_error_stops_at_the_unreadable_file_on_ray(ray_cluster, data, inbox, tmp_path):
    with pytest.raises(RuntimeError, match="cannot read image .*zz_corrupt.png"):
        engine.predict(data["model"], inbox[2:], tmp_path / "ray", "ray", workers=1, on_error="raise")


def test_resume_does_not_mix_in_records_of_another_model(data, inbox, tmp_path):
    out = tmp_path / "out"
    other = tmp_path / "other_model"
    PatchCore(**{**FAST, "image_size": 96}).fit(_images(data["tiny"].train)).save(other)
    first = engine.predict(other, inbox, out)
    again = engine.predict(data["model"], inbox, out)

    threshold = load_detector(data["model"]).thresholds_.image
    assert len(again.results) == 6 and {r.image_threshold for r in again.results} == {round(threshold, 6)}
    assert {r.image_threshold for r in first.results} != {round(threshold, 6)}


def test_fit_many_on_ray_fits_the_local_models_and_reports_a_failed_category(ray_cluster, data, tmp_path):
    categories = ["tex", "missing", "tex2"]
    params = {**FAST, "seed": 0}
    local = engine.fit_many(data["root"], categories, tmp_path / "local", **params)
    remote = engine.fit_many(data["root"], categories, tmp_path / "ray", "ray", **params)

    for run in (local, remote):
        assert sorted(r["category"] for r in run.fitted) == ["tex", "tex2"]
        assert [f["category"] for f in run.failed] == ["missing"] and "missing" in run.failed[0]["error"]
    for category in ("tex", "tex2"):
        local_model, ray_model = tmp_path / "local" / category, tmp_path / "ray" / category
        configs = [json.loads((model / "config.json").read_text()) for model in (ray_model, local_model)]
        for config in configs:
            del config["info"]["fit_seconds"]  # how long each fit took, the one thing that may differ
        assert configs[0] == configs[1]
        local_bank = load_file(str(local_model / "state.safetensors"))["memory_bank"]
        assert (load_file(str(ray_model / "state.safetensors"))["memory_bank"] == local_bank).all()
    log = [json.loads(line) for line in (tmp_path / "ray" / "fit_many.jsonl").read_text().splitlines()]
    assert sorted(entry["status"] for entry in log) == ["failed", "fitted", "fitted"]

    again = engine.fit_many(data["root"], categories, tmp_path / "ray", "ray", **params)
    assert sorted(again.already_fitted) == ["tex", "tex2"] and not again.fitted
    assert [f["category"] for f in again.failed] == ["missing"]
    assert not list((tmp_path / "ray").glob(".*.partial"))


def test_cli_runs_predict_and_fit_many_on_ray(ray_cluster, data, inbox, local_run, tmp_path, capsys):
    local, local_out = local_run
    out = tmp_path / "predictions"
    assert (
        main(["predict", str(data["model"]), *map(str, inbox), "-o", str(out), "--engine", "ray", "--workers", "2"])
        == 0
    )
    assert _without_timing(json.loads((out / "results.json").read_text())) == _without_timing(local.results)
    assert _output_files(out) == _output_files(local_out)

    models = tmp_path / "models"
    shutil.copytree(data["root"] / "tex", tmp_path / "one" / "tex")
    assert (
        main(
            [
                "fit-many",
                str(tmp_path / "one"),
                "--categories",
                "tex",
                "nope",
                "-o",
                str(models),
                "--image-size",
                "64",
                "--engine",
                "ray",
            ]
        )
        == 1
    )
    printed = capsys.readouterr().out
    assert "failed nope" in printed and "1 fitted" in printed
    assert load_detector(models / "tex").thresholds_ is not None
