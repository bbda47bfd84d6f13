"""The testbed's bootstrap CIs against scipy.stats.bootstrap (an independent implementation) and against the
two limits of the two-level design (identical seeds; problems that do not matter)."""

import numpy as np
import pytest
from scipy import stats as sp_stats

from tsdkd_jax.testbed import stats

MC_TOL = 0.006  # Monte-Carlo error of a 2.5 % percentile at 10k resamples on these sizes (~2-3 × its s.e.)


def _scipy_ci(*samples, statistic, paired=False):
    res = sp_stats.bootstrap(
        samples, statistic, n_resamples=10_000, paired=paired, vectorized=False,
        method="percentile", confidence_level=0.95, rng=np.random.default_rng(1),
    )  # fmt: skip
    return res.confidence_interval.low, res.confidence_interval.high


def test_one_seed_matches_scipy_percentile_bootstrap():
    x = (np.random.default_rng(0).random(800) < 0.62).astype(float)
    got = stats.mean_ci(x)
    low, high = _scipy_ci(x, statistic=np.mean)
    assert got["mean"] == pytest.approx(x.mean(), abs=1e-12)
    assert got["ci_low"] == pytest.approx(low, abs=MC_TOL)
    assert got["ci_high"] == pytest.approx(high, abs=MC_TOL)


def test_paired_difference_matches_scipy_paired_bootstrap():
    rng = np.random.default_rng(1)
    a = (rng.random(1000) < 0.55).astype(float)
    b = np.where(rng.random(1000) < 0.85, a, 1 - a)  # strongly correlated with a: pairing narrows the CI
    got = stats.paired_diff_ci(a, b)
    low, high = _scipy_ci(a, b, statistic=lambda u, v: np.mean(u - v), paired=True)
    assert got["ci_low"] == pytest.approx(low, abs=MC_TOL)
    assert got["ci_high"] == pytest.approx(high, abs=MC_TOL)
    unpaired = stats.mean_ci(a)["ci_high"] - stats.mean_ci(a)["ci_low"]
    assert got["ci_high"] - got["ci_low"] < unpaired  # the paired interval is narrower than one arm's


def test_identical_seeds_give_the_problem_only_interval():
    x = (np.random.default_rng(2).random(600) < 0.4).astype(float)
    one = stats.mean_ci(x)
    five = stats.mean_ci(np.tile(x, (5, 1)))
    assert five["ci_low"] == pytest.approx(one["ci_low"], abs=MC_TOL)
    assert five["ci_high"] == pytest.approx(one["ci_high"], abs=MC_TOL)


def test_seed_effects_alone_give_the_bootstrap_over_seed_means():
    seed_means = np.array([0.2, 0.5, 0.45, 0.7, 0.3, 0.55])
    x = np.repeat(seed_means[:, None], 300, axis=1)  # every problem alike within a seed
    got = stats.mean_ci(x)
    low, high = _scipy_ci(seed_means, statistic=np.mean)
    assert got["ci_low"] == pytest.approx(low, abs=0.01)
    assert got["ci_high"] == pytest.approx(high, abs=0.01)


def test_no_difference_is_zero_and_shapes_are_checked():
    x = (np.random.default_rng(3).random((3, 50)) < 0.5).astype(float)
    assert stats.paired_diff_ci(x, x) == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    with pytest.raises(ValueError, match="same"):
        stats.paired_diff_ci(x, x[:, :40])
    with pytest.raises(ValueError, match="non-empty"):
        stats.mean_ci([])
