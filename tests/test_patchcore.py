"""PatchCore internals: coreset selection, nearest-neighbour scoring, memory-bank size, self-calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalens.data import mvtec_samples, read_image
from anomalens.evaluation.metrics import image_auroc
from anomalens.models import PatchCore, load_detector
from anomalens.models.backbones.registry import build_feature_extractor
from anomalens.models.patchcore import detector as patchcore_detector
from anomalens.models.patchcore.coreset import greedy_coreset
from anomalens.models.patchcore.detector import dihedral, dihedral_grid
from anomalens.models.patchcore.torch_model import (
    BANK_CHUNK,
    FAR,
    QUERY_CHUNK,
    PatchCoreModel,
    nearest_distances,
    squared_nearest,
)

# image_size 64: blocks.4 (stride 8) gives an 8x8 grid, i.e. 64 patches per view
PATCHES_PER_VIEW_64 = 64


# -- greedy k-center coreset ------------------------------------------------------------------------------------
def clustered_cloud(dim: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Five big tight clusters near the origin and one small cluster (8 of 2008 points) far away."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 3.0, size=(5, dim))
    big = np.concatenate([c + 0.5 * rng.standard_normal((400, dim)) for c in centers])
    far = 40.0 * np.ones(dim) / np.sqrt(dim) * 3 + 0.5 * rng.standard_normal((8, dim))
    points = np.concatenate([big, far]).astype(np.float32)
    is_far = np.zeros(len(points), bool)
    is_far[-8:] = True
    return torch.from_numpy(points), is_far


def covering_radius(points: torch.Tensor, chosen: torch.Tensor) -> float:
    """Largest distance from any point to its nearest chosen point."""
    return float(torch.cdist(points.double(), points[chosen].double()).min(dim=1).values.max())


@pytest.mark.parametrize("dim", [16, 256], ids=["raw", "projected"])  # 256 > projection_dim 128
def test_greedy_coreset_picks_distinct_valid_indices(dim):
    points, _ = clustered_cloud(dim)
    chosen = greedy_coreset(points, 60, seed=3)
    assert chosen.dtype == torch.long and chosen.shape == (60,)
    assert len(set(chosen.tolist())) == 60
    assert int(chosen.min()) >= 0 and int(chosen.max()) < len(points)
    assert torch.equal(chosen, greedy_coreset(points, 60, seed=3))  # reproducible


@pytest.mark.parametrize("size", [37, 38, 500])
def test_greedy_coreset_returns_everything_when_size_reaches_n(size):
    points = torch.randn(37, 8, generator=torch.Generator().manual_seed(0))
    chosen = greedy_coreset(points, size)
    assert sorted(chosen.tolist()) == list(range(37))


@pytest.mark.parametrize("dim", [16, 256], ids=["raw", "projected"])
def test_greedy_coreset_covers_better_than_random(dim):
    points, is_far = clustered_cloud(dim)
    size = 30
    chosen = greedy_coreset(points, size, seed=0)
    assert is_far[chosen.numpy()].any(), "the small far cluster must be represented"
    greedy_radius = covering_radius(points, chosen)
    generator = torch.Generator().manual_seed(1)
    random_radii = [covering_radius(points, torch.randperm(len(points), generator=generator)[:size]) for _ in range(20)]
    assert greedy_radius < min(random_radii)
    # far cluster points are covered by a centre inside their cluster, not by one of the big clusters
    far_to_chosen = torch.cdist(points[is_far], points[chosen]).min(dim=1).values
    far_to_big = torch.cdist(points[is_far], points[~is_far]).min()
    assert float(far_to_chosen.max()) < 0.25 * float(far_to_big)


# -- nearest-neighbour distances -------------------------------------------------------------------------------
def reference_nearest(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    return torch.cdist(queries.double(), bank.double(), compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values


@pytest.mark.parametrize("n_queries", [50, QUERY_CHUNK + 321])  # the second spans two query chunks
def test_nearest_distances_matches_cdist(n_queries):
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(300, 24, generator=generator)
    queries = torch.randn(n_queries, 24, generator=generator)
    queries[:10] = bank[:10]  # exact matches: distance 0
    got = nearest_distances(queries, bank)
    assert got.shape == (n_queries,) and got.dtype == torch.float32
    expected = reference_nearest(queries, bank)
    # float32 |q|^2 - 2 q.b + |b|^2 loses ~1e-6 of |q|^2 to cancellation: ~3e-3 after the square root
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-2)
    assert float(got[:10].max()) < 1e-2
    # precomputed norms give the same answer
    torch.testing.assert_close(nearest_distances(queries, bank, (bank * bank).sum(dim=1)), got)


@pytest.mark.parametrize("bank_chunk", [None, 100, BANK_CHUNK])
def test_search_by_bank_chunks_matches_cdist(bank_chunk):
    """Cut into chunks (the last one short), the bank gives the same nearest rows, penalties included."""
    generator = torch.Generator().manual_seed(2)
    bank = torch.randn(BANK_CHUNK * 2 + 77, 16, generator=generator)
    queries = torch.cat([bank[-5:], bank[:5], torch.randn(40, 16, generator=generator)])
    norms = (bank * bank).sum(dim=1)
    got = squared_nearest(queries, bank, norms, bank_chunk=bank_chunk).clamp_min(0).sqrt()
    torch.testing.assert_close(got.double(), reference_nearest(queries, bank), rtol=1e-4, atol=1e-2)
    # a penalty per bank row, and one per query and bank row, rule rows out in every chunk
    excluded = torch.zeros(len(bank), dtype=torch.bool)
    excluded[-5:] = True
    by_row = squared_nearest(queries, bank, norms, excluded.float() * FAR, bank_chunk).clamp_min(0).sqrt()
    torch.testing.assert_close(by_row.double(), reference_nearest(queries, bank[~excluded]), rtol=1e-4, atol=1e-2)
    per_pair = excluded.float().expand(len(queries), -1) * FAR
    torch.testing.assert_close(squared_nearest(queries, bank, norms, per_pair, bank_chunk).clamp_min(0).sqrt(), by_row)


def test_nearest_distances_with_excluded_rows():
    generator = torch.Generator().manual_seed(1)
    bank = torch.randn(200, 16, generator=generator)
    queries = torch.cat([bank[:20], torch.randn(80, 16, generator=generator)])
    excluded = torch.zeros(200, dtype=torch.bool)
    excluded[:50] = True  # includes each of the first 20 queries' exact match
    got = nearest_distances(queries, bank, excluded=excluded)
    expected = reference_nearest(queries, bank[~excluded])
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-2)
    assert float(got[:20].min()) > 0.5  # leaving its own row out, no query finds itself
    # all but one row excluded: every query measures against that row
    only = torch.ones(200, dtype=torch.bool)
    only[7] = False
    torch.testing.assert_close(
        nearest_distances(queries, bank, excluded=only).double(),
        (queries.double() - bank[7].double()).norm(dim=1),
        rtol=1e-4,
        atol=1e-2,
    )


# -- fitting ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ratio", "min_bank", "expected"),
    [
        (0.5, 16, 128),  # the ratio decides: round(0.5 * 256)
        (0.1, 100, 100),  # round(0.1 * 256) = 26 is below the floor
        (0.1, 10_000, 256),  # the floor exceeds the patches there are: keep them all
    ],
)
def test_memory_bank_size_follows_ratio_and_floor(textures, tmp_path, ratio, min_bank, expected):
    images = textures.normals([(64, 64)] * 4, first_seed=0)
    detector = PatchCore(image_size=64, coreset_ratio=ratio, min_bank_size=min_bank, augment_below=0)
    detector.fit(images)
    assert detector.info_["n_patches"] == 4 * PATCHES_PER_VIEW_64
    assert detector.model_.memory_bank.shape[0] == expected
    assert len(torch.unique(detector.model_.memory_bank, dim=0)) == expected  # distinct patches
    loaded = PatchCore.load(detector.save(tmp_path / "model"))
    assert torch.equal(loaded.model_.memory_bank, detector.model_.memory_bank)


def test_few_shot_augmentation_enlarges_the_bank(textures):
    image = textures.normal(64, 64, seed=0)
    plain = PatchCore(image_size=64, min_bank_size=10**6, augment_below=0).fit([image, image[::-1].copy()])
    augmented = PatchCore(image_size=64, min_bank_size=10**6, augment_below=8).fit([image, image[::-1].copy()])
    assert plain.info_["n_patches"] == 2 * PATCHES_PER_VIEW_64
    assert augmented.info_["augmented_views"] and augmented.info_["n_patches"] == 16 * PATCHES_PER_VIEW_64
    assert augmented.model_.memory_bank.shape[0] == 16 * PATCHES_PER_VIEW_64


def test_dihedral_views_are_the_eight_symmetries():
    pixels = np.random.default_rng(0).random((5, 5, 3)).astype(np.float32)
    views = [dihedral(pixels, t) for t in range(8)]
    assert np.array_equal(views[0], pixels)
    assert len({v.tobytes() for v in views}) == 8
    assert all(v.flags.c_contiguous and v.shape == (5, 5, 3) for v in views)


def test_dihedral_grid_moves_labels_with_the_pixels():
    """Patch labels must follow their pixels through each flip/rotation, or leave-out groups get mixed."""
    pixels = np.random.default_rng(1).random((6, 6, 1)).astype(np.float32)
    grid = torch.from_numpy(pixels[..., 0]).unsqueeze(0)
    for transform in range(8):
        assert np.array_equal(dihedral_grid(grid, transform)[0].numpy(), dihedral(pixels, transform)[..., 0])


def test_fit_without_images_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one"):
        PatchCore(image_size=64).fit([])


@pytest.mark.parametrize("feature_dims", [0, 153])
def test_an_impossible_feature_width_is_refused_before_any_image_is_read(textures, feature_dims):
    read = []

    def images():
        for seed in range(4):
            read.append(seed)
            yield textures.normal(64, 64, seed)

    with pytest.raises(ValueError, match="feature_dims must lie between 1 and the features' 152 dimensions"):
        PatchCore(image_size=64, feature_dims=feature_dims).fit(images())
    assert read == []


def test_leave_one_out_thresholds(textures):
    """Thresholds come from each training image scored against a bank without its own patches.

    With the whole bank kept (no coreset), image i's leave-one-out score must equal the score of a detector
    fitted on the other images only; the threshold must sit above the training images' own (in-bank) scores
    and above most leave-one-out scores, and held-out normals must mostly stay below it.
    """
    params = {"image_size": 64, "min_bank_size": 10**6, "augment_below": 0, "calibration": "normal"}
    train = textures.normals([(64, 64)] * 5, first_seed=0)  # network size: maps need no resizing
    detector = PatchCore(**params).fit(train)
    thresholds = detector.thresholds_
    loo = []
    for i in range(len(train)):
        others = PatchCore(**params).fit(train[:i] + train[i + 1 :])
        loo.append(others.predict(train[i]).image_score)
    assert thresholds.details["n_normal"] == 5
    assert thresholds.details["normal_score_mean"] == pytest.approx(np.mean(loo), rel=1e-4)
    assert thresholds.details["normal_score_max"] == pytest.approx(max(loo), rel=1e-4)

    in_bank = [detector.predict(image).image_score for image in train]
    assert all(s < thresholds.image for s in in_bank)
    assert all(own < left_out for own, left_out in zip(in_bank, loo))  # leaving out really removes patches
    assert sum(s < thresholds.image for s in loo) >= 4
    held_out = [detector.predict(textures.normal(64, 64, seed=50 + k)).image_score for k in range(6)]
    assert sum(s < thresholds.image for s in held_out) >= 5, (held_out, thresholds.image)


def test_a_fit_holds_bounded_samples_of_a_one_pass_stream(textures):
    """More patches than coreset candidates, more images than are scored or given simulated defects: the fit
    keeps samples of each (reading the stream once) and says how much it saw."""
    images = (textures.normal(64, 64, seed=k) for k in range(10))
    detector = PatchCore(
        image_size=64,
        augment_below=0,
        coreset_candidates=200,
        min_bank_size=50,
        calibration_images=4,
        simulated_images=3,
        simulated_per_image=2,
    ).fit(images)
    assert detector.info_["n_images"] == 10
    assert detector.info_["n_patches"] == 10 * PATCHES_PER_VIEW_64
    assert detector.info_["n_coreset_candidates"] == 200
    assert detector.model_.memory_bank.shape[0] == 50
    assert detector.thresholds_.details["n_normal"] == 4
    assert detector.thresholds_.details["n_simulated"] == 3 * 2


def test_calibration_images_caps_the_scored_images(textures):
    train = textures.normals([(64, 64)] * 5, first_seed=0)
    detector = PatchCore(image_size=64, augment_below=0, calibration_images=3).fit(train)
    assert detector.thresholds_.details["n_normal"] == 3


def test_demo_tiles_good_ones_pass_and_defects_rank_higher(demo_data):
    """Realism check on the shipped magnetic tile photos (24 normal training images, 14 test images)."""
    train = [read_image(s.path) for s in mvtec_samples(demo_data, "magnetic_tile", "train")]
    test = mvtec_samples(demo_data, "magnetic_tile", "test")
    detector = PatchCore(image_size=128, min_bank_size=1024).fit(train)
    predictions = [detector.predict(read_image(s.path)) for s in test]
    labels = np.array([s.label for s in test])
    scores = np.array([p.image_score for p in predictions])
    assert image_auroc(labels, scores) >= 0.8
    assert not any(p.is_anomalous for p, s in zip(predictions, test) if s.label == 0)
    assert any(p.is_anomalous for p, s in zip(predictions, test) if s.label == 1)


# -- regressions of bugs found in review -------------------------------------------------------------------------
def test_single_shot_without_augmentation_fits(textures):
    detector = PatchCore(image_size=64, augment_below=0).fit([textures.normal(96, 96, seed=0)])
    assert detector.thresholds_ is not None and detector.thresholds_.image > 0


def test_defect_near_corner_is_localised(textures):
    detector = PatchCore(image_size=128, min_bank_size=512, augment_below=4)
    detector.fit(textures.normals([(160, 160)] * 5, first_seed=0))
    image, truth = textures.defect(textures.normal(160, 160, seed=70), "blob", center=(25, 25), size=12)
    prediction = detector.predict(image)
    assert prediction.is_anomalous  # found: this part holds
    ay, ax = np.unravel_index(int(np.argmax(prediction.anomaly_map)), prediction.anomaly_map.shape)
    ys, xs = np.nonzero(truth)
    assert np.sqrt(((ys - ay) ** 2 + (xs - ax) ** 2).min()) <= 4.0, (ay, ax)


def test_single_shot_at_the_defaults_passes_good_demo_tiles_and_finds_defects(demo_data):
    # one image's quarters show its own spread, not the spread between parts, so four good tiles cannot prove the
    # 5 % rate; what they can show: two flagged of four would be a 1-in-70 event at 5 %, so at most one is
    train = mvtec_samples(demo_data, "magnetic_tile", "train")
    detector = PatchCore(image_size=128, min_bank_size=1024).fit([read_image(train[0].path)])
    test = mvtec_samples(demo_data, "magnetic_tile", "test")
    flagged = {s.path.name: detector.predict(read_image(s.path)).is_anomalous for s in test}
    false_alarms = [s.path.name for s in test if s.label == 0 and flagged[s.path.name]]
    found = [s.path.name for s in test if s.label == 1 and flagged[s.path.name]]
    assert len(false_alarms) <= 1, (false_alarms, detector.thresholds_.image)
    assert len(found) >= 5, found  # one good image is enough to find most of the shipped defects


@pytest.mark.parametrize("padding", ["zero", "replicate"])
def test_neighbourhood_padding_at_the_edge(padding):
    model = PatchCoreModel(build_feature_extractor(), ("blocks.4",), 64, padding=padding)
    averaged = model._neighbourhood_average(torch.ones(1, 2, 5, 5))
    assert torch.allclose(averaged[..., 1:-1, 1:-1], torch.ones(1, 2, 3, 3))
    # a corner cell sees 4 of its 9 neighbourhood cells inside the map
    corner = 1.0 if padding == "replicate" else 4 / 9
    assert averaged[0, 0, 0, 0].item() == pytest.approx(corner)
    with pytest.raises(ValueError, match="padding"):
        PatchCoreModel(build_feature_extractor(), ("blocks.4",), 64, padding="reflect")


@pytest.mark.parametrize("padding", ["zero", "replicate"])
def test_onnx_runtime_gives_the_pytorch_maps_and_learned_marks_keep_pytorch(textures, tmp_path, padding):
    pytest.importorskip("onnxruntime")
    from anomalens.learning import learn_normal_images

    detector = PatchCore(image_size=96, seed=0, neighbourhood_padding=padding).fit(
        textures.normals([(96, 112)] * 6, first_seed=0)
    )
    detector.save(tmp_path / "model")
    through_onnx = load_detector(tmp_path / "model", runtime="onnx")
    assert (tmp_path / "model" / "model.onnx").is_file()
    images = [textures.normal(96, 112, seed=50), textures.defect(textures.normal(96, 112, seed=51), "blob")[0]]
    for image in images:
        expected, got = detector.predict(image), through_onnx.predict(image)
        # float32 sums in another order: the same maps up to rounding, relative to the map's scale
        assert np.abs(got.anomaly_map - expected.anomaly_map).max() < 1e-5 * expected.anomaly_map.max()
        assert got.image_score == pytest.approx(expected.image_score, rel=1e-5)
        assert got.is_anomalous == expected.is_anomalous

    # a model with learned marks scores their places in PyTorch, whichever runtime was asked for
    learn_normal_images(through_onnx, [("defect.png", images[1])], "ann", force=True)
    assert through_onnx.predict(images[1]).is_anomalous is False


def test_a_batch_prediction_on_the_cpu_runs_the_network_on_small_batches_with_the_single_images_maps(textures):
    detector = PatchCore(image_size=64, seed=0, batch_size=8, device="cpu").fit(
        textures.normals([(64, 64)] * 4, first_seed=0)
    )
    images = [textures.normal(64, 64, seed=60 + index) for index in range(5)]
    sizes = []
    network = detector._score_view_batch

    def counted(pixels, views):
        sizes.append(len(pixels))
        return network(pixels, views)

    detector._score_view_batch = counted
    together = detector.predict_batch(images)
    # the search's products outgrow the cache with the batch: a CPU takes CPU_BATCH views at a time
    assert sizes == [2, 2, 1] and patchcore_detector.CPU_BATCH == 2
    for image, got in zip(images, together):
        alone = detector.predict(image)
        assert np.abs(got.anomaly_map - alone.anomaly_map).max() <= 1e-5 * alone.anomaly_map.max()
        assert got.image_score == pytest.approx(alone.image_score, rel=1e-5)


# -- reduced features (feature_dims) ----------------------------------------------------------------------------
def test_feature_dims_reduce_the_bank_and_all_of_them_keep_the_unreduced_maps(textures):
    train = textures.normals([(96, 112)] * 6, first_seed=0)
    image = textures.defect(textures.normal(96, 112, seed=50), "blob")[0]
    plain = PatchCore(image_size=96).fit(train)
    width = plain.model_.embedding_dim
    rotated = PatchCore(image_size=96, feature_dims=width).fit(train)
    reduced = PatchCore(image_size=96, feature_dims=16).fit(train)

    components = reduced.model_.reduction
    assert components.shape == (width, 16) and reduced.model_.memory_bank.shape[1] == 16
    assert torch.allclose(components.T @ components, torch.eye(16), atol=1e-5)  # orthonormal
    assert reduced.info_["feature_dim"] == 16 and plain.info_["feature_dim"] == width
    # the bank's spread along each component falls from the first to the last, as principal components do
    spread = (reduced.model_.memory_bank - reduced.model_.memory_bank.mean(dim=0)).pow(2).mean(dim=0)
    assert spread[0] > spread[-1] and torch.all(spread[:4] > spread[12:].max())

    # all dimensions are a rotation: distances, and so the bank chosen and the maps, stay the same
    expected, got = plain.predict(image), rotated.predict(image)
    assert np.abs(got.anomaly_map - expected.anomaly_map).max() < 1e-5 * expected.anomaly_map.max()
    assert rotated.thresholds_.image == pytest.approx(plain.thresholds_.image, rel=1e-5)
    assert reduced.predict(image).is_anomalous


def test_a_reduced_model_saves_loads_and_exports_the_same_maps(textures, tmp_path):
    pytest.importorskip("onnxruntime")
    detector = PatchCore(image_size=96, feature_dims=24).fit(textures.normals([(96, 112)] * 6, first_seed=0))
    detector.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model", runtime="torch")
    through_onnx = load_detector(tmp_path / "model", runtime="onnx")
    assert loaded.feature_dims == 24 and loaded.model_.memory_bank.shape[1] == 24
    images = [textures.normal(96, 112, seed=50), textures.defect(textures.normal(96, 112, seed=51), "blob")[0]]
    for image in images:
        expected = detector.predict(image)
        assert np.array_equal(loaded.predict(image).anomaly_map, expected.anomaly_map)
        got = through_onnx.predict(image)
        assert np.abs(got.anomaly_map - expected.anomaly_map).max() < 1e-5 * expected.anomaly_map.max()
        assert got.is_anomalous == expected.is_anomalous

    # patches learned after the fit are reduced like the bank's
    defect = textures.defect(textures.normal(96, 112, seed=52), "blob")[0]
    assert loaded.learn_normal(defect, mark=1) > 0
    assert loaded.model_.learned_bank.shape[1] == 24
    assert not loaded.predict(defect).is_anomalous


def test_holding_the_calibration_normals_as_float16_moves_the_thresholds_by_its_rounding_only(
    demo_patchcores, demo_data, monkeypatch
):
    held_half = demo_patchcores[0]  # fitted at the defaults: normals held as float16
    assert patchcore_detector.HELD_DTYPE == torch.float16
    monkeypatch.setattr(patchcore_detector, "HELD_DTYPE", torch.float32)
    train = [read_image(path) for path in sorted((demo_data / "magnetic_tile" / "train" / "good").glob("*.jpg"))[:8]]
    held_full = PatchCore(image_size=96, seed=0).fit(train)
    # the bank is chosen from float32 candidates either way; only the normals' scores see the rounding
    torch.testing.assert_close(held_full.model_.memory_bank, held_half.model_.memory_bank, rtol=1e-4, atol=1e-4)
    assert held_full.thresholds_.image == pytest.approx(held_half.thresholds_.image, rel=1e-3)
    assert held_full.thresholds_.pixel == pytest.approx(held_half.thresholds_.pixel, rel=1e-3)
