"""Rotary position embeddings: per-layer inverse frequencies (default, linear, llama3) and application."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from tsdkd_jax.models.config import ModelConfig


def inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> np.ndarray:
    """Inverse frequencies [H/2] in float32, matching transformers' rope init functions."""
    freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    freq = freq.astype(np.float32)
    if not scaling:
        return freq
    factor = scaling["factor"]
    if scaling["rope_type"] == "linear":
        return (freq / factor).astype(np.float32)
    # llama3: keep high frequencies, divide low ones by factor, interpolate in between.
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / freq
    scaled = np.where(wavelen > old_len / low, freq / factor, freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def layer_inv_freqs(config: ModelConfig) -> np.ndarray:
    """[L, H/2]: sliding layers use the local base (Gemma 3, unscaled), full layers the global base + scaling."""
    full = inv_freq(config.head_dim, config.rope_theta, config.rope_scaling_dict)
    local = inv_freq(config.head_dim, config.rope_local_theta) if config.rope_local_theta else full
    return np.stack([local if kind == "sliding" else full for kind in config.layer_kinds])


def apply_rope(x_BTNH: jnp.ndarray, positions_BT: jnp.ndarray, inv_freq_F: jnp.ndarray) -> jnp.ndarray:
    """Rotate-half RoPE (HF convention) computed in float32, returned in x's dtype."""
    angles_BTF = positions_BT.astype(jnp.float32)[..., None] * inv_freq_F
    cos = jnp.cos(jnp.concatenate([angles_BTF, angles_BTF], -1))[:, :, None, :]
    sin = jnp.sin(jnp.concatenate([angles_BTF, angles_BTF], -1))[:, :, None, :]
    x = x_BTNH.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], -1)
    return (x * cos + rotated * sin).astype(x_BTNH.dtype)
