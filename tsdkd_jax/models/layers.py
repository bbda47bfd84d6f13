"""Pure per-layer math for the decoder: RMSNorm, attention, MLP, one transformer block.

Axis alphabet: B batch, T query length, S key slots, D model, N query heads, K kv heads, G = N/K query heads
per kv head, H head dim, F ffw hidden, V vocab, L layers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tsdkd_jax.models.config import ModelConfig
from tsdkd_jax.models.rope import apply_rope

_MASKED = float(jnp.finfo(jnp.float32).min)

# Each weight's einsum: input axes, weight axes -> output axes. A weight's axes are its input axes (shared with
# x) then its output axes; LoRA adapters (models/lora.py) are built from this split.
PROJECTIONS = {
    "q": "BTD,DNH->BTNH",
    "k": "BTD,DKH->BTKH",
    "v": "BTD,DKH->BTKH",
    "o": "BTNH,NHD->BTD",
    "gate": "BTD,DF->BTF",
    "up": "BTD,DF->BTF",
    "down": "BTF,FD->BTD",
}


def weight_axes(name: str) -> tuple[str, str]:
    """(input axes, output axes) of projection `name`'s weight, e.g. ("D", "NH") for q."""
    x_axes, w_axes = PROJECTIONS[name].split("->")[0].split(",")
    return "".join(a for a in w_axes if a in x_axes), "".join(a for a in w_axes if a not in x_axes)


def project(p: dict, name: str, x):
    """x · p[name] (in x's dtype), plus the low-rank update x · A · B when p holds an adapter for `name`
    (p["lora"][name] = {"a": [*in, R] already scaled by α/r, "b": [R, *out]})."""
    eq = PROJECTIONS[name]
    y = jnp.einsum(eq, x, p[name].astype(x.dtype))
    adapter = p.get("lora", {}).get(name)
    if adapter is None:
        return y
    x_axes, out_axes = eq.split(",")[0], eq.split("->")[1]
    in_axes, w_out = weight_axes(name)
    lead = "".join(a for a in x_axes if a not in in_axes)  # R (rank) is no other axis' letter
    h = jnp.einsum(f"{x_axes},{in_axes}R->{lead}R", x, adapter["a"].astype(x.dtype))
    return y + jnp.einsum(f"{lead}R,R{w_out}->{out_axes}", h, adapter["b"].astype(x.dtype))


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


def _scores_to_probs(logits, mask, scale: float, cap: float | None):
    """Scaled, soft-capped, masked softmax in float32 (`mask` broadcasts against `logits`)."""
    return jax.nn.softmax(jnp.where(mask, softcap(logits * scale, cap), _MASKED), axis=-1)


def _grouped_rows_attention(config: ModelConfig, q_BTNH, k_BSKH, v_BSKH, mask_BTS):
    """Attention without a cache, each KV head's G query heads stacked as G·T rows of one [G·T, S] score
    matrix: heads-major operands make both matmuls plain batched matmuls over (B, K) whose scores come out in
    the softmax's layout (the [B,T,K,G,H] operand made XLA transpose every [.., T, S] score tensor, the
    largest cost of a short-sequence CPU step). Only q, k, v and the output are transposed: O(T·H), not O(T·S).
    """
    dtype = q_BTNH.dtype
    B, T, N, H = q_BTNH.shape
    K = k_BSKH.shape[2]
    G = N // K
    q_BKRH = q_BTNH.reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, H)
    k_BKSH = k_BSKH.astype(dtype).transpose(0, 2, 1, 3)
    v_BKSH = v_BSKH.astype(dtype).transpose(0, 2, 1, 3)
    if config.attn_logit_softcap is None:
        out_BKRH = rows_attention(config.attn_scale, q_BKRH, k_BKSH, v_BKSH, mask_BTS)
    else:  # the soft-cap's derivative is left to AD
        out_BKRH = _rows_attention_fwd(
            config.attn_scale, config.attn_logit_softcap, q_BKRH, k_BKSH, v_BKSH, mask_BTS
        )[0]
    return out_BKRH.reshape(B, K, G, T, H).transpose(0, 3, 1, 2, 4).reshape(B, T, N, H)


def _rows_mask(mask_BTS, rows: int):
    """[B, 1, R, S] mask of the stacked rows (row g·T + t is query t's), from the [B, T, S] mask."""
    return jnp.tile(mask_BTS, (1, rows // mask_BTS.shape[1], 1))[:, None]


def _rows_attention_fwd(scale, cap, q_BKRH, k_BKSH, v_BKSH, mask_BTS):
    """(output, saved for the backward) of softmax(mask(scale · q·kᵀ))·v over grouped rows."""
    logits_BKRS = jnp.einsum("BKRH,BKSH->BKRS", q_BKRH, k_BKSH, preferred_element_type=jnp.float32)
    probs_BKRS = _scores_to_probs(logits_BKRS, _rows_mask(mask_BTS, q_BKRH.shape[2]), scale, cap)
    out_BKRH = jnp.einsum("BKRS,BKSH->BKRH", probs_BKRS.astype(v_BKSH.dtype), v_BKSH)
    return out_BKRH, (q_BKRH, k_BKSH, v_BKSH, mask_BTS, probs_BKRS, out_BKRH)  # the [B, T, S] mask, not G× it


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def rows_attention(scale: float, q_BKRH, k_BKSH, v_BKSH, mask_BTS):
    """Grouped-rows attention (no soft-cap) with a hand-written backward: every backward matmul is
    [rows, inner] x [inner, cols] up to small transposes of q and dO (dKᵀ = qᵀ·dS, dVᵀ = dOᵀ·P), and the
    softmax's row term is Σ_h dO·O instead of Σ_s P·dP, one pass fewer over the [R, S] scores. Fully masked
    rows (padding queries) pass no gradient to q and k, as under AD of the masked softmax."""
    return _rows_attention_fwd(scale, None, q_BKRH, k_BKSH, v_BKSH, mask_BTS)[0]


def _rows_attention_vjp_fwd(scale, q_BKRH, k_BKSH, v_BKSH, mask_BTS):
    return _rows_attention_fwd(scale, None, q_BKRH, k_BKSH, v_BKSH, mask_BTS)


def _rows_attention_vjp_bwd(scale, saved, dout_BKRH):
    q_BKRH, k_BKSH, v_BKSH, mask_BTS, probs_BKRS, out_BKRH = saved
    dtype = q_BKRH.dtype
    dout_BKRH = dout_BKRH.astype(dtype)
    dprobs_BKRS = jnp.einsum("BKRH,BKSH->BKRS", dout_BKRH, v_BKSH, preferred_element_type=jnp.float32)
    row_BKR1 = jnp.sum(dout_BKRH.astype(jnp.float32) * out_BKRH.astype(jnp.float32), -1, keepdims=True)
    mask_B1RS = _rows_mask(mask_BTS, q_BKRH.shape[2])
    dlogits_BKRS = jnp.where(mask_B1RS, probs_BKRS * (dprobs_BKRS - row_BKR1) * scale, 0.0).astype(dtype)
    dq_BKRH = jnp.einsum("BKRS,BKSH->BKRH", dlogits_BKRS, k_BKSH)
    dk_BKHS = jnp.einsum("BKHR,BKRS->BKHS", q_BKRH.transpose(0, 1, 3, 2), dlogits_BKRS)
    dv_BKHS = jnp.einsum("BKHR,BKRS->BKHS", dout_BKRH.transpose(0, 1, 3, 2), probs_BKRS.astype(dtype))
    return dq_BKRH, dk_BKHS.transpose(0, 1, 3, 2), dv_BKHS.transpose(0, 1, 3, 2), None


rows_attention.defvjp(_rows_attention_vjp_fwd, _rows_attention_vjp_bwd)


def _cached_attention(config: ModelConfig, q_BTNH, k_BSKH, v_BSKH, mask_BTS):
    """Attention against a [B, S, K, H] cache, read in its own layout (no per-step copy of the cache)."""
    dtype = q_BTNH.dtype
    B, T, N, H = q_BTNH.shape
    K = k_BSKH.shape[2]
    q_BTKGH = q_BTNH.reshape(B, T, K, N // K, H)
    logits_BKGTS = jnp.einsum(
        "BTKGH,BSKH->BKGTS", q_BTKGH, k_BSKH.astype(dtype), preferred_element_type=jnp.float32
    )
    mask_B11TS = mask_BTS[:, None, None, :, :]
    probs_BKGTS = _scores_to_probs(logits_BKGTS, mask_B11TS, config.attn_scale, config.attn_logit_softcap)
    out_BTKGH = jnp.einsum("BKGTS,BSKH->BTKGH", probs_BKGTS.astype(dtype), v_BSKH.astype(dtype))
    return out_BTKGH.reshape(B, T, N, H)


def attention(config: ModelConfig, p: dict, x_BTD, positions_BT, inv_freq_F, mask_BTS, kv_cache, write_index):
    """Self-attention; with `kv_cache` = (k_BSKH, v_BSKH) the new keys are written at `write_index` first."""
    dtype = x_BTD.dtype
    q_BTNH, k_BTKH, v_BTKH = (project(p, name, x_BTD) for name in ("q", "k", "v"))
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
        return project(p, "o", _grouped_rows_attention(config, q_BTNH, k_BTKH, v_BTKH, mask_BTS)), None
    k_cache, v_cache = kv_cache
    at = (0, write_index, 0, 0)
    k_BSKH = jax.lax.dynamic_update_slice(k_cache, k_BTKH.astype(k_cache.dtype), at)
    v_BSKH = jax.lax.dynamic_update_slice(v_cache, v_BTKH.astype(v_cache.dtype), at)
    out_BTNH = _cached_attention(config, q_BTNH, k_BSKH, v_BSKH, mask_BTS)
    return project(p, "o", out_BTNH), (k_BSKH, v_BSKH)


# MLPs at most this wide compute gate and up as one [D, 2F] matmul (the two weights concatenated each step):
# at the testbed's widths (96 → 256) one larger matmul and one weight-gradient transpose instead of two take
# 1.15x less time for the whole SFT step on CPU (benchmarks/RESULTS.md); wide models keep two matmuls (no
# per-step copy of large weights, no concatenation across tensor-parallel shards).
FUSED_GATE_UP_MAX = 1024


def _gate_up(config: ModelConfig, p: dict, x_BTD):
    lora = p.get("lora", {})
    if config.intermediate_size > FUSED_GATE_UP_MAX or "gate" in lora or "up" in lora:
        return project(p, "gate", x_BTD), project(p, "up", x_BTD)
    w_DF2 = jnp.concatenate([p["gate"], p["up"]], axis=1).astype(x_BTD.dtype)
    gate_up_BTF2 = jnp.einsum("BTD,DF->BTF", x_BTD, w_DF2)
    return jnp.split(gate_up_BTF2, 2, axis=-1)


def mlp(config: ModelConfig, p: dict, x_BTD):
    gate_BTF, up_BTF = _gate_up(config, p, x_BTD)
    act = jax.nn.silu if config.activation == "silu" else lambda g: jax.nn.gelu(g, approximate=True)
    return project(p, "down", act(gate_BTF) * up_BTF)


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
