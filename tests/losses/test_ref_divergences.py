"""Per-token primitives and divergences (``tsdkd_jax.losses.divergences``) against the float64 reference."""

import numpy as np
import pytest
import reference_np as ref
from loss_problems import assert_close, np64, rand_logits, right_pad_mask, saturate

from tsdkd_jax import losses

SHAPE = (2, 5, 29)


def test_log_softmax_entropy_cross_entropy_masked_mean():
    z = rand_logits(10, SHAPE)
    assert_close(losses.log_softmax(z), ref.log_softmax(z), what="log_softmax")
    assert_close(losses.entropy(z), ref.entropy(z), what="entropy")
    labels = np.random.default_rng(11).integers(0, SHAPE[-1], size=SHAPE[:-1]).astype(np.int32)
    assert_close(losses.cross_entropy(z, labels), ref.cross_entropy(z, labels), what="cross_entropy")
    v = rand_logits(12, (3, 7))
    m = right_pad_mask([7, 2, 5], 7)
    assert_close(losses.masked_mean(v, m), ref.masked_mean(v, m), what="masked_mean")


def test_entropy_of_saturated_logits_is_zero():
    z = saturate(rand_logits(13, (1, 3, 16)), [(0, 0), (0, 1), (0, 2)])
    h = np64(losses.entropy(z))
    assert np.all(np.isfinite(h)), h
    np.testing.assert_array_equal(h, 0.0)


def test_forward_reverse_kl():
    zs, zt = rand_logits(20, SHAPE), rand_logits(21, SHAPE)
    assert_close(losses.forward_kl(zs, zt), ref.forward_kl(zs, zt), what="forward KL(p_T||p_S)")
    assert_close(losses.reverse_kl(zs, zt), ref.reverse_kl(zs, zt), what="reverse KL(p_S||p_T)")


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd(beta):
    zs, zt = rand_logits(22, SHAPE), rand_logits(23, SHAPE)
    assert_close(losses.generalized_jsd(zs, zt, beta), ref.generalized_jsd(zs, zt, beta), what=f"β={beta}")


def test_generalized_jsd_endpoints_are_forward_and_reverse_kl():
    zs, zt = rand_logits(24, SHAPE), rand_logits(25, SHAPE)
    assert_close(losses.generalized_jsd(zs, zt, 0.0), ref.forward_kl(zs, zt), what="β=0 → KL(p_T||p_S)")
    assert_close(losses.generalized_jsd(zs, zt, 1.0), ref.reverse_kl(zs, zt), what="β=1 → KL(p_S||p_T)")


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_generalized_jsd_mixture_is_in_probability_space(beta):
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
def test_skew_kl_and_skew_reverse_kl(alpha):
    zs, zt = rand_logits(28, SHAPE), rand_logits(29, SHAPE)
    assert_close(losses.skew_kl(zs, zt, alpha), ref.skew_kl(zs, zt, alpha), what="skew KL")
    assert_close(losses.skew_reverse_kl(zs, zt, alpha), ref.skew_reverse_kl(zs, zt, alpha), what="skew RKL")
