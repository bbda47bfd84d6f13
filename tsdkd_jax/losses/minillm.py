"""MiniLLM (Gu et al., ICLR 2024): reverse KL(q_θ‖p) minimised by policy gradient on sampled responses.

Responses y are sampled from the teacher-mixed distribution p̃ = α·p + (1 − α)·q_θ (sampling/mixed.py). With
r_t = log p(y_t|y<t) − log q_θ(y_t|y<t) the sequence reverse KL's gradient splits into (paper §2.2):

  single-step  Σ_t w_t ∇ KL(q_θ(·|y<t) ‖ p(·|y<t))   the exact per-step reverse KL, differentiated directly
  long-term   −Σ_t w_t A_t ∇ log q_θ(y_t|y<t)        A_t = R_{t+1}: the return from t + 1 on

with the per-token importance weight w_t = q_θ(y_t)/p̃(y_t) of the mixed sampling (the paper's per-token
approximation of the sequence ratio). Length normalisation divides R_{t+1} = Σ_{t'>t} r_t' by the number of
tokens after t (0 after the last token). The long-term term is PPO's clipped surrogate on ρ_t = q_θ/p̃:
max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε)), whose gradient where unclipped is −A_t w_t ∇ log q_θ(y_t) (one
update per sample, so the PPO ratio to the sampling policy is w_t itself). Each term is a mean over the
response tokens; the step adds them (weights 1). This follows the paper's equations; the released code
(microsoft/LMOps minillm/) weights the single-step term by 1, includes r_t in its normalised return, whitens
the advantages and runs several PPO epochs per sample batch.

Split like the KD losses: `token_stats` per token from logits (chunked by the step), `sums` over whole
responses [B, N] (the returns need the full sequence, so micro-batches split rows, never time).
"""

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from tsdkd_jax.losses import divergences as dv
from tsdkd_jax.losses import terms

Array = jax.Array
TERMS = ("loss/single", "loss/long")


@dataclasses.dataclass(frozen=True)
class MiniLLMConfig:
    """MiniLLM's hyper-parameters (Python numbers: they are static in the compiled step)."""

    mix_alpha: float = 0.2  # α of the teacher-mixed sampling (0: the student alone)
    clip_eps: float = 0.2  # ε of the clipped surrogate on ρ_t = q_θ(y_t)/p̃(y_t)
    length_norm: bool = True  # A_t = mean of the rewards after t (else their sum)
    # The step's selection pre-pass and the pair check read these of every KD loss: MiniLLM has neither.
    use_em: ClassVar[bool] = False
    use_indirect: ClassVar[bool] = False

    def __post_init__(self):
        if not (isinstance(self.mix_alpha, int | float) and 0.0 <= self.mix_alpha < 1.0):
            raise ValueError(f"loss.minillm.mix_alpha must be in [0, 1), got {self.mix_alpha!r}")
        if not (isinstance(self.clip_eps, int | float) and 0.0 < self.clip_eps < math.inf):
            raise ValueError(f"loss.minillm.clip_eps must be > 0 and finite, got {self.clip_eps!r}")

    def term_weights(self) -> dict[str, float]:
        """{term: weight} (terms.term_weights asks a loss config for its own when it has them)."""
        return {"loss/single": 1.0, "loss/long": 1.0}


def token_stats(student_logits: Array, teacher_logits: Array, labels: Array) -> dict[str, Array]:
    """Per token [...] from logits [..., V] and the sampled tokens [...]: the reverse KL and log q_θ(y_t)
    (both with their gradient), log p(y_t) and the student's entropy (without)."""
    logq = dv.log_softmax(student_logits)
    logp = jax.lax.stop_gradient(dv.log_softmax(teacher_logits))
    pick = lambda lp: jnp.take_along_axis(lp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return {
        "rkl": dv.kl_from_logp(logq, logp),
        "logq": pick(logq),
        "logp": pick(logp),
        "h_s": jax.lax.stop_gradient(dv.entropy_from_logp(logq)),
    }


def _log_mixture(logp: Array, logq: Array, alpha: float) -> Array:
    """log(α·p + (1 − α)·q) of the sampled tokens (no gradient: the behaviour policy is fixed)."""
    if alpha == 0.0:
        return logq
    return jnp.logaddexp(logp + math.log(alpha), logq + math.log(1.0 - alpha))


def returns(rewards: Array, mask: Array, length_norm: bool) -> Array:
    """A_t = Σ_{t'>t} r_t' over the response [B, N] (r and mask 0 on padding), / #{t' > t} when length-
    normalised (0 where nothing follows)."""
    after = jnp.sum(rewards, -1, keepdims=True) - jnp.cumsum(rewards, -1)
    if not length_norm:
        return after
    count = jnp.sum(mask, -1, keepdims=True) - jnp.cumsum(mask, -1)
    return jnp.where(count > 0, after / jnp.maximum(count, 1.0), 0.0)


def sums(stats: dict[str, Array], mask: Array, cfg: MiniLLMConfig) -> dict[str, tuple[Array, Array]]:
    """(numerator, count) of both terms and MiniLLM's statistics from per-token stats [B, N]."""
    m = jnp.asarray(mask, jnp.float32)
    n_tok = jnp.sum(m)
    logq_sg = jax.lax.stop_gradient(stats["logq"])
    log_mix = _log_mixture(stats["logp"], logq_sg, cfg.mix_alpha)
    ratio = jnp.exp(stats["logq"] - log_mix)  # ρ_t, carries ∇ log q_θ(y_t)
    w = jax.lax.stop_gradient(ratio)
    rewards = terms.select(stats["logp"] - logq_sg, m)
    adv = jax.lax.stop_gradient(returns(rewards, m, cfg.length_norm))
    clipped = jnp.clip(ratio, 1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps)
    long = jnp.maximum(-adv * ratio, -adv * clipped)
    out = {
        "loss/long": (terms.sum_where(long, m), n_tok),
        "loss/single": (terms.sum_where(w * stats["rkl"], m), n_tok),
        "minillm/reverse_kl": (terms.sum_where(jax.lax.stop_gradient(stats["rkl"]), m), n_tok),
        "minillm/reward": (terms.sum_where(rewards, m), n_tok),
        "minillm/weight": (terms.sum_where(w, m), n_tok),
        "minillm/clip_frac": (terms.sum_where(jnp.abs(w - 1.0) > cfg.clip_eps, m), n_tok),
        "entropy/student": (terms.sum_where(stats["h_s"], m), n_tok),
    }
    return out


def minillm_loss(student_logits, teacher_logits, labels, mask, cfg: MiniLLMConfig | None = None):
    """(loss, aux) from full logits [B, N, V], the sampled tokens and their mask [B, N]: each term's token
    mean, summed (the step's result on one micro-batch; for tests and small inputs)."""
    cfg = cfg or MiniLLMConfig()
    stats = token_stats(student_logits, teacher_logits, labels)
    aux = {name: num / jnp.maximum(den, 1.0) for name, (num, den) in sums(stats, mask, cfg).items()}
    return terms.combine(aux, cfg), aux
