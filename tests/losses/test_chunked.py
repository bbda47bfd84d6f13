"""chunked_tsdkd_loss (from hidden states) equals tsdkd_loss on full logits: values, aux and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loss_problems import make_problem, pad_student, rel_err, student_unembed

from tsdkd_jax.losses import align_vocab, chunked_tsdkd_loss, tsdkd_loss

# Loose fractions so the opener / EM sets are non-trivial on 21 tokens.
KW = {"rank_k": 5, "opener_frac": 0.3, "em_frac": 0.3}


def _full_and_chunked(p, variant, chunk, policy, **extra):
    kw = KW | extra | {"variant": variant}
    vs, vt = p.ws.shape[1], p.wt.shape[1]

    def full(hs, ws):
        z, u = student_unembed(hs, ws), p.teacher_logits()
        if vt > vs:  # the explicit equivalent of each policy, written out here, not via align_vocab
            z, u = (pad_student(z, vt), u) if policy == "pad_student" else (z, u[..., :vs])
        return tsdkd_loss(z, u, p.mask, **kw)

    def chunked(hs, ws):
        return chunked_tsdkd_loss(
            hs, p.ht, p.mask,
            student_unembed=lambda h: student_unembed(h, ws), teacher_unembed=lambda h: h @ p.wt,
            chunk_size=chunk, vocab_policy=policy, **kw,
        )  # fmt: skip

    grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))
    return grad(full)(p.hs, p.ws), grad(chunked)(p.hs, p.ws)


CASES = [  # chunk, V_student, V_teacher, policy; B·T = 21 tokens
    (7, 64, 64, "pad_student"),  # divides
    (8, 64, 64, "pad_student"),  # does not divide
    (5, 48, 64, "pad_student"),  # vocab mismatch, −inf padding, does not divide
    (64, 48, 64, "truncate_teacher"),  # chunk larger than the token count
]


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("chunk,vs,vt,policy", CASES)
def test_chunked_equals_full(variant, chunk, vs, vt, policy):
    p = make_problem(vs=vs, vt=vt)
    ((loss_f, aux_f), grads_f), ((loss_c, aux_c), grads_c) = _full_and_chunked(p, variant, chunk, policy)
    assert np.isfinite(float(loss_f)) and float(aux_f["loss/indirect"]) > 0 and float(aux_f["loss/em"]) > 0
    assert rel_err(loss_c, loss_f) <= 1e-5
    for key in aux_f:
        assert abs(float(aux_c[key]) - float(aux_f[key])) <= 1e-5 * max(1.0, abs(float(aux_f[key]))), key
    for g_c, g_f in zip(grads_c, grads_f, strict=True):
        assert bool(jnp.all(jnp.isfinite(g_c))), "NaN/inf gradient"
        assert float(jnp.max(jnp.abs(g_f))) > 0
        assert rel_err(g_c, g_f) <= 1e-5


@pytest.mark.parametrize("divergence", ["rkl", "skl", "srkl"])
def test_chunked_equals_full_other_divergences(divergence):
    p = make_problem(vs=48, vt=64, seed=1)
    ((loss_f, _), grads_f), ((loss_c, _), grads_c) = _full_and_chunked(
        p, "paper", 8, "pad_student", divergence=divergence, use_gate=False
    )
    assert rel_err(loss_c, loss_f) <= 1e-5
    assert rel_err(grads_c, grads_f) <= 1e-5


def test_teacher_gets_no_gradient():
    p = make_problem()

    def loss(ht, wt):
        return chunked_tsdkd_loss(
            p.hs, ht, p.mask,
            student_unembed=lambda h: h @ p.ws, teacher_unembed=lambda h: h @ wt, chunk_size=8, **KW,
        )[0]  # fmt: skip

    g_ht, g_wt = jax.grad(loss, argnums=(0, 1))(p.ht, p.wt)
    assert float(jnp.max(jnp.abs(g_ht))) == 0.0 and float(jnp.max(jnp.abs(g_wt))) == 0.0


def test_align_vocab_policies():
    z, u = jnp.zeros((2, 3)), jnp.arange(10.0).reshape(2, 5)
    zp, up = align_vocab(z, u, "pad_student")
    assert zp.shape == (2, 5) and bool(jnp.all(jnp.isneginf(zp[:, 3:]))) and up is u
    zt, ut = align_vocab(z, u, "truncate_teacher")
    assert zt is z and ut.shape == (2, 3)
    with pytest.raises(ValueError, match="student vocab"):
        align_vocab(u, z)
