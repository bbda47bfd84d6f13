"""The fused loss (losses/fused.py): values and gradients equal jax.grad of the reference losses.

References: the checkpointed chunked loss and the full-logit tsdkd_loss (both checked against the float64
NumPy reference in test_ref_*.py); tolerance 1e-5 relative on the gradients w.r.t. the student's hidden states
and unembedding (or logits), float32 throughout.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jex_core
from loss_problems import make_problem, pad_student, rel_err, student_unembed

from tsdkd_jax import losses as L
from tsdkd_jax.losses import fused

KW = {"rank_k": 5, "opener_frac": 0.3, "em_frac": 0.3}
DIVERGENCES = ("gjsd", "fkl", "rkl", "skl", "srkl")
PROBLEM = make_problem(b=3, t=7, vs=40, vt=48, seed=5)


def _policy(divergence):  # teacher mass on ids the student lacks makes KL(p_T‖p_S) infinite under padding
    return "truncate_teacher" if divergence == "fkl" else "pad_student"


def _pair(chunk, p=PROBLEM, rows=None, **kw):
    """(chunked reference, fused loss) on problem p; rows: the student's logits at given ids (fused_rows)."""
    common = {"chunk_size": chunk, "vocab_policy": _policy(kw.get("divergence", "gjsd")), **KW, **kw}

    def reference(hs, ws):
        s_fn, t_fn = (lambda h: student_unembed(h, ws)), (lambda h: h @ p.wt)
        return L.chunked_tsdkd_loss(hs, p.ht, p.mask, student_unembed=s_fn, teacher_unembed=t_fn, **common)

    def fused_loss(hs, ws):
        return fused.fused_tsdkd_loss(
            hs, p.ht, p.mask, student_unembed=lambda w, h: student_unembed(h, w), student_params=ws,
            teacher_unembed=lambda w, h: h @ w, teacher_params=p.wt, student_unembed_rows=rows, **common,
        )  # fmt: skip

    return reference, fused_loss


def _assert_same(reference, fused_loss, args, argnums=(0, 1)):
    (l_ref, aux_ref), g_ref = jax.jit(jax.value_and_grad(reference, argnums=argnums, has_aux=True))(*args)
    (l_fus, aux_fus), g_fus = jax.jit(jax.value_and_grad(fused_loss, argnums=argnums, has_aux=True))(*args)
    assert float(jnp.max(jnp.abs(jnp.concatenate([jnp.ravel(g) for g in g_ref])))) > 0
    assert rel_err(g_fus, g_ref) <= 1e-5
    np.testing.assert_allclose(float(l_fus), float(l_ref), rtol=1e-6)
    assert set(aux_fus) == set(aux_ref)
    for name, value in aux_ref.items():
        np.testing.assert_allclose(float(aux_fus[name]), float(value), rtol=1e-6, atol=1e-7, err_msg=name)
    return g_fus


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_fused_equals_chunked_gradient(variant, divergence):
    # chunk 4 over 21 tokens: a padded last chunk, every term (gate, EM, ranking) on.
    reference, fused_loss = _pair(4, variant=variant, divergence=divergence)
    _assert_same(reference, fused_loss, (PROBLEM.hs, PROBLEM.ws))


@pytest.mark.parametrize(
    "flags",
    [
        {"use_em": False, "use_indirect": False, "use_gate": False},  # GKD / DistiLLM: no selection pass
        {"use_direct": False, "use_indirect": False},  # EM alone
        {"use_em": False},  # ranking without EM
    ],
)
def test_fused_equals_chunked_gradient_ablations(flags):
    reference, fused_loss = _pair(8, **flags)
    _assert_same(reference, fused_loss, (PROBLEM.hs, PROBLEM.ws))


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_fused_from_logits_equals_tsdkd_loss_gradient(variant):
    # The student's logits −inf padded to the teacher's vocabulary, as align_vocab does.
    p = PROBLEM
    z, u = pad_student(p.student_logits(), 48), p.teacher_logits()
    reference = lambda z: L.tsdkd_loss(z, u, p.mask, variant=variant, **KW)
    fused_loss = lambda z: fused.fused_tsdkd_loss_from_logits(
        z, u, p.mask, chunk_size=5, variant=variant, **KW
    )
    g_fus = _assert_same(reference, fused_loss, (z,), argnums=0)
    assert bool(jnp.all(jnp.where(jnp.isfinite(z), jnp.isfinite(g_fus), g_fus == 0)))  # padded ids: exactly 0


def _vocab_matmuls(jaxpr, v) -> int:
    """dot_general equations with an operand or result whose last axis is the vocabulary (sub-jaxprs too)."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes = [x.aval.shape for x in (*eqn.invars, *eqn.outvars)]
            count += any(v in s for s in shapes)
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jex_core.ClosedJaxpr):
                    count += _vocab_matmuls(sub.jaxpr, v)
                elif isinstance(sub, jex_core.Jaxpr):
                    count += _vocab_matmuls(sub, v)
    return count


def test_fused_gradient_takes_four_vocabulary_matmuls_per_chunk():
    # Scan bodies are counted once: student and teacher logits, g·Wᵀ and hᵀ·g in the forward pass, nothing
    # over the vocabulary in the backward; plus the forward-only entropy pass (1) that fixes the selections
    # when the EM set / opener are in the loss.
    v, d = 97, 8  # a vocabulary size no other dimension has
    keys = jax.random.split(jax.random.key(0), 4)
    ws, wt = jax.random.normal(keys[0], (d, v)), jax.random.normal(keys[1], (d, v))
    hs, ht = jax.random.normal(keys[2], (2, 6, d)), jax.random.normal(keys[3], (2, 6, d))
    mm = lambda w, h: h @ w

    def count(**kw):
        def loss(w):
            return fused.fused_tsdkd_loss(
                hs, ht, jnp.ones((2, 6)), student_unembed=mm, student_params=w, teacher_unembed=mm,
                teacher_params=wt, chunk_size=4, **kw,
            )[0]  # fmt: skip

        return _vocab_matmuls(jax.make_jaxpr(jax.value_and_grad(loss))(ws).jaxpr, v)

    assert count(use_em=False, use_indirect=False, use_gate=False) == 4
    assert count() == 5
