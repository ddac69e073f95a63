"""Simulated anomalies: per-kind invariants on real magnetic tiles and a colour texture, the NSA change mask,
the MVTec-layout writer, the ``simulate`` sub-command and the example grid."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomalens.cli.simulate import add_parser
from anomalens.data import mvtec_samples, read_image, read_mask
from anomalens.simulation import (
    KINDS,
    SHAPES,
    SimulatedAnomaly,
    example_grid,
    fractal_noise,
    perlin_mask,
    random_shape,
    save_example_grid,
    simulate,
    write_simulated_dataset,
)
from anomalens.simulation import nsa as nsa_module
from anomalens.simulation.nsa import simulate_nsa

THRESHOLD = 0.03  # the simulator's "changed pixel" threshold
DEMO_GOOD = Path(__file__).resolve().parent.parent / "anomalens" / "demo_data" / "magnetic_tile" / "train" / "good"
SHARED_GOOD = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "magnetic_tile" / "train" / "good"


def _first_images(folder: Path, count: int) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:count]
    return [read_image(p) for p in files]


def _change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(axis=2)


def _is_gray(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]))


@pytest.fixture(scope="module")
def image_sets(textures) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (good image, donor image): shipped tiles, a shared-data tile when present, a colour texture."""
    sets = {}
    demo = _first_images(DEMO_GOOD, 2)
    sets["demo_tile"] = (demo[0], demo[1])
    if SHARED_GOOD.is_dir():
        shared = _first_images(SHARED_GOOD, 2)
        sets["shared_tile"] = (shared[0], shared[1])
    sets["colour_texture"] = (textures.normal(120, 150, seed=1), textures.normal(110, 170, seed=2))
    return sets


def test_real_tiles_are_available(image_sets):
    if "shared_tile" not in image_sets:
        pytest.skip(f"no shared magnetic tile data at {SHARED_GOOD}; tested on the shipped tiles only")
    assert _is_gray(image_sets["shared_tile"][0])


@pytest.fixture(scope="module")
def simulated(image_sets) -> dict[tuple[str, str], tuple[np.ndarray, SimulatedAnomaly]]:
    out = {}
    for name, (good, donor) in image_sets.items():
        before = (good.copy(), donor.copy())
        for kind in KINDS:
            out[(name, kind)] = (good, simulate(good, kind, np.random.default_rng(7), source=donor))
        assert np.array_equal(good, before[0]) and np.array_equal(donor, before[1])  # inputs untouched
    return out


# -- invariants of every kind ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_changes_only_inside_a_reasonable_mask(simulated, image_sets, kind):
    for name in image_sets:
        good, sim = simulated[(name, kind)]
        assert sim.kind == kind, (name, sim.params)
        assert sim.image.dtype == np.float32 and sim.image.shape == good.shape
        assert sim.mask.dtype == bool and sim.mask.shape == good.shape[:2]
        assert 0.0 <= float(sim.image.min()) and float(sim.image.max()) <= 1.0
        assert sim.mask.any() and sim.mask.mean() < 0.5, (name, sim.mask.mean())
        change = _change(good, sim.image)
        # outside the mask nothing moved, for hard pastes and blended kinds alike
        assert np.array_equal(sim.image[~sim.mask], good[~sim.mask]), name
        # inside it the image changed visibly
        assert float(change[sim.mask].mean()) > 0.02, name
        assert int((change[sim.mask] > THRESHOLD).sum()) >= 20, name
        json.dumps(sim.params)  # JSON-safe


@pytest.mark.parametrize("kind", KINDS)
def test_gray_images_stay_gray_and_colour_stays_colour(simulated, image_sets, kind):
    for name in image_sets:
        good, sim = simulated[(name, kind)]
        assert _is_gray(sim.image) == _is_gray(good), name
    assert _is_gray(image_sets["demo_tile"][0])  # the tiles really are grey, the texture is not
    assert not _is_gray(image_sets["colour_texture"][0])


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_other_seed_other_result(image_sets, kind):
    good, donor = image_sets["demo_tile"]
    a = simulate(good, kind, np.random.default_rng(123), source=donor)
    b = simulate(good, kind, np.random.default_rng(123), source=donor)
    c = simulate(good, kind, np.random.default_rng(124), source=donor)
    assert a.image.tobytes() == b.image.tobytes() and np.array_equal(a.mask, b.mask) and a.params == b.params
    assert not np.array_equal(a.mask, c.mask)


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_image_is_a_clear_value_error(kind):
    with pytest.raises(ValueError, match=r"12x40 pixels.*at least 16"):
        simulate(np.zeros((12, 40, 3), np.float32), kind, np.random.default_rng(0))


def test_tiny_source_and_bad_arguments_are_clear_errors(image_sets):
    good = image_sets["demo_tile"][0]
    with pytest.raises(ValueError, match=r"source image is 10x10 pixels"):
        simulate(good, "nsa", np.random.default_rng(0), source=np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="unknown anomaly kind 'crack'"):
        simulate(good, "crack", np.random.default_rng(0))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        simulate(good, "nsa", 0)  # type: ignore[arg-type]


def test_smallest_images_work_for_every_kind():
    rng = np.random.default_rng(0)
    for shape in [(16, 16), (16, 23), (40, 17)]:
        for kind in KINDS:
            good = rng.random((*shape, 3)).astype(np.float32)
            sim = simulate(good, kind, rng)
            assert sim.mask.any() and np.array_equal(sim.image[~sim.mask], good[~sim.mask])


# -- NSA: the mask is what changed ---------------------------------------------------------------------------------
def test_nsa_mask_is_the_changed_pixels(image_sets):
    # two different textured tiles: every one of these draws is a real NSA paste, none falls back
    good, donor = image_sets["demo_tile"]
    clones = set()
    for seed in range(4):
        sim = simulate(good, "nsa", np.random.default_rng(seed), source=donor)
        assert sim.kind == "nsa" and "fallback_from" not in sim.params, (seed, sim.params)
        clones.add(sim.params["clone"])
        changed = _change(good, sim.image) > THRESHOLD
        assert not (changed & ~sim.mask).any()  # every changed pixel is in the mask
        # ... and the mask is essentially those pixels (a 3x3 closing may add a few in between)
        assert changed.sum() / sim.mask.sum() > 0.6
        assert sim.params["changed_pixels"] == int((changed & sim.mask).sum())
        assert sim.params["source"] == "other" and 0.7 <= sim.params["scale"] <= 1.3
    assert clones == {"normal", "mixed"}  # both Poisson modes are drawn


def test_nsa_without_source_takes_the_patch_from_the_image_itself(image_sets):
    good = image_sets["demo_tile"][0]
    sim = simulate(good, "nsa", np.random.default_rng(3))
    assert sim.kind == "nsa" and sim.params["source"] == "self"


def test_nsa_that_changes_nothing_is_never_returned_with_a_mask(image_sets, monkeypatch):
    good, donor = image_sets["demo_tile"]
    # a blend that changes nothing: seamlessClone hands back the destination unchanged
    monkeypatch.setattr(nsa_module.cv2, "seamlessClone", lambda src, dst, mask, center, flag: dst.copy())
    assert simulate_nsa(good, np.random.default_rng(0), donor) is None
    sim = simulate(good, "nsa", np.random.default_rng(0), source=donor)
    # the first fallback, a stain, takes its place and says so
    assert sim.kind == "stain" and sim.params["requested_kind"] == "nsa" and sim.params["fallback_from"] == ["nsa"]
    assert (_change(good, sim.image)[sim.mask] > THRESHOLD).sum() >= 20


def test_featureless_surface_falls_back_instead_of_claiming_a_defect():
    flat = np.full((64, 80, 3), 0.5, np.float32)
    sim = simulate(flat, "nsa", np.random.default_rng(0), source=flat.copy())
    assert sim.kind == "stain" and sim.params["requested_kind"] == "nsa" and sim.params["fallback_from"] == ["nsa"]
    assert int((_change(flat, sim.image)[sim.mask] > THRESHOLD).sum()) >= 20
    assert np.array_equal(sim.image[~sim.mask], flat[~sim.mask])


# -- building blocks -------------------------------------------------------------------------------------------------
def test_shapes_are_nonempty_and_fit_their_box():
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        for h, w in [(3, 3), (10, 14), (40, 25)]:
            mask, name = random_shape(h, w, rng, shapes=(shape,))
            assert name == shape and mask.shape == (h, w) and mask.dtype == bool and mask.any()
    with pytest.raises(ValueError, match="unknown shape"):
        random_shape(10, 10, rng, shapes=("star",))


def test_perlin_noise_and_mask():
    rng = np.random.default_rng(0)
    noise = fractal_noise((50, 70), (2, 3), rng, octaves=3)
    assert noise.shape == (50, 70) and noise.dtype == np.float32
    assert abs(float(noise.mean())) < 1e-4 and abs(float(noise.std()) - 1.0) < 1e-3
    assert np.abs(np.diff(noise, axis=1)).mean() < 0.5  # smooth, not white noise
    mask, params = perlin_mask((100, 120), rng, coverage=0.08)
    assert mask.dtype == bool and 0.03 < mask.mean() < 0.1
    json.dumps(params)


# -- data set writer -------------------------------------------------------------------------------------------------
def test_write_simulated_dataset_reads_back_as_mvtec(demo_data, tmp_path):
    out = tmp_path / "sim"
    summary = write_simulated_dataset(demo_data, "magnetic_tile", out, n=5, kinds=list(KINDS), seed=1)
    cat = out / "magnetic_tile"
    test = mvtec_samples(out, "magnetic_tile", "test")
    train = mvtec_samples(out, "magnetic_tile", "train")
    defects = [s for s in test if s.label == 1]
    goods = [s for s in test if s.label == 0]
    n_source = len(list((demo_data / "magnetic_tile" / "train" / "good").iterdir()))
    assert len(defects) == summary["n_defects"] == 5
    assert sum(summary["per_kind"].values()) == 5
    assert len(goods) == summary["n_test_good"] >= 1 and len(train) == summary["n_train_good"] >= 1
    assert len(goods) + len(train) == n_source
    assert not {s.path.name for s in goods} & {s.path.name for s in train}  # held out, not duplicated
    for sample in defects:
        assert sample.mask_path is not None, sample
        image, mask = read_image(sample.path), read_mask(sample.mask_path)
        assert mask.shape == image.shape[:2] and mask.any() and not mask.all()
        assert set(np.unique(cv2.imread(str(sample.mask_path), cv2.IMREAD_UNCHANGED))) == {0, 255}
    meta = json.loads((cat / "simulation.json").read_text())
    assert meta["seed"] == 1 and meta["kinds"] == list(KINDS) and len(meta["defects"]) == 5
    held = set(meta["test_good"])
    for record in meta["defects"]:
        assert (cat / record["image"]).is_file() and (cat / record["mask"]).is_file()
        assert record["base"] in held and record["source"] != record["base"]
        # one record reproduces its image from the base file, the seed and the donor
        if record["index"] == 0:
            donor = None if record["source"] is None else read_image(record["source"])
            again = simulate(
                read_image(record["base"]),
                record["requested_kind"],
                np.random.default_rng(record["rng_seed"]),
                source=donor,
            )
            assert np.array_equal(again.mask, read_mask(cat / record["mask"]))

    with pytest.raises(FileExistsError, match="already exists"):
        write_simulated_dataset(demo_data, "magnetic_tile", out, n=2, kinds=["stain"], seed=2)
    again = write_simulated_dataset(demo_data, "magnetic_tile", out, n=2, kinds=["stain"], seed=2, overwrite=True)
    assert again["per_kind"] == {"stain": 2} and not (cat / "test" / "nsa").exists()


def test_unreadable_good_images_are_skipped_with_a_warning(tiny_mvtec, tmp_path, caplog):
    bad = tiny_mvtec.root / tiny_mvtec.category / "train" / "good" / "zz_broken.png"
    bad.write_text("not a png")
    with caplog.at_level(logging.WARNING):
        summary = write_simulated_dataset(
            tiny_mvtec.root, tiny_mvtec.category, tmp_path / "out", n=3, kinds=["cutpaste", "texture"], seed=0
        )
    assert [s["path"] for s in summary["skipped"]] == [str(bad)]
    assert "zz_broken.png" in caplog.text
    assert summary["n_defects"] == 3 and summary["n_train_good"] + summary["n_test_good"] == 8


def test_writer_rejects_bad_arguments(demo_data, tmp_path):
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        write_simulated_dataset(demo_data, "magnetic_tile", tmp_path / "o", n=2, kinds=["crack"], seed=0)
    with pytest.raises(ValueError, match="positive integer"):
        write_simulated_dataset(demo_data, "magnetic_tile", tmp_path / "o", n=0, kinds=["nsa"], seed=0)
    with pytest.raises(ValueError, match="overlaps"):
        write_simulated_dataset(demo_data, "magnetic_tile", demo_data, n=1, kinds=["nsa"], seed=0)


# -- command line ----------------------------------------------------------------------------------------------------
def test_simulate_subcommand(tiny_mvtec, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="anomalens")
    add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli_out"
    args = parser.parse_args(
        [
            "simulate",
            str(tiny_mvtec.root),
            "--category",
            tiny_mvtec.category,
            "-o",
            str(out),
            "--n",
            "4",
            "--kind",
            "stain",
            "--kind",
            "scar",
            "--seed",
            "5",
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 simulated defective images" in printed and str(out / tiny_mvtec.category) in printed
    kinds = {s.defect_type for s in mvtec_samples(out, tiny_mvtec.category, "test") if s.label == 1}
    assert kinds <= {"stain", "scar"}
    defaults = parser.parse_args(["simulate", "d", "--category", "c", "-o", "o"])
    assert defaults.n == 50 and defaults.kinds is None and defaults.seed == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "d", "--category", "c", "-o", "o", "--kind", "crack"])


# -- example grid ------------------------------------------------------------------------------------------------------
def test_example_grid(simulated, tmp_path):
    examples = [sim for (name, _), (_, sim) in simulated.items() if name == "demo_tile"]
    grid = example_grid(examples, columns=2, tile_size=96)
    rows = -(-len(examples) // 2)
    assert grid.dtype == np.uint8 and grid.shape[0] > rows * 96 and grid.shape[1] > 2 * 2 * 96
    path = save_example_grid(examples, tmp_path / "docs" / "grid.png", columns=2, tile_size=96)
    assert cv2.imread(str(path)).shape == grid.shape
    assert (np.all(grid == (255, 40, 40), axis=2)).any()  # red outlines are drawn
