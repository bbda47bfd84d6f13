"""MiniLLM's per-token objective and its gradient against a float64 NumPy reference written from the paper.

Gu et al., "MiniLLM: Knowledge Distillation of Large Language Models" (ICLR 2024), §2.2: with y sampled from
p̃ = α·p + (1 − α)·q_θ, r_t = log p(y_t) − log q_θ(y_t), the per-token weight w_t = q_θ(y_t)/p̃(y_t) and the
length-normalised return R_{t+1} = mean of r_t' over the response tokens after t,

  ∇L = Σ_t w_t ∇ KL(q_θ(·|y<t) ‖ p(·|y<t))  −  Σ_t w_t R_{t+1} ∇ log q_θ(y_t|y<t),

the long-term part as PPO's clipped surrogate max(−R ρ_t, −R clip(ρ_t, 1 − ε, 1 + ε)) in ρ_t = q_θ(y_t)/p̃(y_t)
(p̃ fixed: it drew y), i.e. no gradient where the clipped branch is taken. Everything per token is averaged
over the response tokens. The reference below writes the value and the gradient with respect to the student's
logits out by hand (∂KL/∂z = q ⊙ (log q − log p − KL), ∂ log q(y)/∂z = e_y − q), loop by loop, in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_x64 import x64

from tsdkd_jax.losses import minillm


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def reference(z, u, y, mask, alpha, eps, length_norm):
    """(loss, ∂loss/∂z, #tokens on the clipped branch) from the paper's equations; z, u [B, N, V] float64."""
    B, N, V = z.shape
    logq, logp = _log_softmax(z), _log_softmax(u)
    n_tok = mask.sum()
    loss, grad, n_clipped = 0.0, np.zeros_like(z), 0
    for b in range(B):
        r = [logp[b, t, y[b, t]] - logq[b, t, y[b, t]] for t in range(N)]
        for t in range(N):
            if not mask[b, t]:
                continue
            q = np.exp(logq[b, t])
            kl = float(np.sum(q * (logq[b, t] - logp[b, t])))
            qy, py = q[y[b, t]], np.exp(logp[b, t, y[b, t]])
            w = qy / (alpha * py + (1 - alpha) * qy)
            later = [s for s in range(t + 1, N) if mask[b, s]]
            ret = sum(r[s] for s in later)
            if length_norm and later:
                ret /= len(later)
            clipped = min(max(w, 1 - eps), 1 + eps)
            loss += w * kl + max(-ret * w, -ret * clipped)
            grad[b, t] += w * q * (logq[b, t] - logp[b, t] - kl)  # single-step: the exact per-step KL
            if 1 - eps <= w <= 1 + eps or -ret * w > -ret * clipped:  # the unclipped branch is taken
                grad[b, t] += -ret * w * (np.eye(V)[y[b, t]] - q)
            else:
                n_clipped += ret != 0  # (with a zero return both branches are 0 anyway)
    return loss / n_tok, grad / n_tok, n_clipped


def _batch(seed=0, B=4, N=9, V=11):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(B, N, V)) * 1.5
    u = rng.normal(size=(B, N, V)) * 3.0  # a sharper teacher: w spreads well beyond [1 − ε, 1 + ε]
    mix = 0.5 * np.exp(_log_softmax(u)) + 0.5 * np.exp(_log_softmax(z))  # tokens as the sampler draws them
    y = np.array([[rng.choice(V, p=mix[b, t] / mix[b, t].sum()) for t in range(N)] for b in range(B)])
    lengths = np.array([N, 5, 1, N - 1])[:B]  # full rows, a short one, a one-token one
    mask = (np.arange(N)[None, :] < lengths[:, None]).astype(np.float64)
    return z, u, y, mask


@pytest.mark.parametrize(
    "alpha, eps, length_norm", [(0.2, 0.2, True), (0.5, 0.05, True), (0.2, 0.2, False), (0.0, 0.2, True)]
)
def test_objective_and_gradient_match_the_paper(alpha, eps, length_norm):
    z, u, y, mask = _batch()
    ref_loss, ref_grad, n_clipped = reference(z, u, y, mask, alpha, eps, length_norm)
    cfg = minillm.MiniLLMConfig(mix_alpha=alpha, clip_eps=eps, length_norm=length_norm)
    with x64():
        f = lambda z_: minillm.minillm_loss(z_, jnp.asarray(u), jnp.asarray(y), jnp.asarray(mask), cfg)[0]
        loss, grad = jax.value_and_grad(f)(jnp.asarray(z))
        assert loss.dtype == jnp.float64
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-9, atol=1e-12)
    if alpha > 0:
        assert n_clipped > 0  # the clipped branch (no long-term gradient) is exercised too
    if alpha == 0:
        assert n_clipped == 0  # without mixing the sampler is the student: every weight is 1


def test_padding_and_its_labels_change_nothing():
    z, u, y, mask = _batch(seed=1)
    cfg = minillm.MiniLLMConfig()
    y2, z2 = y.copy(), z.copy()
    y2[mask == 0] = 0
    z2[mask == 0] = 1e4  # even absurd logits at padded positions
    f = lambda z_, y_: minillm.minillm_loss(z_, u, y_, mask, cfg)[0]
    (a, ga), (b, gb) = jax.value_and_grad(f)(z, y), jax.value_and_grad(f)(z2, y2)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(gb)[mask == 0], 0.0)
    np.testing.assert_allclose(np.asarray(ga)[mask > 0], np.asarray(gb)[mask > 0], rtol=1e-5, atol=1e-7)


def test_returns_are_the_rewards_after_t():
    r = np.array([[1.0, 2.0, 3.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    m = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(minillm.returns(r, m, False), [[5.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(minillm.returns(r, m, True), [[2.5, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("field, value", [("mix_alpha", 1.0), ("mix_alpha", -0.1), ("clip_eps", 0.0)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"loss.minillm.{field}"):
        minillm.MiniLLMConfig(**{field: value})
