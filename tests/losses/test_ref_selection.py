"""Entropy gate, opener / EM selections and Plackett–Luce ranking (``tsdkd_jax.losses.selection``) against the
float64 reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_np as ref
from loss_problems import assert_close, np64, quantile_position_is_safe, rand_logits, right_pad_mask

from tsdkd_jax import losses


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_entropy_gate(tau):
    hs = np.abs(rand_logits(30, (3, 8), scale=2.0))
    ht = np.abs(rand_logits(31, (3, 8), scale=2.0))
    assert_close(losses.entropy_gate(hs, ht, tau), ref.entropy_gate(hs, ht, tau))
    # more uncertain student than teacher → gate > 0.5
    g = np64(losses.entropy_gate(np.float32([[3.0]]), np.float32([[1.0]]), tau))
    assert g.item() > 0.5


def _check_selection(kernel, reference, h, m, frac):
    """The kernel's 0/1 selection equals the reference's exactly and stays inside the mask; returns it."""
    got = np64(kernel(h, m, frac))
    np.testing.assert_array_equal(got, reference(h, m, frac))
    assert np.all(got <= m)
    return got


OPENER_CASES = {  # name: opener fraction c
    "random_c0.1": 0.1,
    "random_c0.3": 0.3,
    "zero_entropy_row": 0.1,
    "all_pad_row": 0.1,
    "one_token_response": 0.1,
    "frac_one_whole_response": 1.0,
    "leading_zero_entropies": 0.1,
    "padding_entropy_ignored": 0.1,
}


def _opener_case(name):
    rng = np.random.default_rng(40)
    T = 9
    h = (np.abs(rng.standard_normal((3, T))) + 0.05).astype(np.float32)
    m = right_pad_mask([9, 6, 4], T)
    if name == "zero_entropy_row":
        h[1] = 0.0  # zero total → empty opener
    elif name == "all_pad_row":
        m[2] = 0.0
    elif name == "one_token_response":
        m[1] = 0.0
        m[1, 0] = 1.0
    elif name == "leading_zero_entropies":
        h[0, :3] = 0.0
    elif name == "padding_entropy_ignored":
        h[1, 6:] = 50.0
        h[2, 4:] = 50.0
    return h, m, OPENER_CASES[name]


@pytest.mark.parametrize("case", OPENER_CASES)
def test_opener_mask(case):
    h, m, frac = _opener_case(case)
    got = _check_selection(losses.opener_mask, ref.opener_mask, h, m, frac)
    # structural expectations, independent of the reference
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


EM_CASES = {  # name: EM fraction ρ
    "rho0.1": 0.1,
    "rho0.3": 0.3,
    "rho0.4": 0.4,
    "constant_row_and_all_pad": 0.1,
    "padding_entropy_ignored": 0.1,
}


def _em_case(name):
    rng = np.random.default_rng(50)
    T = 10
    h = (np.abs(rng.standard_normal((4, T))) * 2).astype(np.float32)
    m = right_pad_mask([10, 7, 3, 1], T)
    frac = EM_CASES[name]
    if name == "constant_row_and_all_pad":
        h[1] = 0.75
        m[3] = 0.0
    elif name == "padding_entropy_ignored":
        h[1, 7:] = 99.0
        h[2, 3:] = 99.0
    for b in range(m.shape[0]):
        assert quantile_position_is_safe(int(m[b].sum()), 1 - frac)
    return h, m, frac


@pytest.mark.parametrize("case", EM_CASES)
def test_em_mask_per_row(case):
    h, m, frac = _em_case(case)
    got = _check_selection(losses.em_mask, ref.em_mask, h, m, frac)
    # each non-empty row keeps at least its maximum (a per-row selection, not a batch one)
    for b in range(m.shape[0]):
        if m[b].sum() > 0:
            assert got[b].sum() >= 1
            assert got[b, int(np.argmax(np.where(m[b] > 0, h[b], -np.inf)))] == 1


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_plackett_luce_nll_values(k):
    zs, zt = rand_logits(60, (2, 4, 24)), rand_logits(61, (2, 4, 24))
    got = losses.plackett_luce_nll(zs, zt, k)
    assert np64(got).shape == (2, 4)
    assert_close(got, ref.plackett_luce_nll(zs, zt, k), what=f"k={k}")


def test_plackett_luce_k2_gradient_moves_student_towards_teacher():
    s = jnp.asarray([[1.0, 0.0]], dtype=jnp.float32)  # student prefers token 0
    t = jnp.asarray([[0.0, 2.0]], dtype=jnp.float32)  # teacher prefers token 1
    grad = jax.grad(lambda z: jnp.sum(losses.plackett_luce_nll(z, t, 2)))
    g = np64(grad(s))
    # NLL = softplus(s0 − s1): dNLL/ds0 = σ(1), dNLL/ds1 = −σ(1)
    sig1 = 1.0 / (1.0 + np.exp(-1.0))
    assert_close(g, [[sig1, -sig1]])
    z = np64(s)
    for _ in range(4):
        z_new = z - 1.0 * np64(grad(jnp.float32(z)))
        assert z_new[0, 1] - z_new[0, 0] > z[0, 1] - z[0, 0]
        z = z_new
    assert np.argmax(z[0]) == 1  # order now matches the teacher's
