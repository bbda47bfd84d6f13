"""The loss's terms: token selections, per-term (numerator, count) sums and the one term weighting.

Every loss is Σ_term weight · numerator / count over the response tokens. tsdkd.loss_from_stats (one batch)
and the train step (micro-batches whose counts are the step's) both build their terms from these pieces, so
the selections, the sums and the weighting exist once.
"""

import jax
import jax.numpy as jnp

from tsdkd_jax.losses import selection as sel

Array = jax.Array
TERMS = ("loss/direct", "loss/em", "loss/indirect", "loss/ce")


def select(values: Array, keep: Array) -> Array:
    """values·keep with keep ∈ {0, 1}; dropped entries contribute 0 even if they are inf."""
    return jnp.where(keep > 0, values, 0.0)


def sum_where(values: Array, keep: Array) -> Array:
    return jnp.sum(select(values, keep))


def selections(h_s: Array, mask: Array, cfg) -> dict[str, Array]:
    """EM set and opener [B, N] (0/1, no gradient) from the student's entropies, by variant."""
    if cfg.variant == "official":  # one threshold (opener_frac) for both, as the released code
        em_set = sel.official_em_mask(h_s, mask, cfg.opener_frac)
        opener = sel.official_opener_mask(h_s, mask, cfg.opener_frac)
    else:
        em_set = sel.em_mask(h_s, mask, cfg.em_frac)
        opener = sel.opener_mask(h_s, mask, cfg.opener_frac)
    return {"em_set": em_set, "opener": opener}


def kd_sums(stats, mask, cfg, sel_masks) -> dict[str, tuple[Array, Array]]:
    """(numerator, count) of every KD term and statistic from per-token stats [B, N] and the selections."""
    m = jnp.asarray(mask, jnp.float32)
    n_tok = jnp.sum(m)
    gate = sel.entropy_gate(stats["h_s"], stats["h_t"], cfg.gate_tau) if cfg.use_gate else jnp.ones_like(m)
    sums = {
        "loss/direct": (sum_where(gate * stats["direct"], m), n_tok),
        "gate/mean": (sum_where(gate, m), n_tok),
        "agree/top1": (sum_where(stats["agree"], m), n_tok),
        "entropy/student": (sum_where(stats["h_s"], m), n_tok),
        "entropy/teacher": (sum_where(stats["h_t"], m), n_tok),
        "select/opener_len": (jnp.sum(sel_masks["opener"]), jnp.float32(m.shape[0])),
    }
    if cfg.use_em:
        em_set = sel_masks["em_set"]
        sums["loss/em"] = (sum_where(stats["h_s"], em_set), jnp.sum(em_set))
        sums["select/em_frac"] = (jnp.sum(em_set), n_tok)
    if cfg.use_indirect:
        opener = sel_masks["opener"]
        sums["loss/indirect"] = (sum_where(stats["rank_nll"], opener), jnp.sum(opener))
    return sums


def ce_sums(stats, mask) -> dict[str, tuple[Array, Array]]:
    """(numerator, count) of the cross-entropy methods' term and the student's entropy."""
    m = jnp.asarray(mask, jnp.float32)
    n_tok = jnp.sum(m)
    return {
        "loss/ce": (sum_where(stats["ce"], m), n_tok),
        "entropy/student": (sum_where(stats["h_s"], m), n_tok),
    }


def term_weights(cfg) -> dict[str, float]:
    """{term: weight} of the terms that make the loss (cfg None: cross-entropy)."""
    if cfg is None:
        return {"loss/ce": 1.0}
    if hasattr(cfg, "term_weights"):  # a loss with its own terms (minillm.MiniLLMConfig)
        return cfg.term_weights()
    w = {"loss/direct": 1.0} if cfg.use_direct else {}  # without it, loss/direct is logged as a statistic
    if cfg.use_em:
        w["loss/em"] = cfg.em_weight
    if cfg.use_indirect:
        w["loss/indirect"] = cfg.rank_weight
    return w


def combine(terms: dict[str, Array], cfg) -> Array:
    """The loss: Σ weight · term over the terms that make it (the one term weighting)."""
    weights = term_weights(cfg)
    return sum((weights[name] * terms[name] for name in weights), jnp.zeros((), jnp.float32))
