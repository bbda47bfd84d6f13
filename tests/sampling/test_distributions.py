"""Top-k / top-p filters against a NumPy sort reference, and sampling frequencies against softmax(logits)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_hf

from tsdkd_jax import models, sampling
from tsdkd_jax.sampling.distributions import top_k_mask, top_p_mask


def _nucleus_np(logits, p):
    """Sort-based nucleus: the most probable tokens until their mass first reaches p (float64)."""
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probs)
    cum = np.cumsum(probs[order])
    n = int(np.searchsorted(cum, p)) + 1  # include the token that crosses p
    return set(order[: min(n, len(order))].tolist())


def test_top_p_bisection_equals_sorted_nucleus():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((64, 200)) * rng.uniform(0.3, 4.0, (64, 1))).astype(np.float32)
    top_p = rng.uniform(0.05, 0.99, 64).astype(np.float32)
    top_p[:3] = (1.0, 0.999999, 1e-6)  # off, nearly everything, only the argmax
    kept = np.isfinite(np.asarray(top_p_mask(jnp.asarray(logits), jnp.asarray(top_p))))
    for b in range(64):
        want = set(range(200)) if top_p[b] >= 1 else _nucleus_np(logits[b].astype(np.float64), top_p[b])
        assert set(np.flatnonzero(kept[b]).tolist()) == want, b


def test_top_k_keeps_exactly_the_k_largest():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((32, 300)).astype(np.float32)
    top_k = rng.integers(0, 40, 32).astype(np.int32)
    kept = np.isfinite(np.asarray(top_k_mask(jnp.asarray(logits), jnp.asarray(top_k), 64)))
    for b in range(32):
        want = np.arange(300) if top_k[b] == 0 else np.argsort(-logits[b])[: top_k[b]]
        assert set(np.flatnonzero(kept[b]).tolist()) == set(want.tolist())


def test_invalid_knobs_raise():
    with pytest.raises(ValueError, match="top_p"):
        sampling.make_params(2, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        sampling.make_params(2, temperature=-1.0)
    for bad_k in (-3, -0.5, 2.7, [1, float("nan")]):  # fractions would truncate silently in int32
        with pytest.raises(ValueError, match="top_k must be a whole number"):
            sampling.make_params(2, top_k=bad_k)
    assert sampling.make_params(2, top_k=[0, 4.0]).top_k.tolist() == [0, 4]


# ---- frequencies of real draws at a fixed context -----------------------------------------------------

V, DRAWS = 32, 8192
# E[TV] <= 0.5 * sqrt(V / n) = 0.031; TV moves by <= 1/n per draw, so McDiarmid gives
# P(TV > E + 0.03) <= exp(-2 n 0.03^2) ~ 4e-7.
TV_BOUND = 0.5 * np.sqrt(V / DRAWS) + 0.03


@pytest.fixture(scope="module")
def sharp_model(tmp_path_factory):
    """A tiny HF Qwen2 with vocab 32 and a scaled-up head, so softmax(logits) is far from uniform."""
    hf = tiny_hf.build("qwen2_untied", perturb_norms=False, head_scale=10.0, vocab_size=V)
    path = tmp_path_factory.mktemp("sharp")
    hf.save_pretrained(path)
    context = np.array([[3, 14, 15, 9, 2, 6]], np.int32)
    logits = tiny_hf.reference_logits(hf, context, np.ones_like(context))[0, -1].astype(np.float64)
    return models.from_pretrained(path), context, logits


def _draw(model, context, **kw):
    ids = np.repeat(context, DRAWS, axis=0)
    out = sampling.generate(model, ids, np.ones_like(ids), max_new_tokens=1, rng=jax.random.key(7), **kw)
    return np.asarray(out.tokens)[:, 0], np.asarray(out.logprobs)[:, 0]


def _softmax(x):
    e = np.exp(x - x[np.isfinite(x)].max())
    return e / e.sum()


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_frequencies_match_softmax(sharp_model, temperature):
    model, context, logits = sharp_model
    want = _softmax(logits / temperature)
    assert want.max() < 0.6 and (want > 0.02).sum() >= 5  # a non-trivial target distribution
    tokens, logprobs = _draw(model, context, temperature=temperature)
    freq = np.bincount(tokens, minlength=V) / DRAWS
    assert 0.5 * np.abs(freq - want).sum() < TV_BOUND
    np.testing.assert_allclose(logprobs, np.log(want[tokens]), atol=1e-4)


def test_top_k_and_top_p_supports(sharp_model):
    model, context, logits = sharp_model
    top5 = set(np.argsort(-logits)[:5].tolist())
    tokens, _ = _draw(model, context, top_k=5)
    assert set(tokens.tolist()) <= top5
    tokens, _ = _draw(model, context, top_k=5, top_k_cap=2)  # k above the static cap raises the cap
    assert set(tokens.tolist()) <= top5 and len(set(tokens.tolist())) == 5
    order = np.argsort(-logits)
    probs = _softmax(logits)
    cum = np.cumsum(probs[order])
    p = float((cum[2] + cum[3]) / 2)  # nucleus = 4 tokens; the 4th crosses p
    nucleus = order[:4]
    tokens, logprobs = _draw(model, context, top_p=p)
    assert set(tokens.tolist()) == set(nucleus.tolist())  # all four appear (each has mass >= 2 %)
    want = np.zeros(V)
    want[nucleus] = probs[nucleus] / probs[nucleus].sum()
    freq = np.bincount(tokens, minlength=V) / DRAWS
    assert 0.5 * np.abs(freq - want).sum() < TV_BOUND
    np.testing.assert_allclose(logprobs, np.log(want[tokens]), atol=1e-4)
