"""The project's JAX loss kernels (``tsdkd_jax.losses``) against the independent float64 NumPy reference.

Inputs are float32 (what the kernels see); the reference gets the very same float32 values, upcast to float64.
Tolerance: relative 1e-5 (plus a 1e-6 absolute floor for values that are ~0).

The first block checks the reference itself (runs even when the kernels cannot be imported); every other test
uses the ``losses`` fixture and fails (not skips) when ``tsdkd_jax.losses`` is missing.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_np as ref

try:  # the kernels may not exist yet while they are being written
    import tsdkd_jax.losses as _losses

    _IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - only while the package is missing
    _losses = None
    _IMPORT_ERROR = exc

RTOL = 1e-5
ATOL = 1e-6

AUX_KEYS = (
    "loss/direct",
    "loss/em",
    "loss/indirect",
    "loss/total",
    "gate/mean",
    "select/opener_len",
    "select/em_frac",
    "agree/top1",
    "entropy/student",
    "entropy/teacher",
)


@pytest.fixture
def losses():
    if _losses is None:
        pytest.fail(f"tsdkd_jax.losses is not importable: {_IMPORT_ERROR!r}")
    return _losses


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def rand_logits(seed, shape, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def right_pad_mask(lengths, T):
    m = np.zeros((len(lengths), T), dtype=np.float32)
    for b, n in enumerate(lengths):
        m[b, :n] = 1.0
    return m


def saturate(logits, positions, big=1.0e4):
    """Make the given (b, t) positions one-hot-ish: one logit +1e4, so the softmax underflows to an exact
    one-hot in float32 AND float64 and the entropy is exactly 0 on both sides."""
    out = logits.copy()
    for b, t in positions:
        out[b, t, int(np.argmax(out[b, t]))] += np.float32(big)
    return out


def np64(x):
    return np.asarray(x, dtype=np.float64)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL, what=""):
    np.testing.assert_allclose(np64(actual), np64(expected), rtol=rtol, atol=atol, err_msg=what)


def assert_aux_close(aux, ref_aux, keys=AUX_KEYS):
    for key in keys:
        assert key in aux, f"aux lacks {key!r}; has {sorted(aux)}"
        assert_close(aux[key], ref_aux[key], what=f"aux[{key!r}]")


def quantile_position_is_safe(n, q):
    """True when the linear-quantile virtual index (n-1)*q is not (nearly) an integer: then float32 and float64
    cannot disagree about whether an order statistic sits exactly at the threshold."""
    pos = (n - 1) * q
    return n <= 1 or abs(pos - round(pos)) > 1e-3


# ----------------------------------------------------------------------------------------------------------
# 0. the reference itself
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# 1. per-token primitives
# ----------------------------------------------------------------------------------------------------------

SHAPE = (2, 5, 29)


def test_log_softmax_entropy_cross_entropy_masked_mean(losses):
    z = rand_logits(10, SHAPE)
    assert_close(losses.log_softmax(z), ref.log_softmax(z), what="log_softmax")
    assert_close(losses.entropy(z), ref.entropy(z), what="entropy")
    labels = np.random.default_rng(11).integers(0, SHAPE[-1], size=SHAPE[:-1]).astype(np.int32)
    assert_close(losses.cross_entropy(z, labels), ref.cross_entropy(z, labels), what="cross_entropy")
    v = rand_logits(12, (3, 7))
    m = right_pad_mask([7, 2, 5], 7)
    assert_close(losses.masked_mean(v, m), ref.masked_mean(v, m), what="masked_mean")


def test_entropy_of_saturated_logits_is_zero(losses):
    z = saturate(rand_logits(13, (1, 3, 16)), [(0, 0), (0, 1), (0, 2)])
    h = np64(losses.entropy(z))
    assert np.all(np.isfinite(h)), h
    np.testing.assert_array_equal(h, 0.0)


def test_forward_reverse_kl(losses):
    zs, zt = rand_logits(20, SHAPE), rand_logits(21, SHAPE)
    assert_close(losses.forward_kl(zs, zt), ref.forward_kl(zs, zt), what="forward KL(p_T||p_S)")
    assert_close(losses.reverse_kl(zs, zt), ref.reverse_kl(zs, zt), what="reverse KL(p_S||p_T)")


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd(losses, beta):
    zs, zt = rand_logits(22, SHAPE), rand_logits(23, SHAPE)
    assert_close(losses.generalized_jsd(zs, zt, beta), ref.generalized_jsd(zs, zt, beta), what=f"β={beta}")


def test_generalized_jsd_endpoints_are_forward_and_reverse_kl(losses):
    zs, zt = rand_logits(24, SHAPE), rand_logits(25, SHAPE)
    assert_close(losses.generalized_jsd(zs, zt, 0.0), ref.forward_kl(zs, zt), what="β=0 → KL(p_T||p_S)")
    assert_close(losses.generalized_jsd(zs, zt, 1.0), ref.reverse_kl(zs, zt), what="β=1 → KL(p_S||p_T)")


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_generalized_jsd_mixture_is_in_probability_space(losses, beta):
    zs, zt = rand_logits(26, SHAPE), rand_logits(27, SHAPE)
    got = np64(losses.generalized_jsd(zs, zt, beta))
    prob_space = ref.generalized_jsd(zs, zt, beta)
    log_space = ref.generalized_jsd_logspace_mixture(zs, zt, beta)
    # the two candidate definitions are far apart on these inputs ...
    assert np.max(np.abs(prob_space - log_space) / np.abs(prob_space)) > 1e-2
    # ... and the kernel is the probability-space one
    assert_close(got, prob_space)
    assert not np.allclose(got, log_space, rtol=1e-3)


@pytest.mark.parametrize("alpha", [0.1, 0.5])
def test_skew_kl_and_skew_reverse_kl(losses, alpha):
    zs, zt = rand_logits(28, SHAPE), rand_logits(29, SHAPE)
    assert_close(losses.skew_kl(zs, zt, alpha), ref.skew_kl(zs, zt, alpha), what="skew KL")
    assert_close(losses.skew_reverse_kl(zs, zt, alpha), ref.skew_reverse_kl(zs, zt, alpha), what="skew RKL")


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_entropy_gate(losses, tau):
    hs = np.abs(rand_logits(30, (3, 8), scale=2.0))
    ht = np.abs(rand_logits(31, (3, 8), scale=2.0))
    assert_close(losses.entropy_gate(hs, ht, tau), ref.entropy_gate(hs, ht, tau))
    # more uncertain student than teacher → gate > 0.5
    g = np64(losses.entropy_gate(np.float32([[3.0]]), np.float32([[1.0]]), tau))
    assert g.item() > 0.5


# ----------------------------------------------------------------------------------------------------------
# 2. selections
# ----------------------------------------------------------------------------------------------------------


def _opener_case(name):
    rng = np.random.default_rng(40)
    T = 9
    h = (np.abs(rng.standard_normal((3, T))) + 0.05).astype(np.float32)
    m = right_pad_mask([9, 6, 4], T)
    frac = 0.1
    if name == "random_c0.1":
        pass
    elif name == "random_c0.3":
        frac = 0.3
    elif name == "zero_entropy_row":
        h[1] = 0.0  # zero total → empty opener
    elif name == "all_pad_row":
        m[2] = 0.0
    elif name == "one_token_response":
        m[1] = 0.0
        m[1, 0] = 1.0
    elif name == "frac_one_whole_response":
        frac = 1.0
    elif name == "leading_zero_entropies":
        h[0, :3] = 0.0
    elif name == "padding_entropy_ignored":
        h[1, 6:] = 50.0
        h[2, 4:] = 50.0
    else:
        raise ValueError(name)
    return h, m, frac


OPENER_CASES = [
    "random_c0.1",
    "random_c0.3",
    "zero_entropy_row",
    "all_pad_row",
    "one_token_response",
    "frac_one_whole_response",
    "leading_zero_entropies",
    "padding_entropy_ignored",
]


@pytest.mark.parametrize("case", OPENER_CASES)
def test_opener_mask(losses, case):
    h, m, frac = _opener_case(case)
    expected = ref.opener_mask(h, m, frac)
    got = np64(losses.opener_mask(h, m, frac))
    np.testing.assert_array_equal(got, expected)
    # structural expectations, independent of the reference
    assert np.all(got <= m)
    if case == "zero_entropy_row":
        assert got[1].sum() == 0
    if case == "all_pad_row":
        assert got[2].sum() == 0
    if case == "one_token_response":
        np.testing.assert_array_equal(got[1], m[1])
    if case == "frac_one_whole_response":
        np.testing.assert_array_equal(got, m)
    if case == "leading_zero_entropies":
        assert got[0, :4].sum() == 4  # the zero-entropy lead-in plus the first informative token


def _em_case(name):
    rng = np.random.default_rng(50)
    T = 10
    h = (np.abs(rng.standard_normal((4, T))) * 2).astype(np.float32)
    m = right_pad_mask([10, 7, 3, 1], T)
    frac = 0.1
    if name == "rho0.1":
        pass
    elif name == "rho0.3":
        frac = 0.3
    elif name == "rho0.4":
        frac = 0.4
    elif name == "constant_row_and_all_pad":
        h[1] = 0.75
        m[3] = 0.0
    elif name == "padding_entropy_ignored":
        h[1, 7:] = 99.0
        h[2, 3:] = 99.0
    else:
        raise ValueError(name)
    for b in range(m.shape[0]):
        assert quantile_position_is_safe(int(m[b].sum()), 1 - frac)
    return h, m, frac


@pytest.mark.parametrize(
    "case", ["rho0.1", "rho0.3", "rho0.4", "constant_row_and_all_pad", "padding_entropy_ignored"]
)
def test_em_mask_per_row(losses, case):
    h, m, frac = _em_case(case)
    expected = ref.em_mask(h, m, frac)
    got = np64(losses.em_mask(h, m, frac))
    np.testing.assert_array_equal(got, expected)
    assert np.all(got <= m)
    # each non-empty row keeps at least its maximum (a per-row selection, not a batch one)
    for b in range(m.shape[0]):
        if m[b].sum() > 0:
            assert got[b].sum() >= 1
            assert got[b, int(np.argmax(np.where(m[b] > 0, h[b], -np.inf)))] == 1


# ----------------------------------------------------------------------------------------------------------
# 3. Plackett–Luce
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_plackett_luce_nll_values(losses, k):
    zs, zt = rand_logits(60, (2, 4, 24)), rand_logits(61, (2, 4, 24))
    got = losses.plackett_luce_nll(zs, zt, k)
    assert np64(got).shape == (2, 4)
    assert_close(got, ref.plackett_luce_nll(zs, zt, k), what=f"k={k}")


def test_plackett_luce_k2_gradient_moves_student_towards_teacher(losses):
    import jax
    import jax.numpy as jnp

    s = jnp.asarray([[1.0, 0.0]], dtype=jnp.float32)  # student prefers token 0
    t = jnp.asarray([[0.0, 2.0]], dtype=jnp.float32)  # teacher prefers token 1
    g = np64(jax.grad(lambda z: jnp.sum(losses.plackett_luce_nll(z, t, 2)))(s))
    # NLL = softplus(s0 − s1): dNLL/ds0 = σ(1), dNLL/ds1 = −σ(1)
    sig1 = 1.0 / (1.0 + np.exp(-1.0))
    assert_close(g, [[sig1, -sig1]])
    z = np64(s)
    for _ in range(4):
        z_new = z - 1.0 * np64(jax.grad(lambda v: jnp.sum(losses.plackett_luce_nll(v, t, 2)))(jnp.float32(z)))
        assert z_new[0, 1] - z_new[0, 0] > z[0, 1] - z[0, 0]
        z = z_new
    assert np.argmax(z[0]) == 1  # order now matches the teacher's


def _spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra**2).sum() * (rb**2).sum()))


def test_indirect_gradient_direction_paper_vs_official(losses):
    """Near-uniform student (V = k = 10, T = 12): a gradient step on the paper indirect term raises the student's
    logits in the teacher's order (Spearman +1); on the official prefix-sum term, in the reverse order (−1)."""
    import jax
    import jax.numpy as jnp

    B, T, V = 1, 12, 10
    s = (np.random.default_rng(70).standard_normal((B, T, V)) * 1e-3).astype(np.float32)
    t = rand_logits(71, (B, T, V))
    m = np.ones((B, T), dtype=np.float32)
    # official: flattened normalised entropies ≈ 1/12 each → d = 1 → only position 0
    assert ref.official_opener_len(ref.entropy(s), m, 0.1) == 1
    # paper: c·total = 1.2 H → m* = 1 → positions 0 and 1
    np.testing.assert_array_equal(ref.opener_mask(ref.entropy(s), m, 0.1)[0, :3], [1, 1, 0])

    for variant, sign in (("paper", +1), ("official", -1)):

        def f(z, variant=variant):
            return losses.tsdkd_loss(z, jnp.asarray(t), jnp.asarray(m), variant=variant)[1]["loss/indirect"]

        val = float(np64(f(jnp.asarray(s))))
        if variant == "paper":
            expected = ref.tsdkd_loss_paper(s, t, m)[1]["loss/indirect"]
        else:
            expected = ref.tsdkd_loss_official(s, t, m)[1]["loss/indirect"]
        assert_close(val, expected, what=f"{variant} loss/indirect")
        delta = -np64(jax.grad(f)(jnp.asarray(s)))[0, 0]
        rho = _spearman(delta, t[0, 0])
        assert sign * rho > 0.9, (variant, rho, delta, t[0, 0])


# ----------------------------------------------------------------------------------------------------------
# 4. paper total
# ----------------------------------------------------------------------------------------------------------

PAPER_CASES = {
    # name: (seed, lengths, T, V, kwargs)
    "default_B4": (80, [12, 7, 3, 1], 12, 32, {}),
    "default_all_pad_row": (81, [9, 0, 5], 10, 24, {}),
    "hyper": (
        82,
        [10, 6, 8],
        10,
        32,
        {
            "beta": 0.5,
            "gate_tau": 2.0,
            "rank_k": 4,
            "rank_weight": 0.2,
            "opener_frac": 0.5,
            "em_frac": 0.3,
            "em_weight": 0.5,
        },
    ),
    "opener_frac_1": (83, [8, 5], 8, 16, {"opener_frac": 1.0}),
    "beta_0": (84, [6, 4], 6, 16, {"beta": 0.0}),
    "beta_1": (85, [6, 4], 6, 16, {"beta": 1.0}),
}


def _paper_inputs(seed, lengths, T, V):
    """Random student logits (×3) and a teacher correlated with the student (so top-1 agreement varies)."""
    s = rand_logits(seed, (len(lengths), T, V))
    t = (0.7 * s + rand_logits(seed + 1000, (len(lengths), T, V), scale=2.2)).astype(np.float32)
    return s, t, right_pad_mask(lengths, T)


@pytest.mark.parametrize("case", sorted(PAPER_CASES))
def test_paper_total_and_aux(losses, case):
    seed, lengths, T, V, kw = PAPER_CASES[case]
    s, t, m = _paper_inputs(seed, lengths, T, V)
    for n in lengths:
        assert quantile_position_is_safe(n, 1 - kw.get("em_frac", 0.1))
    loss, aux = losses.tsdkd_loss(s, t, m, variant="paper", **kw)
    ref_loss, ref_aux = ref.tsdkd_loss_paper(s, t, m, **kw)
    assert ref_aux["loss/indirect"] > 0 and ref_aux["loss/em"] > 0  # every term is exercised
    assert_close(loss, ref_loss, what="loss")
    assert_aux_close(aux, ref_aux)


def test_paper_total_with_zero_entropy_row(losses):
    """A saturated (exactly zero-entropy) student row: empty opener, all its tokens in its EM set (H ≥ q = 0)."""
    s, t, m = _paper_inputs(90, [7, 5, 6], 8, 16)
    s = saturate(s, [(1, i) for i in range(8)])
    ref_loss, ref_aux = ref.tsdkd_loss_paper(s, t, m)
    assert ref.opener_mask(ref.entropy(s), m, 0.1)[1].sum() == 0
    assert ref.em_mask(ref.entropy(s), m, 0.1)[1].sum() == 5
    loss, aux = losses.tsdkd_loss(s, t, m, variant="paper")
    assert_close(loss, ref_loss)
    assert_aux_close(aux, ref_aux)


ABLATIONS = [
    {"use_gate": False},
    {"use_indirect": False},
    {"use_em": False},
    {"use_gate": False, "use_indirect": False, "use_em": False},
]


@pytest.mark.parametrize("switches", ABLATIONS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_paper_ablation_switches(losses, switches):
    s, t, m = _paper_inputs(100, [9, 4, 7], 9, 24)
    loss, aux = losses.tsdkd_loss(s, t, m, variant="paper", **switches)
    ref_loss, ref_aux = ref.tsdkd_loss_paper(s, t, m, **switches)
    assert_close(loss, ref_loss, what="loss")
    keys = ["loss/total", "loss/direct", "entropy/student", "entropy/teacher", "agree/top1"]
    # the terms that are switched on must still be reported correctly
    if switches.get("use_indirect", True):
        keys.append("loss/indirect")
    if switches.get("use_em", True):
        keys.append("loss/em")
    if switches.get("use_gate", True):
        keys.append("gate/mean")
    assert_aux_close(aux, ref_aux, keys)
    # the full loss differs from every ablation on these inputs
    full, _ = ref.tsdkd_loss_paper(s, t, m)
    assert abs(full - ref_loss) > 1e-4


@pytest.mark.parametrize(
    "divergence,skew_alpha",
    [("gjsd", 0.1), ("fkl", 0.1), ("rkl", 0.1), ("skl", 0.1), ("skl", 0.3), ("srkl", 0.1)],
)
def test_paper_divergence_choice(losses, divergence, skew_alpha):
    s, t, m = _paper_inputs(110, [8, 3, 6], 8, 24)
    kw = {"divergence": divergence, "skew_alpha": skew_alpha}
    loss, aux = losses.tsdkd_loss(s, t, m, variant="paper", **kw)
    ref_loss, ref_aux = ref.tsdkd_loss_paper(s, t, m, divergence_name=divergence, skew_alpha=skew_alpha)
    assert_close(loss, ref_loss, what="loss")
    assert_aux_close(aux, ref_aux, ["loss/total", "loss/direct", "loss/em", "loss/indirect", "gate/mean"])


# ----------------------------------------------------------------------------------------------------------
# 5. official variant
# ----------------------------------------------------------------------------------------------------------

OFFICIAL_KEYS = ["loss/direct", "loss/em", "loss/indirect", "loss/total"]


def _official_case(name):
    if name == "B3_ragged":
        s, t, m = _paper_inputs(120, [10, 6, 3], 10, 32)  # 19 masked tokens
        kw = {}
    elif name == "B3_all_pad_row":
        s, t, m = _paper_inputs(121, [7, 0, 5], 8, 24)  # 12
        kw = {}
    elif name == "B4_beta0.5":
        s, t, m = _paper_inputs(122, [6, 6, 2, 5], 6, 16)  # 19
        kw = {"beta": 0.5, "rank_weight": 0.2}  # both are passed through by the released code
    elif name == "d3_spans_short_row":
        # three low-entropy lead tokens in row 0 push d to 3; row 1 (length 2) then has a pad position in [0, d)
        s, t, m = _paper_inputs(124, [6, 2, 5], 6, 16)  # 13
        s[0, :3] *= np.float32(8.0)
        kw = {}
    elif name == "d_beyond_T_clamped":
        # flattened masked entropies [0,0,0,0, 0,H,H,H] → d = 5 > T = 4 → every row uses [0, 4)
        s, t, m = _paper_inputs(123, [4, 4], 4, 16)  # 8
        s = saturate(s, [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)])
        kw = {}
    else:
        raise ValueError(name)
    assert quantile_position_is_safe(int(m.sum()), 0.1)
    return s, t, m, kw


@pytest.mark.parametrize(
    "case", ["B3_ragged", "B3_all_pad_row", "B4_beta0.5", "d3_spans_short_row", "d_beyond_T_clamped"]
)
def test_official_total_and_terms(losses, case):
    s, t, m, kw = _official_case(case)
    ref_loss, ref_aux = ref.tsdkd_loss_official(s, t, m, **kw)
    d = ref_aux["official/d"]
    assert d >= 1, "test design: the indirect term must be exercised"
    if case == "d3_spans_short_row":
        assert d == 3
    if case == "d_beyond_T_clamped":
        assert d == 5
    loss, aux = losses.tsdkd_loss(s, t, m, variant="official", **kw)
    assert_close(loss, ref_loss, what="loss")
    assert_aux_close(aux, ref_aux, OFFICIAL_KEYS + ["entropy/student", "entropy/teacher", "agree/top1"])


def test_official_em_sees_padding_but_paper_does_not(losses):
    """Changing the student's logits only at padding positions changes the official EM term (its set is taken
    over the whole grid) and nothing in the paper variant."""
    s, t, m = _paper_inputs(130, [8, 4, 6], 8, 24)  # 18 masked tokens
    pad = [(b, i) for b in range(3) for i in range(8) if m[b, i] == 0]
    s_hi = s.copy()
    for b, i in pad:
        s_hi[b, i] *= np.float32(1e-3)  # near-uniform: entropy ≈ log V, above the 0.1 quantile → in the set
    s_lo = saturate(s, pad)  # exactly zero entropy → below the threshold → out of the set

    ref_hi = ref.tsdkd_loss_official(s_hi, t, m)[1]
    ref_lo = ref.tsdkd_loss_official(s_lo, t, m)[1]
    assert abs(ref_hi["loss/em"] - ref_lo["loss/em"]) > 1e-2  # the reference shows the quirk
    assert_close(ref_hi["loss/direct"], ref_lo["loss/direct"], rtol=1e-12)
    assert_close(ref_hi["loss/indirect"], ref_lo["loss/indirect"], rtol=1e-12)

    _, off_hi = losses.tsdkd_loss(s_hi, t, m, variant="official")
    _, off_lo = losses.tsdkd_loss(s_lo, t, m, variant="official")
    assert_aux_close(off_hi, ref_hi, OFFICIAL_KEYS)
    assert_aux_close(off_lo, ref_lo, OFFICIAL_KEYS)
    assert abs(float(np64(off_hi["loss/em"])) - float(np64(off_lo["loss/em"]))) > 1e-2

    pap_hi_loss, pap_hi = losses.tsdkd_loss(s_hi, t, m, variant="paper")
    pap_lo_loss, pap_lo = losses.tsdkd_loss(s_lo, t, m, variant="paper")
    ref_pap_loss, ref_pap = ref.tsdkd_loss_paper(s_hi, t, m)
    assert_close(pap_hi_loss, ref_pap_loss)
    assert_close(pap_lo_loss, ref_pap_loss)
    for key in ("loss/direct", "loss/em", "loss/indirect", "loss/total"):
        assert_close(pap_hi[key], ref_pap[key], what=key)
        assert_close(pap_lo[key], ref_pap[key], what=key)
