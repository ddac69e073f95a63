"""The drift watch's sequential test (``anomalens.postprocessing.drift``) on simulated streams and on streams of real
magnetic-tile scores that gradually darken or blur, at the test's defaults."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anomalens.data import read_image
from anomalens.models import PatchCore
from anomalens.postprocessing.drift import DriftState, DriftTest, rank_quantile

BASELINE = DriftTest().baseline_images
LEVELS = {"darken": [1.0, 0.7, 0.4], "blur": [0.0, 2.0, 4.0]}  # pixel factor, Gaussian sigma
RAMP = 400  # images over which a change goes from none to its last level


def feed(stream, test: DriftTest | None = None) -> DriftState:
    test, state = test or DriftTest(), DriftState()
    for score in stream:
        test.observe(state, float(score), True)
    return state


@pytest.fixture(scope="module")
def tile_scores(demo_data) -> dict[str, np.ndarray]:
    """The 20 good tiles a PatchCore fitted on 8 others did not see, scored at each level of each change:
    kind -> [level, tile] (60 predictions of 96-pixel images)."""
    train = sorted((demo_data / "magnetic_tile" / "train" / "good").glob("*.jpg"))
    model = PatchCore(image_size=96, seed=0).fit([read_image(path) for path in train[:8]])
    good = [read_image(p) for p in train[8:] + sorted((demo_data / "magnetic_tile" / "test" / "good").glob("*.jpg"))]
    changed = {
        "darken": lambda image, factor: np.clip(image * factor, 0, 1),
        "blur": lambda image, sigma: cv2.GaussianBlur(image, (0, 0), sigma) if sigma else image,
    }
    table = {"good": np.array([model.predict(image).image_score for image in good])}
    for kind, levels in LEVELS.items():
        table[kind] = np.array(
            [table["good"]] + [[model.predict(changed[kind](i, v)).image_score for i in good] for v in levels[1:]]
        )
    return table


def test_ranks_are_symmetric_normal_quantiles_of_the_mid_rank():
    reference = [1.0, 2.0, 3.0]
    assert rank_quantile(reference, 2.0) == pytest.approx(0.0)
    assert rank_quantile(reference, 0.0) == pytest.approx(-rank_quantile(reference, 9.0))
    assert rank_quantile(reference, 9.0) == rank_quantile(reference, 3.5) > rank_quantile(reference, 2.5) > 0


def test_the_first_images_build_the_baseline_and_move_no_statistic():
    test, state = DriftTest(), DriftState()
    for score in range(BASELINE):
        test.observe(state, float(score), passed=score % 2 == 0)
        if score == BASELINE - 2:
            assert f"baseline: {BASELINE - 1} of {BASELINE}" in test.assess(state).reason
    assert state.baseline == [float(s) for s in range(BASELINE)]
    assert state.statistic == 0 and not test.warning(state)
    assessment = test.assess(state)
    assert assessment.images_seen == BASELINE and assessment.pass_rate == 0.5
    assert assessment.reason.startswith("no drift")


def test_an_unchanged_continuous_stream_raises_no_warning_and_its_ranks_spread_over_the_baseline():
    rng = np.random.default_rng(0)
    state = feed(rng.lognormal(3, 0.2, BASELINE + 5000))
    assert state.warnings == 0 and not DriftTest().assess(state).warning
    assert min(state.rank_counts) > 0


@pytest.mark.parametrize("shift, way", [(+1.5, "risen above"), (-1.5, "fallen below")])
def test_a_step_shift_either_way_warns_within_a_few_dozen_images_and_says_which_way(shift, way):
    rng = np.random.default_rng(1)
    stream = np.concatenate([rng.normal(0, 1, BASELINE), rng.normal(shift, 1, 200)])
    state = feed(stream)
    assert state.first_warning_at is not None and state.first_warning_at - BASELINE <= 40
    assessment = DriftTest().assess(state)
    assert assessment.warning and way in assessment.reason


def test_a_warning_clears_once_the_line_is_back_to_normal():
    rng = np.random.default_rng(2)
    drifted = np.concatenate([rng.normal(0, 1, BASELINE), rng.normal(3, 1, 1000)])
    test = DriftTest()
    state = feed(drifted, test)
    assert test.warning(state) and state.statistic == 2 * test.limit  # capped
    for score in rng.normal(0, 1, 100):
        test.observe(state, float(score), True)
    assert not test.warning(state)


def test_the_state_round_trips_through_json_and_goes_on_the_same():
    rng = np.random.default_rng(3)
    stream = rng.normal(0, 1, BASELINE + 50)
    state = feed(stream[:-10])
    copy = DriftState.model_validate_json(state.model_dump_json())
    test = DriftTest()
    for score in stream[-10:]:
        test.observe(state, float(score), True)
        test.observe(copy, float(score), True)
    assert copy == state


def test_the_baseline_is_compared_with_the_calibration_normals_and_a_mismatch_is_named():
    test, state = DriftTest(), DriftState()
    calibration = list(np.linspace(10, 11, 8))
    for score in np.linspace(20, 21, BASELINE):
        test.observe(state, float(score), True, expected_pass_rate=0.9, calibration_normals=calibration)
    assessment = test.assess(state)
    assert assessment.expected_pass_rate == 0.9 and assessment.calibration_p_value < 0.01
    assert "calibration" in assessment.reason and not assessment.warning


def ramp(table: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stream: the baseline from unchanged tiles, then each image a random tile at the level reached so far."""
    steps = np.arange(3 * RAMP)
    level = np.minimum(steps * (len(table) - 1) // RAMP, len(table) - 1)
    stream = table[level, rng.integers(0, table.shape[1], steps.size)]
    return np.concatenate([rng.choice(table[0], BASELINE), stream])


# the scores move little until late in the change (blur raises them from sigma 2 on, darkening lowers them by less
# than the tiles' own spread), so the bounds reach past the ramp
@pytest.mark.parametrize("kind, within", [("darken", 2 * RAMP), ("blur", 3 * RAMP // 2)])
def test_tiles_that_gradually_darken_or_blur_raise_the_warning(tile_scores, kind, within):
    rng = np.random.default_rng(4)
    for _ in range(5):
        state = feed(ramp(tile_scores[kind], rng))
        assert state.first_warning_at is not None and state.first_warning_at - BASELINE <= within


def test_an_unchanged_stream_of_resampled_good_tiles_raises_no_warning_in_20000_images(tile_scores):
    rng = np.random.default_rng(5)
    for _ in range(2):
        assert feed(rng.choice(tile_scores["good"], BASELINE + 10_000)).warnings == 0
