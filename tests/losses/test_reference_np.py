"""The float64 NumPy reference itself (reference_np): against SciPy, symmetries and closed forms.

These tests do not import the JAX kernels, so they pin the reference even while ``tsdkd_jax.losses`` is broken.
"""

import numpy as np
import pytest
import reference_np as ref
from loss_problems import assert_close, np64, rand_logits


def test_ref_self_divergences_vanish_on_equal_distributions():
    z = rand_logits(0, (3, 5, 17))
    for beta in (0.0, 0.3, 0.5, 0.9, 1.0):
        np.testing.assert_allclose(ref.generalized_jsd(z, z, beta), 0.0, atol=1e-12)
    np.testing.assert_allclose(ref.forward_kl(z, z), 0.0, atol=1e-12)
    np.testing.assert_allclose(ref.reverse_kl(z, z), 0.0, atol=1e-12)
    np.testing.assert_allclose(ref.skew_kl(z, z, 0.1), 0.0, atol=1e-12)
    np.testing.assert_allclose(ref.skew_reverse_kl(z, z, 0.1), 0.0, atol=1e-12)


def test_ref_against_scipy_and_symmetries():
    scipy_stats = pytest.importorskip("scipy.stats")
    scipy_dist = pytest.importorskip("scipy.spatial.distance")
    zs = rand_logits(1, (6, 23))
    zt = rand_logits(2, (6, 23))
    ps, pt = ref.softmax(zs), ref.softmax(zt)
    for i in range(6):
        assert_close(ref.entropy(zs[i]), scipy_stats.entropy(ps[i]), rtol=1e-12)
        assert_close(ref.forward_kl(zs[i], zt[i]), scipy_stats.entropy(pt[i], ps[i]), rtol=1e-12)
        assert_close(ref.reverse_kl(zs[i], zt[i]), scipy_stats.entropy(ps[i], pt[i]), rtol=1e-12)
        # β = 0.5 is the ordinary Jensen-Shannon divergence (natural log)
        js = scipy_dist.jensenshannon(ps[i], pt[i]) ** 2
        assert_close(ref.generalized_jsd(zs[i], zt[i], 0.5), js, rtol=1e-10)
        # skew KL directly from the probability-space mixture
        mix = 0.1 * pt[i] + 0.9 * ps[i]
        assert_close(ref.skew_kl(zs[i], zt[i], 0.1), scipy_stats.entropy(pt[i], mix), rtol=1e-12)
        mix_r = 0.9 * pt[i] + 0.1 * ps[i]
        assert_close(ref.skew_reverse_kl(zs[i], zt[i], 0.1), scipy_stats.entropy(ps[i], mix_r), rtol=1e-12)
    # JSD_β(S, T) = JSD_{1−β}(T, S); symmetric at β = 0.5
    assert_close(ref.generalized_jsd(zs, zt, 0.5), ref.generalized_jsd(zt, zs, 0.5), rtol=1e-12)
    assert_close(ref.generalized_jsd(zs, zt, 0.2), ref.generalized_jsd(zt, zs, 0.8), rtol=1e-12)
    # skew KL at α = 0 is forward KL; skew reverse KL at α = 0 is reverse KL
    assert_close(ref.skew_kl(zs, zt, 0.0), ref.forward_kl(zs, zt), rtol=1e-12)
    assert_close(ref.skew_reverse_kl(zs, zt, 0.0), ref.reverse_kl(zs, zt), rtol=1e-12)
    # endpoints are a convention, not a limit: the formula goes to 0 as β → 0 or 1
    assert np.all(ref.generalized_jsd(zs, zt, 1e-9) < 1e-6)
    assert np.all(ref.forward_kl(zs, zt) > 1e-3)


def test_ref_plackett_luce_closed_forms():
    rng = np.random.default_rng(3)
    s = rng.standard_normal((5, 2)).astype(np.float32)
    t = rng.standard_normal((5, 2)).astype(np.float32)
    best = np.argmax(t, axis=-1)
    s_best = np64(s[np.arange(5), best])
    s_other = np64(s[np.arange(5), 1 - best])
    # suffix sums (paper): −log σ(s_best − s_other);  prefix sums (released): −log σ(s_other − s_best)
    assert_close(ref.plackett_luce_nll(s, t, 2), np.logaddexp(0.0, -(s_best - s_other)), rtol=1e-12)
    assert_close(ref.official_prefix_rank_nll(s, t, 2), np.logaddexp(0.0, -(s_other - s_best)), rtol=1e-12)
    # k = 1: a single candidate has probability 1
    assert_close(ref.plackett_luce_nll(rand_logits(4, (3, 9)), rand_logits(5, (3, 9)), 1), 0.0, atol=0)
    # prefix-sum loss == suffix-sum loss of the reversed teacher ranking (negated teacher logits)
    s10, t10 = rand_logits(6, (4, 12)), rand_logits(7, (4, 12))
    k = 12  # all candidates so the top-k set does not depend on the ranking
    assert_close(ref.official_prefix_rank_nll(s10, t10, k), ref.plackett_luce_nll(s10, -t10, k), rtol=1e-12)


def _numgrad(f, x, eps=1e-6):
    x = np64(x).copy()
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


def test_ref_pl_direction_k2():
    s = np.array([[1.0, 0.0]])  # student prefers token 0
    t = np.array([[0.0, 2.0]])  # teacher prefers token 1
    g_paper = _numgrad(lambda z: ref.plackett_luce_nll(z, t, 2).sum(), s)
    g_off = _numgrad(lambda z: ref.official_prefix_rank_nll(z, t, 2).sum(), s)
    step = 0.5
    gap0 = s[0, 1] - s[0, 0]
    assert (s - step * g_paper)[0, 1] - (s - step * g_paper)[0, 0] > gap0  # towards the teacher
    assert (s - step * g_off)[0, 1] - (s - step * g_off)[0, 0] < gap0  # away from the teacher


def test_ref_selections_hand_made():
    h = np.array([[0.5, 2.0, 1.0, 1.5, 0.0, 9.0], [0.0, 0.0, 0.3, 0.3, 0.4, 0.0]])
    m = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=np.float64)
    # row 0: total 5.0, c·total = 0.5 → m* = 0;  c = 0.5 → 2.5 → m* = 1; pad (9.0) ignored
    # row 1: total 1.0, 0.1 → m* = 2 (leading zero-entropy tokens are part of the opener)
    np.testing.assert_array_equal(ref.opener_mask(h, m, 0.1), [[1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(ref.opener_mask(h, m, 0.5), [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(ref.opener_mask(h, m, 1.0), [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])
    # EM, ρ = 0.1: row 0 quantile_0.9 of [0.5,2,1,1.5,0] = 1.5 + 0.6*0.5 = 1.8 → {2.0}
    np.testing.assert_array_equal(ref.em_mask(h, m, 0.1)[0], [0, 1, 0, 0, 0, 0])
    # official d: flattened masked [0.5,2,1,1.5,0, 0,0,.3,.3,.4,0] / 6.0 → cum ≥ 0.1 first at index 1
    assert ref.official_opener_len(h, m, 0.1) == 1
    assert ref.official_opener_len(np.zeros((2, 3)), np.ones((2, 3)), 0.1) == 0  # zero total → 0
    assert ref.official_opener_len(h, np.zeros_like(m), 0.1) == 0  # nothing masked → 0
