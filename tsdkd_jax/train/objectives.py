"""Per-method objectives from hidden states, split so that gradient accumulation normalises exactly.

Every method's loss is a weighted sum of terms, each a ratio  Σ_tokens numerator / count. One micro-batch
returns each term's numerator already divided by its denominator for the *whole step* (paper: the global
batch's counts; official parity: its own count × the number of micro-batches), so summing the per-micro-batch
values over the accumulation window gives exactly the step's terms, and summing their gradients gives the
exact gradient of the step's loss. Counts that depend on the student's entropies (EM set, opener) are known
only after a forward pass: with several micro-batches and global normalisation the step first runs a
student-only pass that fixes those selections (step.py), then the scored pass reuses them.

The token selections, the (numerator, count) sums and the term weights are losses/terms.py's, the ones
losses.tsdkd.loss_from_stats uses, so one micro-batch with `normalize="micro_batch"` reproduces
losses.tsdkd_loss exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tsdkd_jax import losses
from tsdkd_jax.losses import divergences as dv
from tsdkd_jax.losses import fused, minillm, terms
from tsdkd_jax.train import methods

Array = jax.Array
FUSED_GRAD = "fused/grad"  # the fused loss's gradient carrier among a head's terms (value exactly 0)


def loss_config(config) -> losses.LossConfig | None:
    """The KD loss of `config.method` as a LossConfig; None for the cross-entropy methods (methods.py)."""
    return methods.loss_config(config)


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

    return token_map(fn, (hs, jax.lax.stop_gradient(ht)), chunk_size)


def minillm_token_stats(hs, ht, labels, *, student, teacher, spec) -> dict[str, Array]:
    """losses.minillm.token_stats of the sampled tokens [B, N] from both models' hidden states [B, N, D]."""

    def fn(hs_CD, ht_CD, y_C):
        z = dv.as_f32(student.unembed(hs_CD))
        u = jax.lax.stop_gradient(dv.as_f32(teacher.unembed(ht_CD)))
        z, u = losses.align_vocab(z, u, spec.vocab_policy)
        return minillm.token_stats(z, u, y_C)

    return losses.chunked_map(fn, (hs, jax.lax.stop_gradient(ht), labels), spec.chunk_size)


def student_entropy(hs, *, s_unembed, chunk_size) -> Array:
    """H^S per token [B, N] (for the selection pre-pass; no gradient needed)."""
    return token_map(lambda h: {"h": losses.entropy(s_unembed(h))}, (hs,), chunk_size)["h"]


def ce_token_stats(hs, labels, *, s_unembed, chunk_size) -> dict[str, Array]:
    """Cross-entropy of the next-token labels [B, N] per token."""

    def fn(h_CD, y_C):
        z = s_unembed(h_CD)
        return {"ce": losses.cross_entropy(z, y_C), "h_s": losses.entropy(jax.lax.stop_gradient(z))}

    return token_map(fn, (hs, labels), chunk_size)


def token_map(fn, per_token, chunk_size: int) -> dict[str, Array]:
    """losses.chunked_map, or with chunk_size 0 fn on all tokens at once (the step's choice when the whole
    [N, V] logits are small: no scan, no rematerialisation; the same per-token values)."""
    if chunk_size:
        return losses.chunked_map(fn, per_token, chunk_size)
    b, t = per_token[0].shape[:2]
    out = fn(*(x.reshape(b * t, *x.shape[2:]) for x in per_token))
    return {k: v.reshape(b, t) for k, v in out.items()}


def micro_batch_terms(stats, mask, cfg, sums, num_micro: int, sel_masks=None) -> dict[str, Array]:
    """Official parity: each term is this micro-batch's own mean (losses.loss_from_stats), / num_micro."""
    if cfg is None:
        num, den = sums["loss/ce"]
        return {"loss/ce": num / jnp.maximum(den, 1.0) / num_micro}
    _, aux = losses.loss_from_stats(stats, mask, cfg, sel_masks)
    return {name: aux[name] / num_micro for name in terms.term_weights(cfg)}


def global_terms(sums, global_counts: dict[str, Array], cfg) -> dict[str, Array]:
    """Paper normalisation: each term's numerator over the step's global count of its tokens."""
    weights = terms.term_weights(cfg)
    return {name: sums[name][0] / jnp.maximum(global_counts[name], 1.0) for name in weights}


def _unembed(cap, table_VD, hidden):
    """models.Decoder.unembed with the table an argument (the fused loss differentiates it explicitly)."""
    logits = jnp.einsum(
        "...D,VD->...V", hidden, table_VD.astype(hidden.dtype), preferred_element_type=jnp.float32
    )
    return logits if cap is None else jnp.tanh(logits / cap) * cap


def _unembed_rows(cap, table_VD, hidden_ND, ids_NK):
    """_unembed's logits at ids only [N, K]: the table's rows gathered per token (the fused loss's ranking
    term, losses/fused_rows.py)."""
    rows_NKD = jnp.take(table_VD, ids_NK, axis=0).astype(hidden_ND.dtype)
    logits = jnp.einsum("ND,NKD->NK", hidden_ND, rows_NKD, preferred_element_type=jnp.float32)
    return logits if cap is None else jnp.tanh(logits / cap) * cap


def head_parts(model):
    """(unembed(table, h) → logits, table) of a Decoder: its tied embedding or untied lm_head."""
    table = (model.embed if model.config.tie_embeddings else model.lm_head).get_value()
    return functools.partial(_unembed, model.config.final_logit_softcap), table


def fused_kd_terms(hs, ht, mask, cfg, sel_masks, counts, *, student, teacher, spec) -> tuple[dict, dict]:
    """(terms, sums) of one micro-batch by the fused loss (losses/fused.py): the terms' values are the
    checkpointed path's, their gradient rides on terms[FUSED_GRAD] (value 0), added to the loss by the step."""
    s_fn, s_table = head_parts(student)
    t_fn, t_table = head_parts(teacher)
    head = fused.Head(s_fn, t_fn, cfg, spec.chunk_size, spec.vocab_policy, spec.logits_dtype)
    k = spec.grad_accum

    def scales(own):
        if spec.normalize == "micro_batch":
            return {name: s / k for name, s in fused.reference_scales(own, cfg).items()}
        c = counts or own
        return {name: w / jnp.maximum(c[name], 1.0) for name, w in terms.term_weights(cfg).items()}

    rows = functools.partial(_unembed_rows, student.config.final_logit_softcap)
    stats, sel_masks, value = fused.fused_kd(head, s_table, hs, t_table, ht, mask, scales, sel_masks, rows)
    sums = terms.kd_sums(stats, mask, cfg, sel_masks)
    if spec.normalize == "micro_batch":
        out = micro_batch_terms(stats, mask, cfg, sums, k, sel_masks)
    else:
        out = global_terms(sums, counts or {name: sums[name][1] for name in terms.term_weights(cfg)}, cfg)
    return {**out, FUSED_GRAD: value - jax.lax.stop_gradient(value)}, sums
