"""The fused KD loss: value and gradient in one pass over token chunks (jax.custom_vjp).

The KD loss is Σ_term w·Σ_tok sel_tok·stat_tok / count: once the selections and counts are known (they carry
no gradient), it is a weighted sum of per-token statistics with per-token coefficients. The forward pass of
`weighted_stats` scans token chunks and, per chunk, builds the student and teacher logits (2 matmuls),
the statistics and the gradient of Σ coef·stat with respect to the chunk's logits (the elementwise work,
differentiated inside the chunk), then pulls that gradient through the unembedding: dL/dh = g·Wᵀ and
dL/dW += hᵀ·g (2 matmuls). The backward pass only scales the saved dL/dh [N, D] and dL/dW by the incoming
cotangent: no logits are rematerialised and no [chunk, V] residual is kept (4 large matmuls per chunk;
the checkpointed path recomputes the logits in its backward pass). The per-chunk gradient of the
statistics is JAX's derivative of tsdkd.token_stats taken in the forward pass, not a hand-written formula.

Selections (EM set, opener) depend on every token's student entropy, so when the caller has not fixed them
(the train step's selection pre-pass does with accumulation) a forward-only entropy pass comes first
(1 matmul, no gradient), except where losses/fused_rows.py applies (the paper variant, rows that fit in a
chunk, the student's logits at given ids computable): it needs no such pass. The gate is per token and is
applied inside the chunk, as the reference does.
Given logits instead of hidden states (`unembed=None`), the saved gradient is the logits' own [N, V].
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tsdkd_jax.losses import chunked as ck
from tsdkd_jax.losses import divergences as dv
from tsdkd_jax.losses import selection as sel
from tsdkd_jax.losses import terms, tsdkd

Array = jax.Array
COEF_STATS = {"loss/direct": "direct", "loss/em": "h_s", "loss/indirect": "rank_nll"}


class Head(NamedTuple):
    """Static description of a chunk's logits: unembed(params, h) → logits [C, V] (None: h are logits)."""

    s_unembed: Callable | None
    t_unembed: Callable | None
    cfg: tsdkd.LossConfig
    chunk_size: int
    vocab_policy: str = "pad_student"
    logits_dtype: str = "float32"
    strided: bool = True  # chunked.to_chunks' layout (spread over devices); False: contiguous, copy-free


def _logits(fn, params, x, dtype: str) -> Array:
    return round_logits(x if fn is None else fn(params, x), dtype)


def round_logits(z: Array, dtype: str) -> Array:
    """float32 logits, first rounded to `dtype` (loss.logits_dtype) when that is narrower."""
    z = dv.as_f32(z)
    return z.astype(dtype).astype(jnp.float32) if dtype != "float32" else z


def _chunk_pair(head: Head, s_params, h, t_params, ht):
    z = _logits(head.s_unembed, s_params, h, head.logits_dtype)
    u = jax.lax.stop_gradient(_logits(head.t_unembed, t_params, ht, head.logits_dtype))
    return ck.align_vocab(z, u, head.vocab_policy)


def _chunk_objective(head: Head, s_params, h, t_params, ht, coef):
    """(Σ_tok coef·stat over the chunk, stats)."""
    z, u = _chunk_pair(head, s_params, h, t_params, ht)
    st = tsdkd.token_stats(z, u, head.cfg)
    return weighted_sum(head, st, coef), st


def weighted_sum(head: Head, st: dict[str, Array], coef: dict[str, Array]) -> Array:
    """Σ_stat Σ_tok coef·stat; the direct term's coefficient carries the reference's stop-gradient gate."""
    obj = jnp.zeros((), jnp.float32)
    for name, c in coef.items():
        c = (
            c * sel.entropy_gate(st["h_s"], st["h_t"], head.cfg.gate_tau)
            if name == "direct" and head.cfg.use_gate
            else c
        )
        obj = obj + terms.sum_where(c * st[name], c)  # dropped tokens give 0 even where the stat is inf
    return obj


def _forward(head: Head, s_params, hs, t_params, ht, coef):
    """(value, stats [N], dL/dparams, dL/dhs [N, ...]) over token chunks of the flat inputs."""
    n_tok = hs.shape[0]
    chunk = min(int(head.chunk_size) or n_tok, n_tok)  # 0: one chunk
    n_chunks = -(-n_tok // chunk)
    to_c, un_c = _layout(head, chunk, n_chunks, n_tok)
    obj = functools.partial(_chunk_objective, head)

    def body(carry, xs):
        value, d_params = carry
        h, ht_c, coef_c = xs
        v, pull, st = jax.vjp(lambda p, x: obj(p, x, t_params, ht_c, coef_c), s_params, h, has_aux=True)
        dp, dh = pull(jnp.ones((), v.dtype))
        return (value + v, jax.tree.map(jnp.add, d_params, dp)), (st, dh)

    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, s_params))
    (value, d_params), (stats, dh) = jax.lax.scan(body, zero, (to_c(hs), to_c(ht), jax.tree.map(to_c, coef)))
    return value, jax.tree.map(un_c, stats), d_params, un_c(dh)


def _layout(head: Head, chunk: int, n_chunks: int, n_tok: int):
    """(to chunks, back to flat tokens): chunked.py's strided layout, or contiguous (no transposed copies of
    [N, V] logits and their gradient when the inputs are logits on one device)."""
    if head.strided:
        return (lambda x: ck.to_chunks(x, chunk, n_chunks)), (lambda x: ck.from_chunks(x, n_tok))

    def to_c(x):
        x = (
            jnp.pad(x, [(0, n_chunks * chunk - n_tok)] + [(0, 0)] * (x.ndim - 1))
            if n_chunks * chunk > n_tok
            else x
        )
        return x.reshape(n_chunks, chunk, *x.shape[1:])

    return to_c, lambda x: x.reshape(-1, *x.shape[2:])[:n_tok]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def weighted_stats(head: Head, s_params, hs, t_params, ht, coef):
    """(Σ_tok Σ_stat coef·stat, per-token stats) over flat tokens hs [N, D]; gradient w.r.t. s_params, hs."""
    value, stats, _, _ = _forward(head, s_params, hs, t_params, ht, coef)
    return value, jax.lax.stop_gradient(stats)


def _fwd(head, s_params, hs, t_params, ht, coef):
    value, stats, d_params, dh = _forward(head, s_params, hs, t_params, ht, coef)
    return (value, stats), (d_params, dh.astype(hs.dtype), t_params, ht, coef)


def _bwd(head, res, cts):
    d_params, dh, t_params, ht, coef = res
    ct = cts[0]  # the stats are statistics: they carry no gradient
    scale = lambda g: (g * ct).astype(g.dtype)
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
    return jax.tree.map(scale, d_params), scale(dh), zeros(t_params), zeros(ht), zeros(coef)


weighted_stats.defvjp(_fwd, _bwd)


def student_entropy(head: Head, s_params, hs, t_params, ht) -> Array:
    """H_S per flat token [N] from the logits the fused pass uses (rounded, −inf padded); no gradient."""
    n_tok = hs.shape[0]
    chunk = min(int(head.chunk_size) or n_tok, n_tok)  # 0: one chunk
    n_chunks = -(-n_tok // chunk)
    vt = jax.eval_shape(lambda: _logits(head.t_unembed, t_params, ht[:1], "float32")).shape[-1]

    def body(_, h):
        z = _logits(head.s_unembed, s_params, h, head.logits_dtype)
        if head.vocab_policy == "pad_student" and vt > z.shape[-1]:  # the same padding as align_vocab
            z = jnp.concatenate([z, jnp.full((z.shape[0], vt - z.shape[-1]), -jnp.inf, z.dtype)], -1)
        return None, dv.entropy_from_logp(jax.nn.log_softmax(z, axis=-1))

    to_c, un_c = _layout(head, chunk, n_chunks, n_tok)
    _, h = jax.lax.scan(body, None, to_c(jax.lax.stop_gradient(hs)))
    return un_c(h)


def counts_of(mask: Array, sel_masks: dict[str, Array]) -> dict[str, Array]:
    """Each KD term's token count (terms.kd_sums' denominators) from the mask and the selections."""
    m = jnp.asarray(mask, jnp.float32)
    return {"loss/direct": jnp.sum(m), "loss/em": jnp.sum(sel_masks["em_set"]),
            "loss/indirect": jnp.sum(sel_masks["opener"])}  # fmt: skip


def reference_scales(counts: dict[str, Array], cfg) -> dict[str, Array]:
    """w / denominator of every loss term as tsdkd.loss_from_stats normalises one batch."""
    scales = {}
    for name, w in terms.term_weights(cfg).items():
        den = jnp.maximum(counts[name], 1.0)
        if name == "loss/indirect" and cfg.variant == "official":  # the released code's Σ / (n + 1e-8)
            den = counts[name] + 1e-8
        scales[name] = w / den
    return scales


def fused_kd(head: Head, s_params, hs, t_params, ht, mask, scales_fn, sel_masks=None, rows_fn=None):
    """(stats [B, T], selections, value): value = the loss Σ_term scale·Σ_tok sel·stat with the fused gradient.

    hs, ht: [B, T, ...] hidden states (or logits when the unembeds are None); scales_fn(counts) → {term:
    weight / normaliser}; sel_masks: the fixed EM set and opener, else computed from the student's entropies.
    rows_fn(s_params, h [N, D], ids [N, k]) → the student's logits at ids: with it (or without the ranking
    term), the paper variant whose rows fit in a chunk skips the entropy pre-pass (losses/fused_rows.py).
    The stats carry no gradient: take values from them, the gradient from `value`.
    """
    cfg = head.cfg
    if sel_masks is None and (cfg.use_em or cfg.use_indirect):
        from tsdkd_jax.losses import fused_rows  # it builds on this module: imported here, not at the top

        if fused_rows.usable(head, rows_fn, jnp.shape(mask)[1]):
            return fused_rows.fused_kd_rows(head, rows_fn, s_params, hs, t_params, ht, mask, scales_fn)
    return _fused_kd(head, s_params, hs, t_params, ht, mask, scales_fn, sel_masks)


def _fused_kd(head: Head, s_params, hs, t_params, ht, mask, scales_fn, sel_masks=None):
    cfg = head.cfg
    b, t = jnp.shape(mask)
    flat = lambda x: x.reshape(b * t, *x.shape[2:])
    hs_f, ht_f = flat(hs), flat(jax.lax.stop_gradient(ht))
    t_params = jax.lax.stop_gradient(t_params)
    m = jnp.asarray(mask, jnp.float32)
    selected = cfg.use_em or cfg.use_indirect  # else the selections only feed statistics: taken after
    if sel_masks is None and selected:
        h_s = student_entropy(head, s_params, hs_f, t_params, ht_f).reshape(b, t)
        sel_masks = terms.selections(h_s, m, cfg)
    n_tok = jnp.sum(m)
    counts = counts_of(m, sel_masks) if sel_masks is not None else {"loss/direct": n_tok}
    scales = jax.lax.stop_gradient(scales_fn(counts))
    keep = {"loss/direct": m, **(_keep(sel_masks) if sel_masks is not None else {})}
    coef = {COEF_STATS[name]: flat(keep[name] * s) for name, s in scales.items()}
    value, stats = weighted_stats(head, s_params, hs_f, t_params, ht_f, coef)
    stats = jax.tree.map(lambda x: x.reshape(b, t), stats)
    if sel_masks is None:
        sel_masks = terms.selections(stats["h_s"], m, cfg)
    return stats, jax.lax.stop_gradient(sel_masks), value


def _keep(sel_masks):
    return {"loss/em": sel_masks["em_set"], "loss/indirect": sel_masks["opener"]}


def _loss_with_grad(stats, sel_masks, value, mask, cfg):
    """(loss, aux) of tsdkd.loss_from_stats, the loss carrying the fused gradient (its value unchanged)."""
    loss, aux = tsdkd.loss_from_stats(stats, mask, cfg, sel_masks)
    loss = loss + (value - jax.lax.stop_gradient(value))
    return loss, {**aux, "loss/total": loss}


def fused_tsdkd_loss(
    student_hidden: Array,
    teacher_hidden: Array,
    response_mask: Array,
    *,
    student_unembed: Callable,
    student_params,
    teacher_unembed: Callable,
    teacher_params,
    chunk_size: int = 512,
    vocab_policy: str = "pad_student",
    logits_dtype: str = "float32",
    student_unembed_rows: Callable | None = None,
    **loss_kwargs,
) -> tuple[Array, dict[str, Array]]:
    """chunked_tsdkd_loss's (loss, aux) with the fused gradient w.r.t. student_hidden and student_params.

    The unembeds take their weights explicitly: student_unembed(student_params, h [C, D]) → logits [C, V]
    (gradients flow to student_params and student_hidden; the teacher side is frozen).
    student_unembed_rows(student_params, h [N, D], ids [N, k]) → the same logits at ids only [N, k]: given
    it, the paper variant with rows of at most chunk_size tokens takes 4 vocabulary matmuls per chunk instead
    of 5 (no entropy pre-pass; losses/fused_rows.py).
    """
    cfg = tsdkd.make_config(**loss_kwargs)
    _check(cfg, student_hidden, teacher_hidden, response_mask, chunk_size, vocab_policy)
    head = Head(student_unembed, teacher_unembed, cfg, int(chunk_size), vocab_policy, logits_dtype)
    args = (student_params, student_hidden, teacher_params, teacher_hidden, response_mask)
    scales = lambda c: reference_scales(c, cfg)
    stats, sel_masks, value = fused_kd(head, *args, scales, rows_fn=student_unembed_rows)
    return _loss_with_grad(stats, sel_masks, value, response_mask, cfg)


def fused_tsdkd_loss_from_logits(
    student_logits: Array,
    teacher_logits: Array,
    response_mask: Array,
    *,
    chunk_size: int = 256,
    **loss_kwargs,
) -> tuple[Array, dict[str, Array]]:
    """tsdkd_loss's (loss, aux) from logits [B, T, V]; the gradient w.r.t. the student logits is computed
    chunk by chunk in the forward pass (peak ≈ logits + their gradient + one chunk's work)."""
    cfg = tsdkd.make_config(**loss_kwargs)
    _check(cfg, student_logits, teacher_logits, response_mask, chunk_size, "pad_student")
    if jnp.ndim(student_logits) != 3:
        raise ValueError(f"expected logits [B, T, V], got {jnp.shape(student_logits)}")
    head = Head(None, None, cfg, int(chunk_size), strided=False)
    args = ((), student_logits, (), teacher_logits, response_mask)
    stats, sel_masks, value = fused_kd(head, *args, lambda c: reference_scales(c, cfg))
    return _loss_with_grad(stats, sel_masks, value, response_mask, cfg)


def _check(cfg, hs, ht, mask, chunk_size, vocab_policy) -> None:
    if vocab_policy not in ck.VOCAB_POLICIES:
        raise ValueError(f"vocab_policy must be one of {ck.VOCAB_POLICIES}, got {vocab_policy!r}")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer ≥ 1, got {chunk_size!r}")
    b_t = jnp.shape(mask)
    if len(b_t) != 2 or jnp.shape(hs)[:2] != b_t or jnp.shape(ht)[:2] != b_t:
        raise ValueError(f"inputs {jnp.shape(hs)}, {jnp.shape(ht)} do not match the mask {b_t} ([B, T])")
