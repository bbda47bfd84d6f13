"""The cache-free attention's value and gradients against a float64 NumPy reference written from the equations.

The reference's backward is the textbook one (dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − Σ_s P ⊙ dP), dQ = dS·K,
dK = dSᵀ·Q, masked scores get no gradient), in another form than the model's hand-written backward
(models.layers.rows_attention), and is itself checked against central finite differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsdkd_jax.models import ModelConfig, layers

B, T, N, K, H = 2, 6, 4, 2, 3


def reference(q, k, v, mask, dout, scale, cap):
    """Float64 (output, dq, dk, dv) of GQA attention: q [B,T,N,H], k and v [B,T,K,H], mask [B,T,S]."""
    g = N // K
    kq, vq = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)  # query head n reads KV head n // g
    raw = np.einsum("btnh,bsnh->bnts", q, kq) * scale
    capped = raw if cap is None else np.tanh(raw / cap) * cap
    logits = np.where(mask[:, None], capped, -np.inf)
    full_rows = ~mask.any(-1)[:, None, :, None]  # a query without keys: uniform over all S, as the model
    logits = np.where(full_rows, 0.0, logits)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bnts,bsnh->btnh", probs, vq)
    dprobs = np.einsum("btnh,bsnh->bnts", dout, vq)
    dcapped = probs * (dprobs - (probs * dprobs).sum(-1, keepdims=True))
    dcapped = np.where(mask[:, None], dcapped, 0.0)
    draw = dcapped if cap is None else dcapped * (1 - np.tanh(raw / cap) ** 2)
    draw = draw * scale
    dq = np.einsum("bnts,bsnh->btnh", draw, kq)
    dkq = np.einsum("bnts,btnh->bsnh", draw, q)
    dvq = np.einsum("bnts,btnh->bsnh", probs, dout)
    fold = lambda x: x.reshape(B, T, K, g, H).sum(3)  # the G query heads' gradients meet in their KV head
    return out, dq, fold(dkq), fold(dvq)


def problem(seed):
    rng = np.random.default_rng(seed)
    q, dout = (rng.standard_normal((B, T, N, H)) for _ in range(2))
    k, v = (rng.standard_normal((B, T, K, H)) for _ in range(2))
    valid = np.ones((B, T), bool)
    valid[1, :2] = False  # left padding: row 1's first two queries see no valid key
    causal = np.tril(np.ones((T, T), bool))
    mask = valid[:, None, :] & causal[None]
    return q, k, v, mask, dout


def config(cap):
    return ModelConfig(vocab_size=8, hidden_size=N * H, intermediate_size=8, num_layers=1, num_heads=N,
                       num_kv_heads=K, head_dim=H, attn_logit_softcap=cap)  # fmt: skip


@pytest.mark.parametrize("cap", [None, 2.0], ids=["custom_vjp", "softcap_ad"])
def test_attention_value_and_grads_match_float64_reference(cap):
    q, k, v, mask, dout = problem(0)
    cfg = config(cap)
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    attend = lambda q_, k_, v_: layers._grouped_rows_attention(cfg, q_, k_, v_, jnp.asarray(mask))
    out, vjp = jax.vjp(attend, f32(q), f32(k), f32(v))
    grads = vjp(f32(dout))
    want = reference(q, k, v, mask, dout, cfg.attn_scale, cap)
    for name, got, ref in zip(("out", "dq", "dk", "dv"), (out, *grads), want):
        np.testing.assert_allclose(
            np.asarray(got), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(), err_msg=name
        )
    assert np.abs(want[1][1, :2]).max() == 0  # padded queries pass no gradient


def test_reference_backward_matches_finite_differences():
    q, k, v, mask, dout = problem(1)
    scale, cap, eps = 0.5, 2.0, 1e-6
    _, dq, dk, dv = reference(q, k, v, mask, dout, scale, cap)
    loss = lambda q_, k_, v_: float((reference(q_, k_, v_, mask, dout, scale, cap)[0] * dout).sum())
    rng = np.random.default_rng(2)
    for arg, grad in ((0, dq), (1, dk), (2, dv)):
        args = [q, k, v]
        for _ in range(4):
            idx = tuple(rng.integers(0, s) for s in args[arg].shape)
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[arg][idx] += eps
            minus[arg][idx] -= eps
            numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
            assert abs(numeric - grad[idx]) < 1e-6 * max(1.0, abs(numeric)), (arg, idx, numeric, grad[idx])
