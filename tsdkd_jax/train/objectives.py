"""Per-method objectives from hidden states, split so that gradient accumulation normalises exactly.

Every method's loss is a weighted sum of terms, each a ratio  Σ_tokens numerator / count. One micro-batch
returns each term's numerator already divided by its denominator for the *whole step* (paper: the global
batch's counts; official parity: its own count × the number of micro-batches), so summing the per-micro-batch
values over the accumulation window gives exactly the step's terms, and summing their gradients gives the
exact gradient of the step's loss. Counts that depend on the student's entropies (EM set, opener) are known
only after a forward pass: with several micro-batches and global normalisation the step first runs a
student-only pass that fixes those selections (step.py), then the scored pass reuses them.

Token selections follow losses.tsdkd.loss_from_stats (same primitives, same order), so one micro-batch with
`normalize="micro_batch"` reproduces losses.tsdkd_loss exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from tsdkd_jax import losses
from tsdkd_jax.losses import divergences as dv
from tsdkd_jax.losses import selection as sel

Array = jax.Array
TERMS = ("loss/direct", "loss/em", "loss/indirect", "loss/ce")


def loss_config(config) -> losses.LossConfig | None:
    """The KD loss of `config.method` as a LossConfig; None for the cross-entropy methods (sft, seqkd)."""
    m, lc = config.method, config.loss
    if m in ("sft", "seqkd"):
        return None
    common = {"beta": lc.beta, "gate_tau": lc.gate_tau, "rank_k": lc.rank_k, "skew_alpha": lc.skew_alpha}
    if m in ("tsdkd", "tsdkd_official"):
        return losses.make_config(
            variant="paper" if m == "tsdkd" else "official",
            rank_weight=lc.rank_weight,
            opener_frac=lc.opener_frac,
            em_frac=lc.em_frac,
            em_weight=lc.em_weight,
            use_gate=lc.use_gate,
            use_indirect=lc.use_indirect,
            use_em=lc.use_em,
            use_direct=lc.use_direct,
            **common,
        )
    divergence = {"gkd": "gjsd", "supervised_kd": "fkl", "distillm": lc.divergence}[m]
    return losses.make_config(
        divergence=divergence, use_gate=False, use_indirect=False, use_em=False, **common
    )


def chunked_map(
    fn: Callable[..., dict[str, Array]], per_token: tuple[Array, ...], chunk_size: int
) -> dict[str, Array]:
    """fn over token chunks of [B, N, ...] inputs → dict of [B, N] per-token values, rematerialised in the
    backward pass (peak memory ∝ chunk × vocab; no [B, N, V] tensor)."""
    b, n = per_token[0].shape[:2]
    n_tok = b * n
    chunk = min(int(chunk_size), n_tok)
    n_chunks = -(-n_tok // chunk)

    def to_chunks(x):
        flat = x.reshape(n_tok, *x.shape[2:])
        flat = jnp.pad(flat, [(0, n_chunks * chunk - n_tok)] + [(0, 0)] * (flat.ndim - 1))
        return flat.reshape(chunk, n_chunks, *flat.shape[1:]).swapaxes(0, 1)  # strided: spread over devices

    def body(carry, xs):
        return carry, fn(*xs)

    _, out = jax.lax.scan(jax.checkpoint(body, prevent_cse=False), None, tuple(map(to_chunks, per_token)))
    return {k: v.swapaxes(0, 1).reshape(-1)[:n_tok].reshape(b, n) for k, v in out.items()}


def kd_token_stats(
    hs, ht, cfg, *, s_unembed, t_unembed, chunk_size, vocab_policy, logits_dtype="float32"
) -> dict[str, Array]:
    """losses.token_stats per response token from student/teacher hidden states [B, N, D].

    logits_dtype="bfloat16" rounds both sides' logits to bf16 first, as the released run's bf16 loss math
    does; the kernels still compute in f32 from there (their intermediate results are not rounded).
    """

    def rounded(x):
        return x.astype(logits_dtype).astype(jnp.float32) if logits_dtype != "float32" else x

    def fn(hs_CD, ht_CD):
        z = dv.as_f32(rounded(s_unembed(hs_CD)))
        u = jax.lax.stop_gradient(dv.as_f32(rounded(t_unembed(ht_CD))))
        z, u = losses.align_vocab(z, u, vocab_policy)
        return losses.token_stats(z, u, cfg)

    return chunked_map(fn, (hs, jax.lax.stop_gradient(ht)), chunk_size)


def student_entropy(hs, *, s_unembed, chunk_size) -> Array:
    """H^S per token [B, N] (for the selection pre-pass; no gradient needed)."""
    return chunked_map(lambda h: {"h": losses.entropy(s_unembed(h))}, (hs,), chunk_size)["h"]


def ce_token_stats(hs, labels, *, s_unembed, chunk_size) -> dict[str, Array]:
    """Cross-entropy of the next-token labels [B, N] per token."""

    def fn(h_CD, y_C):
        z = s_unembed(h_CD)
        return {"ce": losses.cross_entropy(z, y_C), "h_s": losses.entropy(jax.lax.stop_gradient(z))}

    return chunked_map(fn, (hs, labels), chunk_size)


def selections(h_s: Array, mask: Array, cfg: losses.LossConfig) -> dict[str, Array]:
    """EM set and opener [B, N] (0/1, no gradient), by variant, as losses.tsdkd.loss_from_stats picks them."""
    if cfg.variant == "official":
        em_set = sel.official_em_mask(h_s, mask, cfg.opener_frac)
        opener = sel.official_opener_mask(h_s, mask, cfg.opener_frac)
    else:
        em_set = sel.em_mask(h_s, mask, cfg.em_frac)
        opener = sel.opener_mask(h_s, mask, cfg.opener_frac)
    return {"em_set": em_set, "opener": opener}


def _sum_where(values, keep):
    return jnp.sum(jnp.where(keep > 0, values, 0.0))


def kd_sums(stats, mask, cfg: losses.LossConfig, sel_masks) -> dict[str, tuple[Array, Array]]:
    """(numerator, count) of every KD term and statistic of one micro-batch."""
    m = jnp.asarray(mask, jnp.float32)
    n_tok = jnp.sum(m)
    gate = sel.entropy_gate(stats["h_s"], stats["h_t"], cfg.gate_tau) if cfg.use_gate else jnp.ones_like(m)
    sums = {
        "loss/direct": (_sum_where(gate * stats["direct"], m), n_tok),
        "gate/mean": (_sum_where(gate, m), n_tok),
        "agree/top1": (_sum_where(stats["agree"], m), n_tok),
        "entropy/student": (_sum_where(stats["h_s"], m), n_tok),
        "entropy/teacher": (_sum_where(stats["h_t"], m), n_tok),
        "select/opener_len": (jnp.sum(sel_masks["opener"]), jnp.float32(m.shape[0])),
    }
    if cfg.use_em:
        em_set = sel_masks["em_set"]
        sums["loss/em"] = (_sum_where(stats["h_s"], em_set), jnp.sum(em_set))
        sums["select/em_frac"] = (jnp.sum(em_set), n_tok)
    if cfg.use_indirect:
        opener = sel_masks["opener"]
        sums["loss/indirect"] = (_sum_where(stats["rank_nll"], opener), jnp.sum(opener))
    return sums


def ce_sums(stats, mask) -> dict[str, tuple[Array, Array]]:
    m = jnp.asarray(mask, jnp.float32)
    n_tok = jnp.sum(m)
    return {
        "loss/ce": (_sum_where(stats["ce"], m), n_tok),
        "entropy/student": (_sum_where(stats["h_s"], m), n_tok),
    }


def term_weights(cfg: losses.LossConfig | None) -> dict[str, float]:
    if cfg is None:
        return {"loss/ce": 1.0}
    w = {"loss/direct": 1.0} if cfg.use_direct else {}  # without it, loss/direct is logged as a statistic
    if cfg.use_em:
        w["loss/em"] = cfg.em_weight
    if cfg.use_indirect:
        w["loss/indirect"] = cfg.rank_weight
    return w


def micro_batch_terms(stats, mask, cfg, sums, num_micro: int) -> dict[str, Array]:
    """Official parity: each term is this micro-batch's own mean (losses.loss_from_stats), / num_micro."""
    if cfg is None:
        num, den = sums["loss/ce"]
        return {"loss/ce": num / jnp.maximum(den, 1.0) / num_micro}
    _, aux = losses.loss_from_stats(stats, mask, cfg)
    return {name: aux[name] / num_micro for name in term_weights(cfg)}


def global_terms(sums, global_counts: dict[str, Array], cfg) -> dict[str, Array]:
    """Paper normalisation: each term's numerator over the step's global count of its tokens."""
    return {name: sums[name][0] / jnp.maximum(global_counts[name], 1.0) for name in term_weights(cfg)}
