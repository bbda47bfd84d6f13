"""Gradients: finite differences in float64, and the gate / selections carry no gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_x64 import x64
from loss_problems import make_problem, pad_student, rel_err, student_unembed

from tsdkd_jax import losses as L

KW = {"rank_k": 5, "opener_frac": 0.3, "em_frac": 0.3}


def _fd_check(f, args, seed=0, eps=1e-6):
    """Central difference along one random direction per argument vs the autodiff directional derivative."""
    rng = np.random.default_rng(seed)
    grads = jax.grad(f, argnums=tuple(range(len(args))))(*args)
    for i, (a, g) in enumerate(zip(args, grads, strict=True)):
        v = jnp.asarray(rng.normal(size=a.shape), a.dtype)
        plus = [*args[:i], a + eps * v, *args[i + 1 :]]
        minus = [*args[:i], a - eps * v, *args[i + 1 :]]
        fd = (float(f(*plus)) - float(f(*minus))) / (2 * eps)
        ad = float(jnp.sum(g * v))
        assert abs(fd - ad) <= 1e-6 * max(1.0, abs(ad)), (i, fd, ad)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_finite_differences_full_logits(variant):
    # The gate is stop-gradient by design, so the exact derivative only matches FD with the gate off;
    # the selections are piecewise constant and do not change under an eps step.
    with x64():
        p = make_problem(vs=48, vt=64, dtype=jnp.float64)
        u = p.teacher_logits()
        loss = lambda z: L.tsdkd_loss(pad_student(z, 64), u, p.mask, variant=variant, use_gate=False, **KW)[0]
        z = p.student_logits()
        assert z.dtype == jnp.float64 and loss(z).dtype == jnp.float64
        _fd_check(loss, (z,))


@pytest.mark.parametrize("divergence", ["gjsd", "fkl", "rkl", "skl", "srkl"])
def test_finite_differences_divergences_with_neg_inf_padding(divergence):
    # −inf padding: exact derivatives (0 at padded ids) and no NaN, also at ids where both sides are −inf
    # (there jnp.logaddexp's JVP would give NaN for the mixtures).
    with x64():
        p = make_problem(vs=48, vt=64, dtype=jnp.float64, seed=2)
        u = p.teacher_logits()
        if divergence == "fkl":  # teacher mass on ids the student lacks makes KL(p_T‖p_S) infinite
            u = u.at[..., 48:].set(-jnp.inf)
        else:  # ids 48..59: teacher-only mass; ids 60..63: neither side
            u = u.at[..., 60:].set(-jnp.inf)
        fn = {
            "gjsd": lambda z: L.generalized_jsd(z, u, 0.9),
            "fkl": lambda z: L.forward_kl(z, u),
            "rkl": lambda z: L.reverse_kl(z, u),
            "skl": lambda z: L.skew_kl(z, u, 0.1),
            "srkl": lambda z: L.skew_reverse_kl(z, u, 0.1),
        }[divergence]
        w = jnp.asarray(np.random.default_rng(0).uniform(size=p.mask.shape))
        loss = lambda z: jnp.sum(w * fn(pad_student(z, 64)))
        _fd_check(loss, (p.student_logits(),))


def test_finite_differences_chunked():
    with x64():
        p = make_problem(vs=48, vt=64, dtype=jnp.float64, seed=3)

        def loss(hs, ws):
            return L.chunked_tsdkd_loss(
                hs, p.ht, p.mask,
                student_unembed=lambda h: student_unembed(h, ws), teacher_unembed=lambda h: h @ p.wt,
                chunk_size=8, use_gate=False, **KW,
            )[0]  # fmt: skip

        _fd_check(loss, (p.hs, p.ws))


def _grad(f, z):
    return jax.grad(lambda z: f(z)[0])(z)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_gate_and_selections_carry_no_gradient(variant):
    """Each term's gradient equals that of the term with its gate/selection frozen as a constant."""
    p = make_problem(seed=4)
    z, u, m = p.student_logits(), p.teacher_logits(), p.mask
    h_s, h_t = L.entropy(z), L.entropy(u)
    base = KW | {"variant": variant}

    # Direct term alone (EM and indirect off): Σ m·g·JSD / Σ m with g a constant.
    g_direct = _grad(lambda z: L.tsdkd_loss(z, u, m, use_em=False, use_indirect=False, **base), z)
    gate = np.asarray(L.entropy_gate(h_s, h_t, 1.0))
    want = jax.grad(lambda z: jnp.sum(m * gate * L.generalized_jsd(z, u, 0.9)) / jnp.sum(m))(z)
    assert rel_err(g_direct, want) <= 1e-5

    # EM term: difference of em_weight=2 and em_weight=1 isolates it; the set is a constant.
    if variant == "paper":
        em_set = np.asarray(L.em_mask(h_s, m, 0.3))
    else:
        em_set = np.asarray(L.official_em_mask(h_s, m, 0.3))
    assert 0 < em_set.sum()
    g2 = _grad(lambda z: L.tsdkd_loss(z, u, m, em_weight=2.0, **base), z)
    g1 = _grad(lambda z: L.tsdkd_loss(z, u, m, em_weight=1.0, **base), z)
    want = jax.grad(lambda z: jnp.sum(em_set * L.entropy(z)) / em_set.sum())(z)
    assert rel_err(g2 - g1, want) <= 1e-4

    # Indirect term: rank_weight=1 minus rank_weight=0; the opener and the top-k ids are constants.
    if variant == "paper":
        opener, nll = np.asarray(L.opener_mask(h_s, m, 0.3)), lambda z: L.plackett_luce_nll(z, u, 5)
    else:
        opener, nll = np.asarray(L.official_opener_mask(h_s, m, 0.3)), lambda z: L.official_rank_nll(z, u, 5)
    assert 0 < opener.sum()
    g1 = _grad(lambda z: L.tsdkd_loss(z, u, m, rank_weight=1.0, **base), z)
    g0 = _grad(lambda z: L.tsdkd_loss(z, u, m, rank_weight=0.0, **base), z)
    want = jax.grad(lambda z: jnp.sum(opener * nll(z)) / opener.sum())(z)
    assert rel_err(g1 - g0, want) <= 1e-4


def test_selection_functions_have_zero_gradient():
    p = make_problem(seed=5)
    h_s, h_t = L.entropy(p.student_logits()), L.entropy(p.teacher_logits())
    r = jnp.asarray(np.random.default_rng(0).normal(size=h_s.shape), jnp.float32)
    fns = [
        lambda h: L.entropy_gate(h, h_t, 1.0),
        lambda h: L.entropy_gate(h_t, h, 0.5),
        lambda h: L.opener_mask(h, p.mask, 0.3),
        lambda h: L.em_mask(h, p.mask, 0.3),
        lambda h: L.official_opener_mask(h, p.mask, 0.3),
        lambda h: L.official_em_mask(h, p.mask, 0.3),
        lambda h: L.masked_quantile(h, p.mask, 0.5)[:, None],
    ]
    for f in fns:
        g = jax.grad(lambda h, f=f: jnp.sum(r * f(h)))(h_s)
        assert float(jnp.max(jnp.abs(g))) == 0.0


def test_neg_inf_padding_gives_no_nan():
    p = make_problem(vs=48, vt=64, seed=6)
    z, u = pad_student(p.student_logits(), 64), p.teacher_logits()
    assert bool(jnp.all(jnp.isfinite(L.entropy(z))))
    assert bool(jnp.all(jnp.isfinite(L.log_softmax(z)[..., :48])))
    for fn in (lambda z: L.generalized_jsd(z, u, 0.5), lambda z: L.reverse_kl(z, u),
               lambda z: L.skew_kl(z, u, 0.1), lambda z: L.skew_reverse_kl(z, u, 0.1),
               lambda z: L.entropy(z)):  # fmt: skip
        val, g = jax.value_and_grad(lambda z, fn=fn: jnp.sum(fn(z)))(z)
        assert np.isfinite(float(val)) and not bool(jnp.any(jnp.isnan(g)))
    # Forward KL is +inf when the teacher has mass where the student cannot go — but never NaN.
    assert bool(jnp.all(jnp.isposinf(L.forward_kl(z, u))))
    for variant in ("paper", "official"):
        loss, aux = L.tsdkd_loss(z, u, p.mask, variant=variant, **KW)
        g = jax.grad(lambda z, v=variant: L.tsdkd_loss(z, u, p.mask, variant=v, **KW)[0])(z)
        assert np.isfinite(float(loss)) and all(np.isfinite(float(x)) for x in aux.values())
        assert bool(jnp.all(jnp.isfinite(g[..., :48])))
