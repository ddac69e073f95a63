"""The Python API (inspect, training_paths, fit) and the command line, run in-process (plus one subprocess)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomalens import api
from anomalens.cli.main import main
from anomalens.data import ImageReadError, NoImagesError, read_image
from anomalens.explanation.llm.local_server import free_port
from anomalens.extras import EXTRA_OF_MODULE, MissingExtraError, requires_extra
from anomalens.models import PatchCore, load_detector
from anomalens.models.base import BaseDetector
from anomalens.models.onnx_runtime import onnx_available
from conftest import wait_for_service

FAST = {"image_size": 64, "min_bank_size": 256, "augment_below": 4}
METRIC_KEYS = {
    "image_auroc",
    "pixel_auroc",
    "pixel_aupro",
    "image_f1_max",
    "accuracy",
    "f1",
    "n_images",
    "seconds",
    "per_defect_type",
}


@pytest.fixture(scope="module")
def detector(textures) -> PatchCore:
    return PatchCore(**FAST).fit(textures.normals([(80, 100)] * 5, first_seed=0))


@pytest.fixture
def mixed_folder(tmp_path, textures, png_writer) -> dict[str, list[Path]]:
    """Readable images (two sharing the stem 'part'), a text file named .png, an empty .png, a stray .txt."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    good = []
    for i, name in enumerate(["a1.png", "a2.png", "part.jpg", "part.png"]):
        png_writer(folder / name, textures.normal(80, 100, seed=40 + i))
        good.append(folder / name)
    spot, _ = textures.defect(textures.normal(80, 100, seed=45), "blob", center=(40, 50), size=12)
    png_writer(folder / "spot.png", spot)
    good.append(folder / "spot.png")
    corrupt = folder / "m_corrupt.png"
    corrupt.write_text("this is a text file, not a PNG\n")
    empty = folder / "n_empty.png"
    empty.write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, and not listed either")
    return {"folder": [folder], "good": good, "bad": [corrupt, empty]}


# -- api.inspect ----------------------------------------------------------------------------------------------------
def test_inspect_reports_bad_files_and_writes_every_good_one(detector, mixed_folder, tmp_path):
    out = tmp_path / "out"
    run = api.inspect(detector, mixed_folder["folder"], out)
    results = run.to_dict()["results"]

    assert sorted(e["path"] for e in run.errors) == sorted(str(p) for p in mixed_folder["bad"])
    assert all(e["error"] for e in run.errors)
    assert sorted(r["image"] for r in results) == sorted(str(p) for p in mixed_folder["good"])

    overlays = set()
    for record in results:
        image = read_image(record["image"])
        overlay = cv2.imread(str(out / record["overlay"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_UNCHANGED)
        assert overlay is not None and overlay.shape == image.shape
        assert mask is not None and mask.shape == image.shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask > 0).any() == record["anomalous"]  # mask empty exactly when the verdict is normal
        assert record["height"] == image.shape[0] and record["width"] == image.shape[1]
        overlays.add(record["overlay"])
    assert len(overlays) == len(results)  # part.jpg and part.png do not overwrite each other
    by_name = {Path(r["image"]).name: r for r in results}
    assert by_name["spot.png"]["anomalous"]
    assert by_name["spot.png"]["score"] > max(by_name[n]["score"] for n in ("a1.png", "a2.png"))

    saved = json.loads((out / "summary.json").read_text())
    assert saved["summary"]["n_images"] == 5 and saved["summary"]["n_errors"] == 2
    assert saved["summary"]["n_anomalous"] == sum(r["anomalous"] for r in results)
    assert json.loads((out / "results.json").read_text()) == results and saved["errors"] == run.errors
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert lines == results


def test_inspect_raise_stops_at_the_bad_file_and_keeps_earlier_lines(detector, mixed_folder, tmp_path):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "results.jsonl").write_text('{"stale": "line from an earlier run"}\n')
    with pytest.raises(ImageReadError) as caught:
        api.inspect(detector, mixed_folder["folder"], out, on_error="raise")
    assert caught.value.path == mixed_folder["bad"][0]  # files go in name order: a1, a2, m_corrupt...
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in lines] == ["a1.png", "a2.png"]
    assert all((out / r["overlay"]).is_file() and (out / r["mask"]).is_file() for r in lines)


def test_inspect_without_output_folder(detector, mixed_folder):
    run = api.inspect(detector, mixed_folder["good"][:2], None)
    assert len(run.results) == 2 and not run.errors
    assert run.results[0].overlay is None and "overlay" not in run.to_dict()["results"][0]


# -- training_paths / fit ----------------------------------------------------------------------------------------------
def test_training_paths_shots_draw_a_reproducible_subset(tiny_mvtec, tmp_path):
    data = tiny_mvtec
    everything = api.training_paths(data.root, data.category)
    assert everything == sorted(data.train)
    subsets = [api.training_paths(data.root, data.category, shots=3, seed=seed) for seed in range(8)]
    for seed, subset in enumerate(subsets):
        assert len(subset) == 3 == len(set(subset)) and set(subset) <= set(everything)
        assert subset == sorted(subset)
        assert api.training_paths(data.root, data.category, shots=3, seed=seed) == subset
    assert len({tuple(s) for s in subsets}) > 1  # the seed matters
    assert api.training_paths(data.root, data.category, shots=50) == everything
    with pytest.raises(ValueError):
        api.training_paths(data.root, data.category, shots=0)
    # a plain folder of good images works without a category
    assert api.training_paths(data.root / data.category / "train" / "good") == everything
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoImagesError, match=r"no images in '.*empty' \(sub-folders not searched\); image files end in"):
        api.training_paths(tmp_path / "empty")
    # good images are read flat: a category folder given without --category must not teach its defects
    with pytest.raises(NoImagesError, match="sub-folders not searched"):
        api.training_paths(data.root / data.category)
    (tmp_path / "bare" / "tex" / "train" / "good").mkdir(parents=True)
    with pytest.raises(NoImagesError, match=r"no images in '.*train/good' \(sub-folders"):
        api.training_paths(tmp_path / "bare", "tex")


def test_training_paths_on_demo_data(demo_data):
    everything = api.training_paths(demo_data, "magnetic_tile")
    assert len(everything) == 24 and all(p.suffix == ".jpg" for p in everything)
    five = api.training_paths(demo_data, "magnetic_tile", shots=5, seed=1)
    assert five == api.training_paths(demo_data, "magnetic_tile", shots=5, seed=1)
    assert len(five) == 5 and set(five) <= set(everything)


def test_api_fit_with_shots_uses_that_many_images(tiny_mvtec):
    data = tiny_mvtec
    detector, report = api.fit(data.root, data.category, shots=2, image_size=64, augment_below=0)
    assert report.n_images == 2 and detector.info_["n_images"] == 2
    (data.train[0].parent / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    detector, report = api.fit(data.root, data.category, image_size=64)
    assert report.n_images == 8 and [Path(p).name for p, _ in report.skipped] == ["zz_broken.png"]


# -- CLI, in-process -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, tiny_mvtec_factory):
    """A tiny data set and a model fitted on it through the CLI at the default calibration (shared by the
    predict/evaluate tests)."""
    base = tmp_path_factory.mktemp("cli")
    data = tiny_mvtec_factory(base / "data")
    model = base / "model"
    assert main(["fit", str(data.root), "--category", data.category, "-o", str(model), "--image-size", "64"]) == 0
    return data, model


def test_cli_fit(tiny_mvtec, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANOMALENS_DEBUG", raising=False)
    data = tiny_mvtec
    code = main(
        [
            "fit",
            str(data.root),
            "--category",
            data.category,
            "-o",
            str(tmp_path / "model"),
            "--image-size",
            "64",
            "--seed",
            "3",
            "--layers",
            "blocks.4",
            "blocks.7",
            "--neighbourhood-padding",
            "replicate",
            "--feature-dims",
            "24",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "fitted patchcore on 8 images" in out
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["params"]["image_size"] == 64 and config["params"]["seed"] == 3
    assert config["params"]["layers"] == ["blocks.4", "blocks.7"]
    assert config["params"]["neighbourhood_padding"] == "replicate"
    assert config["params"]["feature_dims"] == 24
    assert config["info"]["n_images"] == 8 and load_detector(tmp_path / "model").model_.memory_bank.shape[1] == 24
    assert load_detector(tmp_path / "model").thresholds_.image == config["thresholds"]["image"]


def test_cli_fit_chooses_the_working_scale_and_says_what_to_expect(tiny_mvtec, tmp_path, capsys):
    data = tiny_mvtec
    assert (
        main(
            [
                "fit",
                str(data.root),
                "--category",
                data.category,
                "-o",
                str(tmp_path / "model"),
                "--max-false-alarm-rate",
                "0.2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["params"]["image_size"] is None and config["params"]["max_false_alarm_rate"] == 0.2
    assert config["working_scale"]["chosen_by"].startswith("pixel budget")
    assert "working scale:" in out and "held-out good images" in out
    assert len(config["thresholds"]["details"]["normal_scores"]) == 8


def test_cli_evaluate_on_one_half(cli_model, tmp_path):
    data, model = cli_model
    sizes = {}
    for half in ("validation", "report"):
        target = tmp_path / f"{half}.json"
        assert (
            main(
                [
                    "evaluate",
                    str(model),
                    str(data.root),
                    "--category",
                    data.category,
                    "--half",
                    half,
                    "--json",
                    str(target),
                ]
            )
            == 0
        )
        sizes[half] = json.loads(target.read_text())["n_images"]
    assert sizes == {"validation": 4, "report": 2}  # 3 good + 3 spots: the odd image of each type validates


def test_cli_predict(cli_model, tmp_path, capsys):
    data, model = cli_model
    good_dir, spot_dir = data.test_good[0].parent, data.test_spot[0].parent
    code = main(["predict", str(model), str(good_dir), str(spot_dir), "-o", str(tmp_path / "pred")])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())["summary"]
    assert summary["n_images"] == 6 and summary["n_errors"] == 0
    # the default runtime, auto: ONNX Runtime where it is installed (this CPU), said where the user looks
    assert summary["runtime"] == ("onnx" if onnx_available() else "torch")
    assert f"network run by {summary['runtime']}" in out
    saved = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert [r["image"] for r in saved] == [str(p) for p in data.test_good + data.test_spot]
    # both folders hold 000.png ... : every image still gets its own overlay and mask
    assert len({r["overlay"] for r in saved}) == 6
    assert all((tmp_path / "pred" / r["mask"]).is_file() for r in saved)
    verdicts = [r["anomalous"] for r in saved]
    assert verdicts == [False] * 3 + [True] * 3
    assert f"{sum(verdicts)} of 6 images anomalous" in out


def test_cli_predict_searches_folders_of_folders(cli_model, tmp_path, capsys):
    data, model = cli_model
    test_dir = shutil.copytree(data.root / data.category / "test", tmp_path / "test")  # good/ and spot/
    out = test_dir / "predictions"  # inside the input: a rerun must not inspect its overlays and masks
    for _ in range(2):
        assert main(["predict", str(model), str(test_dir), "-o", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    expected = [test_dir / p.parent.name / p.name for p in data.test_good + data.test_spot]
    assert [r["image"] for r in saved] == [str(p) for p in expected]
    assert len({r["overlay"] for r in saved}) == 6  # good/000.png and spot/000.png: distinct output names
    assert [r["anomalous"] for r in saved] == [False] * 3 + [True] * 3
    assert "3 of 6 images anomalous" in capsys.readouterr().out


def test_cli_evaluate_writes_metrics_json(cli_model, tmp_path):
    data, model = cli_model
    target = tmp_path / "metrics.json"
    assert main(["evaluate", str(model), str(data.root), "--category", data.category, "--json", str(target)]) == 0
    report = json.loads(target.read_text())
    assert METRIC_KEYS <= set(report)
    assert report["n_images"] == 6
    assert set(report["per_defect_type"]) == {"spot"}
    assert report["per_defect_type"]["spot"]["n_defective"] == 3
    assert report["per_defect_type"]["spot"]["n_images"] == 6
    assert report["image_auroc"] == 1.0 and report["accuracy"] == 1.0  # the spots are obvious
    assert 0.8 <= report["pixel_auroc"] <= 1.0 and 0.0 < report["pixel_aupro"] <= 1.0
    assert report["seconds"] >= 0


@pytest.mark.parametrize(
    "case",
    [
        "predict-missing-model",
        "fit-missing-root",
        "fit-unknown-category",
        "evaluate-unknown-category",
        "predict-missing-input",
        "predict-empty-folder",
        "predict-ray-empty-folder",
        "fit-empty-folder",
        "classify-empty-folder",
    ],
)
def test_cli_user_errors_are_one_line(case, cli_model, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANOMALENS_DEBUG", raising=False)
    data, model = cli_model
    missing = tmp_path / "does-not-exist"
    empty = tmp_path / "empty"  # no image at any depth
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("not an image")
    argv, mentioned = {
        "predict-missing-model": (
            ["predict", str(missing), str(data.test_good[0]), "-o", str(tmp_path / "o")],
            str(missing),
        ),
        "fit-missing-root": (["fit", str(missing), "--category", "tex", "-o", str(tmp_path / "m")], str(missing)),
        "fit-unknown-category": (["fit", str(data.root), "--category", "nope", "-o", str(tmp_path / "m")], "nope"),
        "evaluate-unknown-category": (["evaluate", str(model), str(data.root), "--category", "nope"], "nope"),
        "predict-missing-input": (["predict", str(model), str(missing), "-o", str(tmp_path / "o")], str(missing)),
        "predict-empty-folder": (["predict", str(model), str(empty), "-o", str(tmp_path / "o")], str(empty)),
        "predict-ray-empty-folder": (
            ["predict", str(model), str(empty), "-o", str(tmp_path / "o"), "--engine", "ray"],
            str(empty),
        ),
        "fit-empty-folder": (["fit", str(empty), "-o", str(tmp_path / "m")], str(empty)),
        "classify-empty-folder": (["classify", str(data.root), str(empty)], str(empty)),
    }[case]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("anomalens: error:") and mentioned in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()
    if "empty" in case:  # says where it looked and for what
        assert "or any sub-folder" in lines[0] or "sub-folders not searched" in lines[0]
        assert ".png .jpg .jpeg .bmp .tif .tiff" in lines[0]


def _pip(extra: str) -> str:
    return f"needs the {extra} extra: pip install 'anomalens[{extra}]'"


@pytest.mark.parametrize(
    ("argv", "missing", "said"),
    [
        (["serve", "{model}"], "uvicorn", "anomalens serve " + _pip("service")),
        (["serve", "{model}"], "sqlalchemy", "anomalens serve " + _pip("service")),
        (["predict", "{model}", "{image}", "-o", "{out}", "--engine", "ray"], "ray", "--engine ray) " + _pip("ray")),
        (["fit-many", "{root}", "--categories", "tex", "-o", "{out}", "--engine", "ray"], "ray", _pip("ray")),
        (["chat", "{model}", "{image}", "--llm", "--question", "Where?"], "openai", "chat --llm " + _pip("llm")),
        (["chat", "{model}", "{image}", "--llm", "local", "--question", "Where?"], "openai", _pip("llm")),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(argv, missing, said, cli_model, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANOMALENS_DEBUG", raising=False)
    data, model = cli_model
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed: importing it raises ModuleNotFoundError
    for loaded in [name for name in sys.modules if name.startswith(("anomalens.service", "anomalens.engine.ray"))]:
        monkeypatch.delitem(sys.modules, loaded)  # imported by an earlier test: imported anew (and restored after)
    values = {"model": model, "image": data.test_spot[0], "out": tmp_path / "out", "root": data.root}
    code = main([arg.format(**values) for arg in argv])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip().splitlines() == [captured.err.strip()]
    assert captured.err.startswith("anomalens: error: ") and said in captured.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_onnx_runtime_without_its_extra_names_it(missing, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(MissingExtraError, match=r"^the ONNX runtime \(--runtime onnx\) " + re.escape(_pip("onnx"))):
        BaseDetector.use_onnx(types.SimpleNamespace(), tmp_path)  # what load_detector(..., runtime="onnx") calls


def test_requires_extra_leaves_other_import_errors_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # a package of no extra
    with pytest.raises(ModuleNotFoundError) as caught, requires_extra("anything"):
        import timm  # noqa: F401
    assert not isinstance(caught.value, MissingExtraError)


def test_every_extra_named_is_one_of_pyproject():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert set(EXTRA_OF_MODULE.values()) <= set(pyproject["project"]["optional-dependencies"])


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_within_its_shutdown_timeout_though_a_request_is_stuck(stop, cli_model, tmp_path):
    for module in ("uvicorn", "openai"):
        pytest.importorskip(module)
    httpx = pytest.importorskip("httpx")
    data, model = cli_model
    with socket.socket() as llm:  # an LLM server that takes the connection and never answers
        llm.bind(("127.0.0.1", 0))
        llm.listen()
        llm.settimeout(120)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "ANOMALENS_LLM_PROVIDER": "openai-compatible",
            "ANOMALENS_LLM_MODEL": "silent",
            "ANOMALENS_LLM_BASE_URL": f"http://127.0.0.1:{llm.getsockname()[1]}/v1",
            "ANOMALENS_LLM_VISION": "false",
            "ANOMALENS_LLM_TIMEOUT_S": "600",
            "ANOMALENS_LLM_MAX_RETRIES": "0",
        }
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        options = ["--port", str(port), "--data-dir", str(tmp_path), "--llm", "--shutdown-timeout", "2"]
        command = [sys.executable, "-m", "anomalens.cli.main", "serve", str(model), *options]
        server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
        try:
            wait_for_service(url, server)

            def inspect() -> None:
                with contextlib.suppress(httpx.HTTPError):  # answered 500 or cut off when the server stops
                    httpx.post(f"{url}/inspect", files={"file": ("a.png", data.test_spot[0].read_bytes())}, timeout=600)

            threading.Thread(target=inspect, daemon=True).start()
            connection, _ = llm.accept()  # the inspection now waits on the LLM, for up to its 600 s timeout
            with connection:
                stopped = time.monotonic()
                server.send_signal(stop)
                server.wait(timeout=120)
                took = time.monotonic() - stopped
        finally:
            server.kill()
            server.communicate()
    assert server.returncode == -stop  # the signal's own ending, as a supervisor expects
    assert 2 <= took < 60  # waited the 2 s granted to the request, then ended: not after the LLM's 600 s


def test_console_script_runs_as_a_subprocess():
    script = Path(sys.executable).with_name("anomalens")
    assert script.is_file(), "the anomalens console script is not installed in the venv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ANOMALENS_DEBUG", None)
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    for command in ("fit", "predict", "evaluate", "demo"):
        assert command in done.stdout
    failed = subprocess.run(
        [str(script), "predict", "/nonexistent/model", "x.png", "-o", "/tmp/never"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        "anomalens: error: no model found in /nonexistent/model (missing config.json)"
    ]


def test_demo_learns_inspects_explains_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "predictions" / "results.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(results) == 14 and any(r["anomalous"] for r in results)
    # the figures README.md reports for the demo; one good/defective pair out of order moves the AUROC by 1/40
    assert metrics["image_auroc"] == pytest.approx(0.975, abs=0.03)
    assert metrics["pixel_auroc"] == pytest.approx(0.78, abs=0.02)
    assert metrics["false_positive_rate"] == 0.0 and sum(r["anomalous"] for r in results) == 4
    first = next(r for r in results if r["anomalous"])
    assert first["explanation"]["source"] == "offline" and first["explanation"]["text"].startswith("Yes, there is")
    assert "you: Where is it?" in printed and "anomalens: The anomaly is" in printed
    report = (out / "report.html").read_text()
    assert report.lower().startswith("<!doctype html>") and "data:image/jpeg;base64," in report  # self-contained
