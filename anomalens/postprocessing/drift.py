"""Drift watch: a sequential test on the stream of image scores one station gives with one model.

The test is a two-sided CUSUM on ranks. Each new score is ranked among a reference set of normal scores; the
mid-rank, as a share of the reference, is a probability-integral transform, so on an unchanged line it is uniform
whatever the scores' own distribution, and its normal quantile ``z`` has mean zero. One CUSUM sums ``z - k`` and
warns when scores rise (dirt, blur, a new material look anomalous), the other sums ``-z - k`` and warns when they
fall (a washed-out or empty image loses the texture the model scores). Why a CUSUM on ranks rather than a windowed
KS or Mann-Whitney test: it needs no window (a slow drift adds up however slowly it comes), costs one binary search
and two additions per image, its false-alarm rate depends on the allowance, the limit and the baseline's size,
never on the model's score scale, and its state is a few numbers that survive a restart. The allowance is three
quarters of a standard deviation of the quantile, larger than the textbook half, because the baseline is a small
sample: where it happens to sit low or high by chance, every later rank leans the other way, and a smaller
allowance lets that lean add up to false warnings.
Each CUSUM is capped at twice its limit, so that a warning clears within a bounded number of images once the line
is back to normal.

The reference is this station's own first scores (``DriftTest.baseline_images``), not the model's calibration
scores: the calibration normals are leave-one-out scores of the few training images, and a line's good parts can
sit at another level from the start (measured in ``bench/drift_watch.py``), which a test against them would report
as drift on a stable line. The calibration is still compared: the pass rate against the calibration's expected
pass rate, and, once the baseline is complete, a Mann-Whitney test of the baseline against the calibration normals,
both reported beside the warning (a level the station started at is not a change of its inputs).
"""

from __future__ import annotations

import bisect
from statistics import NormalDist

from pydantic import BaseModel, Field
from scipy.stats import mannwhitneyu

RANK_BINS = 10  # the running distribution of the ranks, by tenth of the reference
# a baseline this far from the calibration (Mann-Whitney p-value) is named in the reason
CALIBRATION_MISMATCH_P = 0.01
_STANDARD_NORMAL = NormalDist()


class DriftState(BaseModel):
    """What the drift watch keeps for one station and model (JSON with ``model_dump_json``)."""

    seen: int = 0
    passed: int = 0
    expected_pass_rate: float | None = None  # from the model's calibration, when it kept its normal scores
    baseline: list[float] = Field(default_factory=list)  # sorted, the reference later scores are ranked in
    calibration_p_value: float | None = None  # baseline against the calibration normals, once the baseline is full
    rising: float = 0.0
    falling: float = 0.0
    warnings: int = 0  # how many times a CUSUM crossed the limit
    first_warning_at: int | None = None  # images seen when the first warning came
    rank_counts: list[int] = Field(default_factory=lambda: [0] * RANK_BINS)

    @property
    def statistic(self) -> float:
        return max(self.rising, self.falling)


class DriftAssessment(BaseModel):
    """The drift watch's answer for one model: the figures, and whether the inputs have drifted, with why."""

    images_seen: int
    pass_rate: float | None
    expected_pass_rate: float | None
    statistic: float
    threshold: float
    warning: bool
    reason: str
    baseline_images: int
    calibration_p_value: float | None
    rank_counts: list[int]


def rank_quantile(reference: list[float], score: float) -> float:
    """The standard-normal quantile of ``score``'s mid-rank among the sorted ``reference`` (uniform ranks -> N(0, 1)
    quantiles, symmetric about zero)."""
    below = bisect.bisect_left(reference, score)
    not_above = bisect.bisect_right(reference, score, lo=below)
    return _STANDARD_NORMAL.inv_cdf(((below + not_above) / 2 + 0.5) / (len(reference) + 1))


class DriftTest(BaseModel, frozen=True):
    """The test's settings: ``baseline_images`` first scores make the reference; ``allowance`` (k) is the shift of
    the rank's normal quantile the CUSUMs ignore; a CUSUM above ``limit`` (h) warns. The defaults are chosen in
    ``bench/drift_watch.py`` for rare false warnings on an unchanged line."""

    baseline_images: int = Field(32, ge=2)
    allowance: float = Field(0.75, gt=0)
    limit: float = Field(10.0, gt=0)

    def warning(self, state: DriftState) -> bool:
        return state.statistic > self.limit

    def observe(
        self,
        state: DriftState,
        score: float,
        passed: bool,
        expected_pass_rate: float | None = None,
        calibration_normals: list[float] | None = None,
    ) -> None:
        """Update ``state`` with one more image of ``score`` and verdict ``passed``: the first
        ``baseline_images`` scores build the reference, each later one moves the CUSUMs."""
        state.seen += 1
        state.passed += int(passed)
        if expected_pass_rate is not None:
            state.expected_pass_rate = expected_pass_rate
        if len(state.baseline) < self.baseline_images:
            bisect.insort(state.baseline, float(score))
            if len(state.baseline) == self.baseline_images and calibration_normals and len(calibration_normals) >= 3:
                state.calibration_p_value = float(mannwhitneyu(state.baseline, calibration_normals).pvalue)
            return
        z = rank_quantile(state.baseline, score)
        was_warning = self.warning(state)
        cap = 2 * self.limit
        state.rising = min(cap, max(0.0, state.rising + z - self.allowance))
        state.falling = min(cap, max(0.0, state.falling - z - self.allowance))
        state.rank_counts[min(RANK_BINS - 1, int(_STANDARD_NORMAL.cdf(z) * RANK_BINS))] += 1
        if self.warning(state) and not was_warning:
            state.warnings += 1
            if state.first_warning_at is None:
                state.first_warning_at = state.seen

    def assess(self, state: DriftState) -> DriftAssessment:
        """The figures of ``state`` and the warning, with its reason in one line."""
        return DriftAssessment(
            images_seen=state.seen,
            pass_rate=state.passed / state.seen if state.seen else None,
            expected_pass_rate=state.expected_pass_rate,
            statistic=round(state.statistic, 4),
            threshold=self.limit,
            warning=self.warning(state),
            reason=self._reason(state),
            baseline_images=len(state.baseline),
            calibration_p_value=state.calibration_p_value,
            rank_counts=list(state.rank_counts),
        )

    def _reason(self, state: DriftState) -> str:
        if len(state.baseline) < self.baseline_images:
            return f"learning this station's baseline: {len(state.baseline)} of {self.baseline_images} images"
        judged, limit = state.seen - self.baseline_images, self.limit
        if self.warning(state):
            way = "risen above" if state.rising >= state.falling else "fallen below"
            reason = (
                f"drift: the image scores have {way} this station's baseline (CUSUM {state.statistic:.1f} > "
                f"{limit:g} after {judged} images): check the lighting, focus and material"
            )
        else:
            reason = f"no drift: CUSUM {state.statistic:.1f} of {limit:g} after {judged} images"
        p = state.calibration_p_value
        if p is not None and p < CALIBRATION_MISMATCH_P:
            reason += f"; the baseline itself differs from the model's calibration scores (Mann-Whitney p={p:.2g})"
        return reason
