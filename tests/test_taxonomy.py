"""Defect-type taxonomy: few-shot classification of regions, "unknown", confidence, files, folders, API, CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from anomalens import api
from anomalens.cli import classify as classify_cli
from anomalens.explanation.taxonomy import UNKNOWN, Taxonomy, folder_examples, load_taxonomy, region_embedding
from anomalens.models import PatchCore

SIZE = (96, 96)
TYPES = ("hole", "scratch", "patch")


def make_example(textures, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A texture with one defect of ``kind``: dark round blob, bright thin scratch, or checkered patch."""
    base = textures.normal(*SIZE, seed=1000 + seed)
    rng = np.random.default_rng(seed)
    if kind == "hole":
        return textures.defect(base, "blob", size=int(rng.integers(9, 13)), seed=seed)
    if kind == "scratch":
        return textures.defect(base, "scratch", size=int(rng.integers(24, 32)), seed=seed)
    side = int(rng.integers(22, 30))
    y0, x0 = (int(v) for v in rng.integers(8, SIZE[0] - side - 8, size=2))
    mask = np.zeros(SIZE, bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    yy, xx = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    checker = (((yy // 3) + (xx // 3)) % 2).astype(np.float32)
    out = base.copy()
    out[mask] = (0.2 + 0.6 * checker[mask])[:, None]
    return out.astype(np.float32), mask


@pytest.fixture(scope="module")
def examples(textures):
    return {kind: [make_example(textures, kind, seed) for seed in range(6)] for kind in TYPES}


@pytest.fixture(scope="module")
def taxonomy(examples) -> Taxonomy:
    support = [(image, mask, kind) for kind in TYPES for image, mask in examples[kind][:4]]
    return Taxonomy().fit(support)


def test_embedding_is_unit_length_and_works_for_gray(textures, examples):
    image, mask = examples["hole"][0]
    vector = region_embedding(image, mask)
    assert vector.dtype == np.float32 and vector.ndim == 1
    assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    gray = image.mean(axis=2)
    for variant in (gray, gray[..., None], np.repeat(gray[..., None], 3, axis=2)):
        v = region_embedding(variant, mask)
        assert v.shape == vector.shape and np.isfinite(v).all()
    assert region_embedding(image, None).shape == vector.shape  # whole image


def test_held_out_examples_are_classified_correctly(taxonomy, examples):
    assert taxonomy.types == sorted(TYPES)
    for kind in TYPES:
        for image, mask in examples[kind][4:]:
            label, confidence, distances = taxonomy.classify(image, mask)
            assert label == kind, (kind, distances)
            assert 0.0 <= confidence <= 1.0
            assert set(distances) == set(TYPES)


@pytest.mark.parametrize("method", ["knn", "prototype"])
def test_distance_methods_also_classify(taxonomy, examples, method):
    other = taxonomy.with_method(method)
    assert taxonomy.classifier_ is not None and other.classifier_ is None
    for kind in TYPES:
        for image, mask in examples[kind][4:]:
            assert other.classify(image, mask)[0] == kind


def test_a_single_type_names_its_own_and_rejects_the_far(examples, textures):
    single = Taxonomy().fit([(image, mask, "hole") for image, mask in examples["hole"][:4]])
    assert single.classifier_ is None
    image, mask = examples["hole"][5]
    assert single.classify(image, mask)[:2] == ("hole", 1.0)
    rng = np.random.default_rng(5)
    noise = rng.uniform(0, 1, size=(*SIZE, 3)).astype(np.float32)
    noise[..., 1:] = 0.0
    assert single.classify(noise, None)[0] == UNKNOWN


def test_far_region_is_unknown(taxonomy, textures):
    rng = np.random.default_rng(5)
    noise = rng.uniform(0, 1, size=(*SIZE, 3)).astype(np.float32)
    noise[..., 1:] = 0.0  # saturated red noise over the whole frame
    label, confidence, distances = taxonomy.classify(noise, None)
    assert label == UNKNOWN, distances
    assert 0.0 <= confidence <= 1.0


def test_confidence_is_higher_for_clear_cases(taxonomy, examples):
    hole, hole_mask = examples["hole"][5]
    _, clear, _ = taxonomy.classify(hole, hole_mask)
    # an ambiguous case: the same spot blended half way towards a scratch example's region
    scratch, scratch_mask = examples["scratch"][5]
    blended = (0.5 * hole + 0.5 * scratch).astype(np.float32)
    _, ambiguous, _ = taxonomy.classify(blended, hole_mask | scratch_mask)
    assert 0.0 <= ambiguous < clear <= 1.0


def test_save_load_round_trip(taxonomy, examples, tmp_path):
    folder = taxonomy.save(tmp_path / "tax")
    assert (folder / "taxonomy.json").is_file() and (folder / "embeddings.safetensors").is_file()
    loaded = Taxonomy.load(folder)
    assert loaded.labels == taxonomy.labels and loaded.radii == taxonomy.radii
    for kind in TYPES:
        image, mask = examples[kind][5]
        assert loaded.classify(image, mask) == taxonomy.classify(image, mask)


def write_examples(root, examples, png_writer, mvtec: bool):
    for kind in TYPES:
        for i, (image, mask) in enumerate(examples[kind][:3]):
            if mvtec:
                png_writer(root / "test" / kind / f"{i:03d}.png", image)
                png_writer(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
            else:
                png_writer(root / kind / f"{i:03d}.png", image)
                if i < 2:
                    png_writer(root / kind / f"{i:03d}_mask.png", mask)


def test_from_folders_mvtec_layout(tmp_path, examples, png_writer, textures):
    root = tmp_path / "types"
    write_examples(root, examples, png_writer, mvtec=True)
    png_writer(root / "test" / "good" / "000.png", textures.normal(*SIZE, seed=7))  # ignored
    found = folder_examples(root)
    assert len(found) == 9 and all(mask is not None for _, mask, _ in found)
    taxonomy = Taxonomy.from_folders(root)
    assert taxonomy.types == sorted(TYPES)
    for kind in TYPES:
        image, mask = examples[kind][5]
        assert taxonomy.classify(image, mask)[0] == kind


def test_from_folders_plain_layout_with_and_without_masks(tmp_path, examples, png_writer):
    root = tmp_path / "plain"
    write_examples(root, examples, png_writer, mvtec=False)
    found = folder_examples(root)
    assert len(found) == 9  # the *_mask.png files are not examples
    assert sum(mask is None for _, mask, _ in found) == 3
    assert Taxonomy.from_folders(root).types == sorted(TYPES)


def test_inspect_with_taxonomy_adds_types_to_regions(taxonomy, textures, png_writer, tmp_path):
    detector = PatchCore(image_size=64, min_bank_size=256, augment_below=4).fit(
        textures.normals([(80, 100)] * 5, first_seed=0)
    )
    spot, _ = textures.defect(textures.normal(80, 100, seed=45), "blob", center=(40, 50), size=12)
    png_writer(tmp_path / "in" / "spot.png", spot)
    png_writer(tmp_path / "in" / "good.png", textures.normal(80, 100, seed=46))
    run = api.inspect(detector, [tmp_path / "in"], None, taxonomy=taxonomy)
    records = {r["image"].rsplit("/", 1)[-1]: r for r in run.to_dict()["results"]}
    # the planted dark blob is a hole, and the good image has no region to type
    assert records["spot.png"]["anomalous"] and not records["good.png"]["anomalous"]
    assert records["good.png"]["regions"] == []
    spot_region = records["spot.png"]["regions"][0]
    assert spot_region["defect_type"] == "hole", records["spot.png"]["regions"]
    assert 0.5 < spot_region["type_confidence"] <= 1.0
    assert "looks most like hole" in records["spot.png"]["explanation"]["text"]
    plain = api.inspect(detector, [tmp_path / "in" / "spot.png"], None)
    assert all("defect_type" not in region for region in plain.to_dict()["results"][0]["regions"])


def test_cli_parser_and_command(tmp_path, examples, png_writer, taxonomy):
    parser = argparse.ArgumentParser(prog="anomalens")
    classify_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["classify", "tax", "a.png", "b", "--mask", "m.png", "--json", "o.json"])
    assert (args.taxonomy, args.images, args.mask, args.model, args.json) == (
        "tax",
        ["a.png", "b"],
        "m.png",
        None,
        "o.json",
    )
    saved = taxonomy.save(tmp_path / "tax")
    image, mask = examples["scratch"][5]
    png_writer(tmp_path / "q" / "scratch.png", image)
    png_writer(tmp_path / "q" / "scratch_mask.png", mask)
    out = tmp_path / "out.json"
    args = parser.parse_args(
        [
            "classify",
            str(saved),
            str(tmp_path / "q" / "scratch.png"),
            "--mask",
            str(tmp_path / "q" / "scratch_mask.png"),
            "--json",
            str(out),
        ]
    )
    assert args.func(args) == 0
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 1 and rows[0]["defect_type"] == "scratch" and rows[0]["region"] == "mask"
    assert 0.0 <= rows[0]["type_confidence"] <= 1.0
    # no mask, a folder of examples as the taxonomy: the whole image is classified, here against a plain folder
    # whose examples without a mask are whole images too (drawn regions alone would call a whole frame unknown)
    examples_root = tmp_path / "examples"
    write_examples(examples_root, examples, png_writer, mvtec=False)
    args = parser.parse_args(["classify", str(examples_root), str(tmp_path / "q" / "scratch.png"), "--json", str(out)])
    assert args.func(args) == 0
    rows = json.loads(out.read_text())["results"]
    assert rows[0]["region"] == "whole" and rows[0]["defect_type"] == "scratch", rows


def test_from_folders_with_a_detector_adds_its_regions_of_the_examples(tmp_path, examples, png_writer, textures):
    root = tmp_path / "types"
    write_examples(root, examples, png_writer, mvtec=True)
    detector = PatchCore(image_size=64, min_bank_size=256, augment_below=4).fit(
        textures.normals([SIZE] * 5, first_seed=500)
    )
    taxonomy = Taxonomy.from_folders(root, detector=detector)
    drawn = [n for n in taxonomy.names if not n.endswith("(detector region)")]
    seen = [(n, label) for n, label in zip(taxonomy.names, taxonomy.labels) if n.endswith("(detector region)")]
    assert len(drawn) == 9 and seen  # every example once as drawn, and again where the detector outlines it
    for name, label in seen:  # the detector's view keeps the example's type
        assert f"/{label}/" in name
    folder = taxonomy.save(tmp_path / "saved")
    assert load_taxonomy(folder).names == taxonomy.names  # a saved taxonomy loads as it is, detector or not
    rows = api.classify(taxonomy, [root / "test" / "hole" / "000.png"], detector=detector)
    assert rows and rows[0].defect_type == "hole" and rows[0].region == 0 and rows[0].bbox, rows
