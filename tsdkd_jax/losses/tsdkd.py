"""The TSD-KD loss (SPEC.md §1 paper variant, §2 released-code variant) from full logits.

The loss is split in two so that the chunked path (chunked.py) shares it exactly:
  token_stats:     logits [..., V] → per-token vectors (H_S, H_T, direct divergence, ranking NLL, top-1 agree)
  loss_from_stats: per-token vectors [B, T] + mask → selections (gate, opener, EM) → (loss, aux)
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from tsdkd_jax.losses import divergences as dv
from tsdkd_jax.losses import selection as sel
from tsdkd_jax.losses import terms

Array = jax.Array
VARIANTS = ("paper", "official")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Validated TSD-KD hyper-parameters (Python numbers: they select code paths at trace time)."""

    variant: str = "paper"
    beta: float = 0.9
    gate_tau: float = 1.0
    rank_k: int = 10
    rank_weight: float = 0.1
    opener_frac: float = 0.1
    em_frac: float = 0.1
    em_weight: float = 1.0
    use_gate: bool = True
    use_indirect: bool = True
    use_em: bool = True
    use_direct: bool = True  # False drops the (gated) divergence term: e.g. the "EM alone" ablation
    divergence: str = "gjsd"
    skew_alpha: float = 0.1

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.divergence not in dv.DIVERGENCES:
            raise ValueError(f"divergence must be one of {dv.DIVERGENCES}, got {self.divergence!r}")
        _check(0.0 <= self.beta <= 1.0, "beta", "in [0, 1]", self.beta)
        _check(self.gate_tau > 0, "gate_tau", "> 0", self.gate_tau)
        _check(self.rank_k == int(self.rank_k) and self.rank_k >= 1, "rank_k", "an integer ≥ 1", self.rank_k)
        _check(0.0 < self.opener_frac <= 1.0, "opener_frac", "in (0, 1]", self.opener_frac)
        _check(0.0 < self.em_frac <= 1.0, "em_frac", "in (0, 1]", self.em_frac)
        _check(0.0 <= self.skew_alpha <= 1.0, "skew_alpha", "in [0, 1]", self.skew_alpha)
        for name in ("rank_weight", "em_weight"):
            _check(math.isfinite(getattr(self, name)), name, "finite", getattr(self, name))
        on = (self.use_direct, self.use_em, self.use_indirect)
        _check(any(on), "use_direct/use_em/use_indirect", "not all False (an empty loss)", on)


def _check(ok: bool, field: str, want: str, got) -> None:
    if not ok:
        raise ValueError(f"{field} must be {want}, got {got!r}")


def make_config(**kwargs) -> LossConfig:
    """LossConfig from tsdkd_loss keyword arguments; errors name the offending field."""
    fields = {f.name for f in dataclasses.fields(LossConfig)}
    unknown = set(kwargs) - fields
    if unknown:
        raise TypeError(f"unknown TSD-KD loss arguments: {sorted(unknown)}")
    for name in ("beta", "gate_tau", "rank_weight", "opener_frac", "em_frac", "em_weight", "skew_alpha"):
        if name in kwargs:
            try:
                kwargs[name] = float(kwargs[name])
            except (TypeError, jax.errors.ConcretizationTypeError) as e:
                raise ValueError(
                    f"{name} must be a Python number (it selects code paths), got {kwargs[name]!r}"
                ) from e
    return LossConfig(**kwargs)


def token_stats(student_logits: Array, teacher_logits: Array, cfg: LossConfig) -> dict[str, Array]:
    """Per-token statistics over the last axis; the teacher side is stop-gradiented."""
    # fp32 (at least) first: every term is a difference of log-probabilities of tiny probabilities.
    z = dv.as_f32(student_logits)
    u = jax.lax.stop_gradient(dv.as_f32(teacher_logits))
    if z.shape[-1] != u.shape[-1]:
        raise ValueError(
            f"student and teacher vocab differ ({z.shape[-1]} vs {u.shape[-1]}): align them first"
        )
    if cfg.use_indirect and cfg.rank_k > z.shape[-1]:
        raise ValueError(f"rank_k must be ≤ vocab size {z.shape[-1]}, got {cfg.rank_k}")
    logp_s = jax.nn.log_softmax(z, axis=-1)
    logp_t = jax.nn.log_softmax(u, axis=-1)
    stats = {
        "h_s": dv.entropy_from_logp(logp_s),
        "h_t": dv.entropy_from_logp(logp_t),
        "direct": dv.divergence_from_logp(
            cfg.divergence, logp_s, logp_t, beta=cfg.beta, skew_alpha=cfg.skew_alpha
        ),
        "agree": (jnp.argmax(z, axis=-1) == jnp.argmax(u, axis=-1)).astype(jnp.float32),
    }
    if cfg.use_indirect:
        rank = sel.plackett_luce_nll if cfg.variant == "paper" else sel.official_rank_nll
        stats["rank_nll"] = rank(z, u, cfg.rank_k)
    return stats


def loss_from_stats(
    stats: dict[str, Array], mask: Array, cfg: LossConfig, sel_masks: dict[str, Array] | None = None
) -> tuple[Array, dict[str, Array]]:
    """(loss, aux) from per-token vectors [B, T] and the response mask [B, T]: this batch's own means.

    sel_masks: the EM set and opener if already fixed (the fused loss's), else taken from stats["h_s"].
    """
    m = jnp.asarray(mask, jnp.float32)
    if sel_masks is None:
        sel_masks = terms.selections(stats["h_s"], m, cfg)
    sums = terms.kd_sums(stats, m, cfg, sel_masks)
    aux = {name: num / jnp.maximum(den, 1.0) for name, (num, den) in sums.items()}
    if cfg.use_indirect and cfg.variant == "official":  # the released code's  Σ / (n + 1e-8)
        num, den = sums["loss/indirect"]
        aux["loss/indirect"] = num / (den + 1e-8)
    zero = jnp.zeros((), jnp.float32)
    for name in ("loss/em", "select/em_frac", "loss/indirect"):  # terms left out are reported as 0
        aux.setdefault(name, zero)
    # Without the direct term its value is still reported (a statistic, as the trainer logs it).
    loss = terms.combine(aux, cfg)
    return loss, {"loss/total": loss, **aux}


def tsdkd_loss(
    student_logits: Array,
    teacher_logits: Array,
    response_mask: Array,
    *,
    variant: str = "paper",
    beta: float = 0.9,
    gate_tau: float = 1.0,
    rank_k: int = 10,
    rank_weight: float = 0.1,
    opener_frac: float = 0.1,
    em_frac: float = 0.1,
    em_weight: float = 1.0,
    use_gate: bool = True,
    use_indirect: bool = True,
    use_em: bool = True,
    use_direct: bool = True,
    divergence: str = "gjsd",
    skew_alpha: float = 0.1,
) -> tuple[Array, dict[str, Array]]:
    """TSD-KD loss from logits [B, T, V] (teacher frozen) and response mask [B, T] → (loss, aux).

    Hyper-parameters are Python numbers (they select code paths at trace time). In the official variant
    opener_frac is the released code's single threshold (opener and EM quantile) and em_frac is unused.
    use_gate=False gives plain GKD (gate ≡ 1); divergence picks the direct term (baselines reuse this path);
    use_direct=False leaves the direct term out of the loss (aux still reports its value).
    """
    cfg = make_config(
    variant=variant, beta=beta, gate_tau=gate_tau, rank_k=rank_k, rank_weight=rank_weight,
    opener_frac=opener_frac, em_frac=em_frac, em_weight=em_weight, use_gate=use_gate,
    use_indirect=use_indirect, use_em=use_em, use_direct=use_direct, divergence=divergence,
    skew_alpha=skew_alpha,
  )  # fmt: skip
    if jnp.ndim(student_logits) != 3 or jnp.shape(response_mask) != jnp.shape(student_logits)[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and mask [B, T], got {jnp.shape(student_logits)} and "
            f"{jnp.shape(response_mask)}"
        )
    return loss_from_stats(token_stats(student_logits, teacher_logits, cfg), response_mask, cfg)
