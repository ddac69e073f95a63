"""Drift watch on magnetic tile: images until the warning when the good images gradually darken or blur, and false
warnings per 10,000 images of an unchanged line, for several CUSUM allowances and limits
(``anomalens.postprocessing.drift``).

A PatchCore (``image_size=96, seed=0``) is fitted on 8 of the demo's good training tiles; the other 20 good tiles
(16 training, 4 test) are scored as they are and at each step of a darkening (pixel values times a factor) and of
a Gaussian blur. The streams are then simulated from these real scores: each image is one of the 20 tiles drawn at
random, at the level of the change it has reached. An unchanged line is simulated three ways: tiles' real scores
drawn again and again, the model's calibration normal scores drawn again and again, and continuous i.i.d. scores
(where the ranks are exactly uniform). A gradual change starts after the baseline and goes linearly from nothing
to its last level over ``--ramp`` images, then stays there.

    OMP_NUM_THREADS=1 .venv/bin/python bench/drift_watch.py --json bench/results/drift_watch.json \\
        --markdown bench/results/drift_watch.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from anomalens.data import read_image
from anomalens.models import PatchCore
from anomalens.postprocessing.drift import DriftState, DriftTest

TILES = Path(__file__).resolve().parents[1] / "anomalens" / "demo_data" / "magnetic_tile"
DARKEN = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]  # pixel values times this
BLUR = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]  # Gaussian sigma in pixels
SETTINGS = [(0.5, 12.0), (0.75, 10.0), (1.0, 8.0), (1.0, 10.0)]  # (allowance k, limit h) of the CUSUMs
UNCHANGED = 10_000


def changed(image: np.ndarray, kind: str, level: float) -> np.ndarray:
    if kind == "darken":
        return np.clip(image * level, 0.0, 1.0)
    return cv2.GaussianBlur(image, (0, 0), level) if level > 0 else image


def real_scores() -> tuple[list[float], dict[str, list[list[float]]], float]:
    """The calibration normal scores, the 20 good tiles' scores at each level of each change, and the threshold."""
    train = sorted((TILES / "train" / "good").glob("*.jpg"))
    model = PatchCore(image_size=96, seed=0).fit([read_image(path) for path in train[:8]])
    good = [read_image(path) for path in train[8:] + sorted((TILES / "test" / "good").glob("*.jpg"))]
    table = {
        kind: [[model.predict(changed(image, kind, level)).image_score for image in good] for level in levels]
        for kind, levels in (("darken", DARKEN), ("blur", BLUR))
    }
    return list(model.thresholds_.details["normal_scores"]), table, model.thresholds_.image


def feed(test: DriftTest, stream: np.ndarray) -> DriftState:
    state = DriftState()
    for score in stream:
        test.observe(state, float(score), True)
    return state


def false_warnings(test: DriftTest, pool: np.ndarray | None, runs: int, rng: np.random.Generator) -> dict:
    """Warnings (crossings of the limit) per 10,000 images after the baseline, on streams drawn from ``pool``
    (continuous uniform scores when None)."""
    total = test.baseline_images + UNCHANGED
    counts = []
    for _ in range(runs):
        stream = rng.random(total) if pool is None else rng.choice(pool, total)
        counts.append(feed(test, stream).warnings)
    return {
        "per_10000": float(np.mean(counts)) * 10_000 / UNCHANGED,
        "runs_with_a_warning": float(np.mean(np.asarray(counts) > 0)),
        "runs": runs,
    }


def until_warning(test: DriftTest, levels: list[list[float]], ramp: int, runs: int, rng: np.random.Generator) -> dict:
    """Images after the baseline until the first warning, with the change going from none to its last level over
    ``ramp`` images (None: no warning within 5 ramps)."""
    table = np.asarray(levels)
    steps = np.arange(5 * ramp)
    level_of_step = np.minimum((steps * (len(levels) - 1)) // ramp, len(levels) - 1)
    found = []
    for _ in range(runs):
        baseline = rng.choice(table[0], test.baseline_images)
        stream = table[level_of_step, rng.integers(0, table.shape[1], steps.size)]
        state = feed(test, np.concatenate([baseline, stream]))
        found.append(None if state.first_warning_at is None else state.first_warning_at - test.baseline_images)
    caught = [n for n in found if n is not None]
    return {
        "median": float(np.median(caught)) if caught else None,
        "p90": float(np.percentile(caught, 90)) if caught else None,
        "caught": len(caught) / runs,
        "level_at_median": int(level_of_step[int(np.median(caught)) - 1]) if caught else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--ramp", type=int, default=400)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    tic = time.perf_counter()
    calibration, table, threshold = real_scores()
    good = np.asarray(table["darken"][0])
    per_level = {kind: [round(float(np.median(scores)), 3) for scores in levels] for kind, levels in table.items()}
    results = {
        "threshold": threshold,
        "calibration_normal_scores": calibration,
        "good_scores": sorted(round(float(s), 4) for s in good),
        "median_score_per_level": per_level,
        "levels": {"darken": DARKEN, "blur": BLUR},
        "ramp_images": args.ramp,
        "settings": {},
    }
    # the reason the reference is the station's own baseline: the calibration normals as the reference
    against_calibration = DriftTest(baseline_images=len(calibration))
    calibrated = [
        feed(against_calibration, np.concatenate([calibration, rng.choice(good, UNCHANGED)])) for _ in range(20)
    ]
    results["calibration_reference_first_warning"] = float(
        np.median([s.first_warning_at - len(calibration) for s in calibrated if s.first_warning_at] or [np.nan])
    )
    for allowance, limit in SETTINGS:
        test = DriftTest(allowance=allowance, limit=limit)
        results["settings"][f"k={allowance:g} h={limit:g}"] = {
            "false_good": false_warnings(test, good, args.runs, rng),
            "false_calibration": false_warnings(test, np.asarray(calibration), args.runs, rng),
            "false_continuous": false_warnings(test, None, args.runs, rng),
            "darken": until_warning(test, table["darken"], args.ramp, args.runs, rng),
            "blur": until_warning(test, table["blur"], args.ramp, args.runs, rng),
        }
    results["seconds"] = round(time.perf_counter() - tic, 1)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    text = markdown(results, args.runs)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)


def markdown(results: dict, runs: int) -> str:
    ramp = results["ramp_images"]
    lines = [
        "# Drift watch on magnetic tile (bench/drift_watch.py)",
        "",
        f"PatchCore(image_size=96, seed=0) on 8 good tiles; image threshold {results['threshold']:.3f}. "
        f"Median score of the 20 other good tiles per level: darken {results['median_score_per_level']['darken']} "
        f"(factors {results['levels']['darken']}), blur {results['median_score_per_level']['blur']} "
        f"(sigmas {results['levels']['blur']}).",
        "",
        f"Calibration normal scores {sorted(round(s, 2) for s in results['calibration_normal_scores'])}; "
        f"good tiles {results['good_scores']}. With the calibration normals as the reference instead of the "
        f"station's baseline, an unchanged stream of good tiles warns after a median "
        f"{results['calibration_reference_first_warning']:g} images.",
        "",
        f"Changes go linearly from none to the last level over {ramp} images after the 32-image baseline; "
        f"{runs} simulated streams each. False warnings: crossings of the limit per 10,000 unchanged images; "
        "runs warned: the share of 10,000-image streams with any.",
        "",
        "| CUSUM | false /10k: good tiles | runs warned | false /10k: calibration | false /10k: continuous "
        "| darken: median (p90) images | darken caught | blur: median (p90) images | blur caught |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, row in results["settings"].items():

        def found(change: dict) -> str:
            return "-" if change["median"] is None else f"{change['median']:g} ({change['p90']:g})"

        lines.append(
            f"| {setting} | {row['false_good']['per_10000']:.2f} | {row['false_good']['runs_with_a_warning']:.2f} "
            f"| {row['false_calibration']['per_10000']:.2f} | {row['false_continuous']['per_10000']:.2f} "
            f"| {found(row['darken'])} | {row['darken']['caught']:.2f} | {found(row['blur'])} "
            f"| {row['blur']['caught']:.2f} |"
        )
    lines += ["", f"{results['seconds']} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
