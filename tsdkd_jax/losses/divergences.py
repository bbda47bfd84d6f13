"""Per-token divergences between student and teacher distributions, from logits, over the last axis.

All math is at least float32 (float64 stays float64, for finite-difference tests): bf16 log-probabilities
lose the small probabilities that KL terms are made of.
Every function is safe with -inf logits (vocabulary padding): a term whose weight probability is 0
contributes exactly 0 and no NaN reaches values or gradients (the "double where" pattern).
"""

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def as_f32(x) -> Array:
    """Cast to at least float32: bf16 log-probabilities lose the small probabilities KL terms are made of."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def log_softmax(logits: Array) -> Array:
    """Float32 log-softmax over the last axis (-inf logits stay -inf)."""
    return jax.nn.log_softmax(as_f32(logits), axis=-1)


def _plogp_diff(logp: Array, logq: Array) -> Array:
    """Σ p (log p − log q) with p = exp(logp); terms with p = 0 are exactly 0, also in the gradient."""
    p = jnp.exp(logp)
    live = p > 0
    diff = jnp.where(live, logp - jnp.where(live, logq, 0.0), 0.0)
    return jnp.sum(p * diff, axis=-1)


def _log_mix(loga: Array, logb: Array, wa: float) -> Array:
    """log(wa·a + (1−wa)·b) from log-probabilities: a two-term logsumexp that is NaN-free at -inf.

    jnp.logaddexp's JVP evaluates exp(x − out) = exp(−inf + inf) = NaN when both inputs are -inf (an id that
    neither distribution can emit), which poisons gradients even where the term is masked out; here such an
    id gives -inf with zero derivative, and a single -inf input has derivative exactly 0.
    """
    x = loga + math.log(wa) if wa > 0 else jnp.full_like(loga, -jnp.inf)
    y = logb + math.log(1.0 - wa) if wa < 1 else jnp.full_like(logb, -jnp.inf)
    hi = jnp.maximum(x, y)
    lo = jnp.minimum(x, y)
    finite = hi > -jnp.inf
    gap = jnp.where(finite, lo - jnp.where(finite, hi, 0.0), -jnp.inf)
    return jnp.where(finite, hi + jnp.log1p(jnp.exp(gap)), -jnp.inf)


def entropy_from_logp(logp: Array) -> Array:
    """H = −Σ p log p from log-probabilities."""
    p = jnp.exp(logp)
    return -jnp.sum(p * jnp.where(p > 0, logp, 0.0), axis=-1)


def kl_from_logp(logp: Array, logq: Array) -> Array:
    """KL(p‖q) from log-probabilities."""
    return _plogp_diff(logp, logq)


def gjsd_from_logp(logp_s: Array, logp_t: Array, beta: float) -> Array:
    """β·KL(p_T‖M) + (1−β)·KL(p_S‖M), M = β p_T + (1−β) p_S; β=0 → KL(p_T‖p_S), β=1 → KL(p_S‖p_T)."""
    beta = float(beta)
    if beta == 0.0:
        return _plogp_diff(logp_t, logp_s)
    if beta == 1.0:
        return _plogp_diff(logp_s, logp_t)
    log_m = _log_mix(logp_t, logp_s, beta)
    return beta * _plogp_diff(logp_t, log_m) + (1.0 - beta) * _plogp_diff(logp_s, log_m)


def skew_kl_from_logp(logp_s: Array, logp_t: Array, alpha: float) -> Array:
    """KL(p_T ‖ α p_T + (1−α) p_S) (DistiLLM skew KL)."""
    return _plogp_diff(logp_t, _log_mix(logp_t, logp_s, float(alpha)))


def skew_reverse_kl_from_logp(logp_s: Array, logp_t: Array, alpha: float) -> Array:
    """KL(p_S ‖ (1−α) p_T + α p_S) (DistiLLM skew reverse KL)."""
    return _plogp_diff(logp_s, _log_mix(logp_t, logp_s, 1.0 - float(alpha)))


def entropy(logits: Array) -> Array:
    """Entropy of softmax(logits), shape logits.shape[:-1]."""
    return entropy_from_logp(log_softmax(logits))


def forward_kl(student_logits: Array, teacher_logits: Array) -> Array:
    """KL(p_T‖p_S) per token."""
    return _plogp_diff(log_softmax(teacher_logits), log_softmax(student_logits))


def reverse_kl(student_logits: Array, teacher_logits: Array) -> Array:
    """KL(p_S‖p_T) per token."""
    return _plogp_diff(log_softmax(student_logits), log_softmax(teacher_logits))


def generalized_jsd(student_logits: Array, teacher_logits: Array, beta: float) -> Array:
    """Generalized JSD(β) per token, TRL/GKD convention (β = 0 forward KL, β = 1 reverse KL)."""
    return gjsd_from_logp(log_softmax(student_logits), log_softmax(teacher_logits), beta)


def skew_kl(student_logits: Array, teacher_logits: Array, alpha: float) -> Array:
    """DistiLLM skew KL per token: KL(p_T ‖ α p_T + (1−α) p_S)."""
    return skew_kl_from_logp(log_softmax(student_logits), log_softmax(teacher_logits), alpha)


def skew_reverse_kl(student_logits: Array, teacher_logits: Array, alpha: float) -> Array:
    """DistiLLM skew reverse KL per token: KL(p_S ‖ (1−α) p_T + α p_S)."""
    return skew_reverse_kl_from_logp(log_softmax(student_logits), log_softmax(teacher_logits), alpha)


def cross_entropy(logits: Array, labels: Array) -> Array:
    """−log p(label) per token; labels outside [0, V) (e.g. -100) give 0 and should be masked out."""
    logp = log_softmax(logits)
    labels = jnp.asarray(labels, jnp.int32)
    valid = (labels >= 0) & (labels < logp.shape[-1])
    safe = jnp.where(valid, labels, 0)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return jnp.where(valid, nll, 0.0)


def masked_mean(values: Array, mask: Array) -> Array:
    """Σ v·m / max(Σ m, 1); masked-out entries never contribute, even if they are inf or NaN."""
    mask = jnp.asarray(mask, jnp.float32)
    live = mask > 0
    total = jnp.sum(jnp.where(live, as_f32(values) * jnp.where(live, mask, 0.0), 0.0))
    return total / jnp.maximum(jnp.sum(mask), 1.0)


DIVERGENCES = ("gjsd", "fkl", "rkl", "skl", "srkl")


def divergence_from_logp(name: str, logp_s: Array, logp_t: Array, *, beta: float, skew_alpha: float) -> Array:
    """The direct term's per-token divergence selected by name (see DIVERGENCES)."""
    if name == "gjsd":
        return gjsd_from_logp(logp_s, logp_t, beta)
    if name == "fkl":
        return _plogp_diff(logp_t, logp_s)
    if name == "rkl":
        return _plogp_diff(logp_s, logp_t)
    if name == "skl":
        return skew_kl_from_logp(logp_s, logp_t, skew_alpha)
    if name == "srkl":
        return skew_reverse_kl_from_logp(logp_s, logp_t, skew_alpha)
    raise ValueError(f"divergence must be one of {DIVERGENCES}, got {name!r}")
