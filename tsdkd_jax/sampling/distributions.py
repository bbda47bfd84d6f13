"""Choosing one token per row from logits [B,V]: greedy, temperature, top-k, top-p, all array-valued.

The order is that of transformers' warpers: logits / temperature → top-k → top-p → sample. Every knob is a
per-row array, so new values never recompile; only the static cap on k does (see `k_max`).

- Greedy (temperature 0): argmax of the raw logits; its log-prob is 0 (the sampling distribution is a point
  mass).
- Top-k: `lax.top_k` with a static cap `k_max` (a partial selection, never a full sort of V); the kept set is
  {logit ≥ k-th largest}, so ties at the k-th value are all kept, as in transformers' TopKLogitsWarper.
- Top-p: no sort either. The nucleus is {p_i ≥ τ} where τ is the largest value with mass{p_i ≥ τ} ≥ top_p:
  the most probable tokens whose mass first reaches top_p, including the token that crosses it. τ is found by
  bisection on the float32 bit pattern (monotone for non-negative floats): 31 masked sums over V, after which
  τ is exactly one of the probabilities. Exact up to float32 rounding of those sums (a sorted cumsum rounds
  differently only when the mass lands within ~1e-7 of top_p); ties at τ are all kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

_ONE_BITS = int(np.float32(1.0).view(np.int32))


@struct.dataclass
class SamplingParams:
    """Per-row sampling knobs: temperature [B] f32 (0 = greedy), top_k [B] int32 (0 = off), top_p [B] f32."""

    temperature: jnp.ndarray
    top_k: jnp.ndarray
    top_p: jnp.ndarray


def make_params(batch_size: int, temperature=1.0, top_k=0, top_p=1.0) -> SamplingParams:
    """Broadcast scalars or [B] values to [B] arrays, checking ranges outside jit with errors naming the field.

    The arrays are host NumPy: a jitted caller places them itself, each process from its own copy (every
    process passes the same values), where a `device_put` onto a sharding spanning several processes would
    check them for equality across hosts on every call.
    """
    t = np.full((batch_size,), temperature, np.float32)
    k_raw = np.full((batch_size,), top_k, np.float64)  # checked before the cast to int32 truncates it
    p = np.full((batch_size,), top_p, np.float32)
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"temperature must be finite and >= 0 (0 = greedy), got {temperature}")
    if not np.all(np.isfinite(k_raw)) or np.any(k_raw < 0) or np.any(k_raw != np.floor(k_raw)):
        raise ValueError(f"top_k must be a whole number >= 0 (0 = off), got {top_k}")
    k = k_raw.astype(np.int32)
    if not np.all((p > 0) & (p <= 1)):
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}")
    return SamplingParams(temperature=t, top_k=k, top_p=p)


def top_k_mask(logits_BV, top_k_B, k_max: int):
    """Logits outside each row's top k set to -inf (rows with k = 0 untouched); needs k ≤ k_max."""
    top_BK, _ = jax.lax.top_k(logits_BV, k_max)
    kth_B1 = jnp.take_along_axis(top_BK, jnp.clip(top_k_B - 1, 0, k_max - 1)[:, None], axis=1)
    keep_BV = (top_k_B[:, None] <= 0) | (logits_BV >= kth_B1)
    return jnp.where(keep_BV, logits_BV, -jnp.inf)


def top_p_mask(logits_BV, top_p_B):
    """Logits outside each row's nucleus set to -inf (rows with top_p ≥ 1 untouched); bisection, no sort."""
    probs_BV = jax.nn.softmax(logits_BV, axis=-1)

    def mass_from(bits_B):
        tau_B1 = jax.lax.bitcast_convert_type(bits_B, jnp.float32)[:, None]
        return jnp.sum(jnp.where(probs_BV >= tau_B1, probs_BV, 0.0), axis=-1)

    def bisect(_, lo_hi):
        lo, hi = lo_hi  # invariant: mass_from(lo) >= top_p > mass_from(hi)
        mid = lo + (hi - lo) // 2
        ok = mass_from(mid) >= top_p_B
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    B = logits_BV.shape[0]
    lo = jnp.zeros((B,), jnp.int32)
    hi = jnp.full((B,), _ONE_BITS + 1, jnp.int32)  # τ just above 1: empty set
    lo, _ = jax.lax.fori_loop(0, 31, bisect, (lo, hi))  # 2**31 > _ONE_BITS + 1: the interval closes
    tau_B1 = jax.lax.bitcast_convert_type(lo, jnp.float32)[:, None]
    keep_BV = (top_p_B[:, None] >= 1.0) | (probs_BV >= tau_B1)
    return jnp.where(keep_BV, logits_BV, -jnp.inf)


def sampling_logits(logits_BV, params: SamplingParams, k_max: int):
    """Temperature-scaled, top-k and top-p filtered logits (float32); greedy rows are scaled by 1."""
    # float32: top-p thresholds and log-probs of bf16 logits would be too coarse.
    logits_BV = logits_BV.astype(jnp.float32)
    t_B = jnp.where(params.temperature > 0, params.temperature, 1.0)
    x_BV = logits_BV / t_B[:, None]
    if k_max > 0:
        x_BV = jax.lax.cond(
            jnp.any(params.top_k > 0), lambda x: top_k_mask(x, params.top_k, k_max), lambda x: x, x_BV
        )
    return jax.lax.cond(jnp.any(params.top_p < 1.0), lambda x: top_p_mask(x, params.top_p), lambda x: x, x_BV)


def choose(logits_BV, params: SamplingParams, key, k_max: int, row_ids_B=None):
    """→ (tokens [B] int32, log-probs [B] f32 of those tokens under the sampling distribution).

    Row b's noise comes from fold_in(key, row_ids_B[b]) (default: b), so a row draws the same token whether
    the batch is whole or split over devices (pass the global row ids of the shard).
    """
    greedy_B = params.temperature <= 0
    argmax_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    if row_ids_B is None:
        row_ids_B = jnp.arange(logits_BV.shape[0])

    def sample(logits_BV):
        logp_BV = jax.nn.log_softmax(sampling_logits(logits_BV, params, k_max), axis=-1)
        keys_B = jax.vmap(jax.random.fold_in, (None, 0))(key, row_ids_B)
        gumbel_BV = jax.vmap(lambda k: jax.random.gumbel(k, logits_BV.shape[1:]))(keys_B)
        tok_B = jnp.argmax(logp_BV + gumbel_BV, axis=-1).astype(jnp.int32)  # Gumbel-max: exact sampling
        tok_B = jnp.where(greedy_B, argmax_B, tok_B)
        logp_B = jnp.take_along_axis(logp_BV, tok_B[:, None], axis=1)[:, 0]
        return tok_B, jnp.where(greedy_B, 0.0, logp_B)

    def greedy(logits_BV):
        return argmax_B, jnp.zeros(argmax_B.shape, jnp.float32)

    # All-greedy batches skip the softmax, filters and V Gumbel draws per row.
    return jax.lax.cond(jnp.all(greedy_B), greedy, sample, logits_BV)
