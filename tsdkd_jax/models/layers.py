"""Pure per-layer math for the decoder: RMSNorm, attention, MLP, one transformer block.

Axis alphabet: B batch, T query length, S key slots, D model, N query heads, K kv heads, G = N/K query heads
per kv head, H head dim, F ffw hidden, V vocab, L layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tsdkd_jax.models.config import ModelConfig
from tsdkd_jax.models.rope import apply_rope

_MASKED = float(jnp.finfo(jnp.float32).min)


def rms_norm(x: jnp.ndarray, scale: jnp.ndarray, eps: float, plus_one: bool) -> jnp.ndarray:
    """RMSNorm over the last axis in float32 (variance of bf16 activations is too coarse), cast back."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    w = scale.astype(jnp.float32)
    return (normed * (1.0 + w if plus_one else w)).astype(x.dtype)


def softcap(x: jnp.ndarray, cap: float | None) -> jnp.ndarray:
    return x if cap is None else jnp.tanh(x / cap) * cap


def attention_masks(q_pos_BT, q_slot_BT, k_pos_BS, k_valid_BS, window: int | None):
    """(full, sliding) boolean masks [B,T,S]: causal by slot order, valid keys, window by position distance."""
    slots_S = jnp.arange(k_pos_BS.shape[1])
    full_BTS = k_valid_BS[:, None, :] & (slots_S[None, None, :] <= q_slot_BT[:, :, None])
    if window is None:
        return full_BTS, full_BTS
    near_BTS = (q_pos_BT[:, :, None] - k_pos_BS[:, None, :]) < window
    return full_BTS, full_BTS & near_BTS


def attention(config: ModelConfig, p: dict, x_BTD, positions_BT, inv_freq_F, mask_BTS, kv_cache, write_index):
    """Self-attention; with `kv_cache` = (k_BSKH, v_BSKH) the new keys are written at `write_index` first."""
    dtype = x_BTD.dtype
    q_BTNH = jnp.einsum("BTD,DNH->BTNH", x_BTD, p["q"].astype(dtype))
    k_BTKH = jnp.einsum("BTD,DKH->BTKH", x_BTD, p["k"].astype(dtype))
    v_BTKH = jnp.einsum("BTD,DKH->BTKH", x_BTD, p["v"].astype(dtype))
    if config.qkv_bias:
        q_BTNH += p["q_bias"].astype(dtype)
        k_BTKH += p["k_bias"].astype(dtype)
        v_BTKH += p["v_bias"].astype(dtype)
    if config.qk_norm:
        q_BTNH = rms_norm(q_BTNH, p["q_norm"], config.rms_norm_eps, config.norm_plus_one)
        k_BTKH = rms_norm(k_BTKH, p["k_norm"], config.rms_norm_eps, config.norm_plus_one)
    q_BTNH = apply_rope(q_BTNH, positions_BT, inv_freq_F)
    k_BTKH = apply_rope(k_BTKH, positions_BT, inv_freq_F)
    if kv_cache is None:
        k_BSKH, v_BSKH = k_BTKH, v_BTKH
    else:
        k_cache, v_cache = kv_cache
        at = (0, write_index, 0, 0)
        k_BSKH = jax.lax.dynamic_update_slice(k_cache, k_BTKH.astype(k_cache.dtype), at)
        v_BSKH = jax.lax.dynamic_update_slice(v_cache, v_BTKH.astype(v_cache.dtype), at)
    B, T, N, H = q_BTNH.shape
    K = k_BSKH.shape[2]
    q_BTKGH = q_BTNH.reshape(B, T, K, N // K, H)
    # Scores and softmax in float32: bf16 logits lose the small differences that decide attention.
    logits_BKGTS = jnp.einsum(
        "BTKGH,BSKH->BKGTS", q_BTKGH, k_BSKH.astype(dtype), preferred_element_type=jnp.float32
    )
    logits_BKGTS = softcap(logits_BKGTS * config.attn_scale, config.attn_logit_softcap)
    logits_BKGTS = jnp.where(mask_BTS[:, None, None, :, :], logits_BKGTS, _MASKED)
    probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1).astype(dtype)
    out_BTKGH = jnp.einsum("BKGTS,BSKH->BTKGH", probs_BKGTS, v_BSKH.astype(dtype))
    out_BTD = jnp.einsum("BTNH,NHD->BTD", out_BTKGH.reshape(B, T, N, H), p["o"].astype(dtype))
    return out_BTD, (None if kv_cache is None else (k_BSKH, v_BSKH))


def mlp(config: ModelConfig, p: dict, x_BTD):
    dtype = x_BTD.dtype
    gate_BTF = jnp.einsum("BTD,DF->BTF", x_BTD, p["gate"].astype(dtype))
    up_BTF = jnp.einsum("BTD,DF->BTF", x_BTD, p["up"].astype(dtype))
    act = jax.nn.silu if config.activation == "silu" else lambda g: jax.nn.gelu(g, approximate=True)
    return jnp.einsum("BTF,FD->BTD", act(gate_BTF) * up_BTF, p["down"].astype(dtype))


def block(config: ModelConfig, p: dict, x_BTD, positions_BT, inv_freq_F, mask_BTS, kv_cache, write_index):
    """One pre-norm transformer block (with Gemma's post-norms when `sandwich_norm`)."""

    def norm(name, h):
        return rms_norm(h, p[name], config.rms_norm_eps, config.norm_plus_one)

    attn_BTD, kv_cache = attention(
        config, p, norm("attn_pre_norm", x_BTD), positions_BT, inv_freq_F, mask_BTS, kv_cache, write_index
    )
    if config.sandwich_norm:
        attn_BTD = norm("attn_post_norm", attn_BTD)
    x_BTD = x_BTD + attn_BTD
    mlp_BTD = mlp(config, p, norm("mlp_pre_norm", x_BTD))
    if config.sandwich_norm:
        mlp_BTD = norm("mlp_post_norm", mlp_BTD)
    return x_BTD + mlp_BTD, kv_cache
