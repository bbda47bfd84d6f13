"""The fused loss without its entropy pre-pass (losses/fused_rows.py): values and gradients equal jax.grad of
the checkpointed chunked loss (itself checked against the float64 NumPy reference), 1e-5 relative, and the
pass takes 4 vocabulary matmuls; a tie at an EM quantile makes it run again with the real count, still exact."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loss_problems import rel_err
from test_fused import DIVERGENCES, KW, PROBLEM, _pair, _vocab_matmuls

from tsdkd_jax import losses as L
from tsdkd_jax.losses import fused, fused_rows
from tsdkd_jax.losses import selection as sel


def rows_unembed(w, h, ids, cap=30.0):
    """student_unembed's logits at ids only: the columns of w gathered per token."""
    return cap * jnp.tanh(jnp.einsum("nd,dnk->nk", h, w[:, ids]) / cap)


def _losses(p, chunk, **kw):
    return _pair(chunk, p, rows_unembed, **kw)


def _assert_same(p, reference, rowwise):
    (l_ref, aux_ref), g_ref = jax.jit(jax.value_and_grad(reference, (0, 1), has_aux=True))(p.hs, p.ws)
    (l_row, aux_row), g_row = jax.jit(jax.value_and_grad(rowwise, (0, 1), has_aux=True))(p.hs, p.ws)
    assert float(jnp.max(jnp.abs(g_ref[1]))) > 0
    assert rel_err(g_row, g_ref) <= 1e-5
    np.testing.assert_allclose(float(l_row), float(l_ref), rtol=1e-6)
    for name, value in aux_ref.items():
        np.testing.assert_allclose(float(aux_row[name]), float(value), rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_rowwise_equals_chunked_gradient(divergence):
    # chunk 14 holds 2 rows of 7 (the third chunk row is padding), every term on
    _assert_same(PROBLEM, *_losses(PROBLEM, 14, divergence=divergence))


@pytest.mark.parametrize("flags", [{"use_em": False}, {"use_indirect": False}, {"use_gate": False}])
def test_rowwise_equals_chunked_gradient_ablations(flags):
    _assert_same(PROBLEM, *_losses(PROBLEM, 7, **flags))  # one row per chunk


def test_rowwise_pass_takes_four_vocabulary_matmuls():
    v, d = 97, 8  # a vocabulary size no other dimension has
    keys = jax.random.split(jax.random.key(0), 4)
    ws, wt = jax.random.normal(keys[0], (d, v)), jax.random.normal(keys[1], (d, v))
    hs, ht = jax.random.normal(keys[2], (2, 6, d)), jax.random.normal(keys[3], (2, 6, d))
    cfg = L.tsdkd.make_config(rank_k=3)
    head = fused.Head(lambda w, h: h @ w, lambda w, h: h @ w, cfg, 6)
    scales = lambda c: fused.reference_scales(c, cfg)
    rows = lambda w, h, ids: jnp.einsum("nd,dnk->nk", h, w[:, ids])

    def value(w):
        return fused_rows.fused_kd_rows(head, rows, w, hs, wt, ht, jnp.ones((2, 6)), scales)[2]

    assert _vocab_matmuls(jax.make_jaxpr(jax.value_and_grad(value))(ws).jaxpr, v) == 4


def test_a_tie_at_the_em_quantile_falls_back_exactly():
    # Row 0's tokens share one hidden state: 7 equal entropies, so its EM set is the whole row, not the 2
    # tokens predicted from the mask; the loss must still equal the reference (the pass runs again with the
    # real count: with the predicted one the EM term's gradient would be 2/7 of the reference's).
    p = dataclasses.replace(PROBLEM, hs=PROBLEM.hs.at[0].set(PROBLEM.hs[0, 2]))
    h_s = L.tsdkd.token_stats(p.student_logits(), p.teacher_logits()[..., :40], L.tsdkd.make_config(**KW))[
        "h_s"
    ]
    em = sel.em_mask(h_s, p.mask, KW["em_frac"])
    assert float(jnp.sum(em)) != float(sel.em_count_without_ties(p.mask, KW["em_frac"]))
    _assert_same(p, *_losses(p, 7, vocab_policy="truncate_teacher"))
