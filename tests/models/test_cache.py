"""Cached decoding (prefill on left-padded prompts, then one token at a time) equals a full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tsdkd_jax.models import Decoder, ModelConfig

BASE = {
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 3,
    "num_heads": 4,
    "num_kv_heads": 2,
    "head_dim": 8,
}
CONFIGS = {
    "qwen_like": ModelConfig(**BASE, qkv_bias=True, rope_theta=1e4),
    "gemma3_like_sliding": ModelConfig(
        **BASE,
        qk_norm=True,
        sandwich_norm=True,
        norm_plus_one=True,
        activation="gelu_tanh",
        embed_scale=32**0.5,
        attn_logit_softcap=5.0,
        final_logit_softcap=3.0,
        query_pre_attn_scalar=16,
        sliding_window=3,
        layer_types=("sliding", "full", "sliding"),
        rope_local_theta=100.0,
        rope_scaling=(("factor", 2.0), ("rope_type", "linear")),
    ),
}


def _randomise_norms(model):
    state = nnx.state(model, nnx.Param)
    for key, var in nnx.to_flat_state(state):
        if "norm" in str(key[-1]):
            var.set_value(var.get_value() + 0.1 * jax.random.normal(jax.random.key(len(key)), var.shape))
    nnx.update(model, state)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_decode_equals_full_forward(name):
    model = Decoder(CONFIGS[name], rngs=nnx.Rngs(0))
    _randomise_norms(model)
    rng = np.random.default_rng(1)
    B, P, N = 3, 6, 5  # prompt length, generated steps; P + N > sliding window
    ids = rng.integers(1, 128, size=(B, P + N)).astype(np.int32)
    prompt_mask = np.ones((B, P), np.int32)
    prompt_mask[1, :2] = 0
    prompt_mask[2, :5] = 0
    # Row 0 skips one decode step (token_valid False): it must not shift later positions.
    step_valid = np.ones((B, N), bool)
    step_valid[0, 2] = False
    full_mask = np.concatenate([prompt_mask, step_valid.astype(np.int32)], axis=1)
    full = np.asarray(model(jnp.asarray(ids), jnp.asarray(full_mask)))

    graphdef, state = nnx.split(model)

    @jax.jit
    def prefill(state, ids, mask):
        m = nnx.merge(graphdef, state)
        return m.prefill(ids, mask, m.init_cache(B, P + N + 2))

    @jax.jit
    def step(state, tok, cache, valid):
        return nnx.merge(graphdef, state).decode_step(tok, cache, valid)

    logits, cache = prefill(state, jnp.asarray(ids[:, :P]), jnp.asarray(prompt_mask))
    assert logits.shape == (B, 128) and cache.k.shape == (3, B, P + N + 2, 2, 8)
    np.testing.assert_allclose(np.asarray(logits), full[:, P - 1], atol=1e-5, rtol=1e-5)
    for t in range(N):
        logits, cache = step(state, jnp.asarray(ids[:, P + t]), cache, jnp.asarray(step_valid[:, t]))
        rows = step_valid[:, t]
        np.testing.assert_allclose(np.asarray(logits)[rows], full[rows, P + t], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(cache.next_position), full_mask.sum(1))
    assert int(cache.index) == P + N


def test_hidden_states_and_unembed_compose():
    model = Decoder(CONFIGS["gemma3_like_sliding"], rngs=nnx.Rngs(0))
    ids = jnp.arange(10, dtype=jnp.int32).reshape(2, 5)
    hidden = model.hidden_states(ids)
    assert hidden.shape == (2, 5, 32)
    np.testing.assert_allclose(np.asarray(model.unembed(hidden)), np.asarray(model(ids)), atol=1e-6)


def test_remat_matches_and_differentiates():
    config = CONFIGS["qwen_like"]
    ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)

    def loss_and_grad(remat):
        graphdef, state = nnx.split(Decoder(config, rngs=nnx.Rngs(0), remat=remat))
        fn = jax.jit(jax.value_and_grad(lambda st: nnx.merge(graphdef, st)(ids).mean()))
        loss, grads = fn(state)
        return loss, np.asarray(grads["layers"]["q"].get_value())

    (l_plain, g_plain), (l_remat, g_remat) = loss_and_grad(False), loss_and_grad(True)
    np.testing.assert_allclose(l_remat, l_plain, atol=1e-7)
    np.testing.assert_allclose(g_remat, g_plain, atol=1e-7)
