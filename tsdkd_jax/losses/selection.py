"""TSD-KD's token selections (gate, opener, entropy-minimisation set) and the top-k ranking loss.

Selections are functions of per-token entropies [B, T] and carry no gradient: inputs are stop-gradiented
and outputs are float 0/1 masks (or the stop-gradient gate).
"""

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from tsdkd_jax.losses.divergences import as_f32

Array = jax.Array
TOPK_IDS = "tsdkd_topk_ids"


def entropy_gate(h_student: Array, h_teacher: Array, tau: float) -> Array:
    """stop_gradient(sigmoid((H_S − H_T) / τ)): large where the teacher is relatively more confident."""
    h_s = jax.lax.stop_gradient(as_f32(h_student))
    h_t = jax.lax.stop_gradient(as_f32(h_teacher))
    return jax.nn.sigmoid((h_s - h_t) / tau)


def opener_mask(h_student: Array, mask: Array, frac: float) -> Array:
    """Paper opener, per sequence: masked positions t ≤ m*, m* = first j with cum. entropy ≥ frac·total.

    The total is the last cumulative sum (not a separate sum) so that frac = 1 always finds its position
    despite float rounding. A row whose total is 0 (or that is all padding) has an empty opener.
    """
    m = jnp.asarray(mask, jnp.float32)
    h = jax.lax.stop_gradient(as_f32(h_student))
    cum = jnp.cumsum(jnp.where(m > 0, h, 0.0), axis=-1)
    total = cum[..., -1:]
    end = jnp.argmax(cum >= frac * total, axis=-1)
    in_prefix = jnp.arange(m.shape[-1]) <= end[..., None]
    return jnp.where(in_prefix & (total > 0) & (m > 0), 1.0, 0.0)


def masked_quantile(values: Array, mask: Array, level: float) -> Array:
    """Linear-interpolation quantile (numpy's default) of each row's masked values; +inf for empty rows.

    The fractional position level·(n−1) is computed in float32 and nudged down by a few ulps of n: when the
    exact position is an integer L, the result is then at most values[L] (never above it, which would drop
    that token from a `≥ q` selection); for a fractional position the `≥ q` set is unchanged.
    """
    m = jnp.asarray(mask, jnp.float32) > 0
    v = jax.lax.stop_gradient(as_f32(values))
    srt = jnp.sort(jnp.where(m, v, jnp.inf), axis=-1)
    n = jnp.sum(m, axis=-1).astype(jnp.float32)
    lo, hi, w = quantile_position(n, level)
    v_lo = jnp.take_along_axis(srt, lo.astype(jnp.int32)[..., None], axis=-1)[..., 0]
    v_hi = jnp.take_along_axis(srt, hi.astype(jnp.int32)[..., None], axis=-1)[..., 0]
    q = v_lo + w * (v_hi - v_lo)
    return jnp.where(n > 0, jnp.where(w > 0, q, v_lo), jnp.inf)


def quantile_position(n: Array, level: float) -> tuple[Array, Array, Array]:
    """(lo, hi, w) of masked_quantile over n sorted values: it reads sorted[lo] and sorted[hi], weight w."""
    last = jnp.maximum(n - 1.0, 0.0)
    pos = jnp.maximum(level * last - (4e-7 * last + 1e-6), 0.0)
    lo = jnp.minimum(jnp.floor(pos), last)
    hi = jnp.minimum(lo + 1.0, last)
    return lo, hi, pos - lo


def em_count_without_ties(mask: Array, frac: float) -> Array:
    """Σ over rows of |em_mask| when no two of a row's entropies tie at its quantile (n − hi, or n − lo
    when the position is whole): known from the mask alone. The fused loss checks it against the real set."""
    n = jnp.sum(jnp.asarray(mask, jnp.float32) > 0, axis=-1).astype(jnp.float32)
    lo, hi, w = quantile_position(n, 1.0 - frac)
    return jnp.sum(jnp.where(n > 0, n - jnp.where(w > 0, hi, lo), 0.0))


def em_mask(h_student: Array, mask: Array, frac: float) -> Array:
    """Paper EM set, per sequence: masked tokens with H_S ≥ that row's (1 − frac) quantile."""
    m = jnp.asarray(mask, jnp.float32) > 0
    h = jax.lax.stop_gradient(as_f32(h_student))
    q = masked_quantile(h, m, 1.0 - frac)
    return jnp.where(m & (h >= q[..., None]), 1.0, 0.0)


def official_em_mask(h_student: Array, mask: Array, thr: float) -> Array:
    """Released-code EM set: every [B, T] position (padding too) with H_S ≥ the thr-quantile of masked H_S."""
    h = jax.lax.stop_gradient(as_f32(h_student))
    q = masked_quantile(h.reshape(1, -1), jnp.asarray(mask).reshape(1, -1), thr)[0]
    return jnp.where(h >= q, 1.0, 0.0)


def official_opener_len(h_student: Array, mask: Array, thr: float) -> Array:
    """Released-code d: first 0-based index where the batch-flattened normalised masked entropies' cumsum ≥ thr.

    The masked entropies are concatenated row-major, divided by their total, cumulatively summed; d counts
    masked tokens before the first crossing (0 when none crosses, e.g. total 0, as torch's argmax does).
    """
    m = jnp.asarray(mask, jnp.float32).reshape(-1) > 0
    h = jax.lax.stop_gradient(as_f32(h_student)).reshape(-1)
    h = jnp.where(m, h, 0.0)
    cum = jnp.cumsum(h / jnp.sum(h))
    hit = m & (cum >= thr)
    first = jnp.argmax(hit)
    rank = jnp.cumsum(m.astype(jnp.int32)) - 1
    return jnp.where(jnp.any(hit), rank[first], 0)


def official_opener_mask(h_student: Array, mask: Array, thr: float) -> Array:
    """Released-code opener: positions [0, d) of every row (d clamped to T), times the mask."""
    d = official_opener_len(h_student, mask, thr)
    t = jnp.arange(jnp.shape(mask)[-1])
    return jnp.where((t < d) & (jnp.asarray(mask) > 0), 1.0, 0.0)


def teacher_ordered_topk(student_logits: Array, teacher_logits: Array, k: int) -> Array:
    """Student logits of the student's top-k ids (ids chosen without gradient), sorted by teacher logit desc."""
    z = as_f32(student_logits)
    u = as_f32(teacher_logits)
    _, ids = jax.lax.top_k(jax.lax.stop_gradient(z), k)
    ids = checkpoint_name(ids, TOPK_IDS)  # the chunked loss saves these instead of redoing a top-k over V
    s = jnp.take_along_axis(z, ids, axis=-1)
    t = jax.lax.stop_gradient(jnp.take_along_axis(u, ids, axis=-1))
    order = jnp.argsort(-t, axis=-1, stable=True)
    return jnp.take_along_axis(s, order, axis=-1)


def _pl_nll(s: Array, suffix: bool) -> Array:
    """−Σ_j [s_j − logsumexp(s_l over l ≥ j (suffix) or l ≤ j (prefix))] for s in ranked order."""
    k = s.shape[-1]
    j = jnp.arange(k)
    keep = (j[None, :] >= j[:, None]) if suffix else (j[None, :] <= j[:, None])
    lse = jax.nn.logsumexp(jnp.broadcast_to(s[..., None, :], s.shape + (k,)), axis=-1, where=keep)
    return -jnp.sum(s - lse, axis=-1)


def ranked_pl_nll(ranked: Array) -> Array:
    """Paper ranking loss on logits already in the teacher's order [..., k] (plackett_luce_nll's last step)."""
    return _pl_nll(ranked, suffix=True)


def plackett_luce_nll(student_logits: Array, teacher_logits: Array, k: int) -> Array:
    """Paper ranking loss: Plackett–Luce NLL of the teacher's order of the student's top-k (suffix sums)."""
    return _pl_nll(teacher_ordered_topk(student_logits, teacher_logits, k), suffix=True)


def official_rank_nll(student_logits: Array, teacher_logits: Array, k: int) -> Array:
    """Released-code ranking loss: mean-centred, prefix logcumsumexp (PL likelihood of the reversed order)."""
    s = teacher_ordered_topk(student_logits, teacher_logits, k)
    s = s - jnp.mean(s, axis=-1, keepdims=True)
    return _pl_nll(s, suffix=False)
