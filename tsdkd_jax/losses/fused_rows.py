"""The fused KD loss without its entropy pre-pass: 4 vocabulary matmuls per chunk (paper variant).

fused.fused_kd needs the EM set and the opener before its pass, since their coefficients multiply the
gradient it accumulates, and both depend on every token's student entropy: so it runs a forward-only entropy
pass first (5 matmuls in all). Here that pass is not needed:
  - chunks hold whole rows (row i of chunk c is batch row i·n_chunks + c, so with the batch sharded every
    chunk is spread over the devices), and the paper's EM set is per row: each row's set is computed inside
    its chunk, from the chunk's own logits;
  - the EM term's normaliser, the set's size summed over rows, is known from the mask unless two entropies
    of a row tie at its quantile (selection.em_count_without_ties); the real size is compared after the pass,
    and when a tie changed it the pass runs once more with that size (the set itself stays): exact either
    way, and both runs share one set of buffers (a while loop);
  - the ranking term's gradient is non-zero only at each token's top-k student ids: it is taken after the
    pass, once the opener and its count are known, from the logits at those ids alone (`rows(params, h [N, D],
    ids [N, k]) → [N, k]`, N·k·D work), with the ids and the teacher's order saved by the pass.
The value of every term still comes from the pass's per-token statistics (tsdkd.loss_from_stats).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from tsdkd_jax.losses import fused, terms, tsdkd
from tsdkd_jax.losses import selection as sel

Array = jax.Array


def usable(head: fused.Head, rows_fn, t: int) -> bool:
    """Whether the row-wise pass applies: the paper variant, a row fits in a chunk, and the logits at given
    ids can be computed when the ranking term is on."""
    cfg = head.cfg
    fits = int(head.chunk_size) == 0 or t <= int(head.chunk_size)  # chunk_size 0: one chunk
    return cfg.variant == "paper" and fits and (rows_fn is not None or not cfg.use_indirect)


def to_row_chunks(x: Array, rows: int, n_chunks: int) -> Array:
    """[B, T, ...] → [n_chunks, rows·T, ...], rows zero-padded; chunk c holds rows c, c + n_chunks, ..."""
    x = jnp.pad(x, [(0, rows * n_chunks - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
    x = x.reshape(rows, n_chunks, *x.shape[1:]).swapaxes(0, 1)
    return x.reshape(n_chunks, rows * x.shape[2], *x.shape[3:])


def from_row_chunks(x: Array, rows: int, t: int, b: int) -> Array:
    """The inverse of to_row_chunks: [n_chunks, rows·T, ...] → [B, T, ...]."""
    x = x.reshape(x.shape[0], rows, t, *x.shape[2:]).swapaxes(0, 1)
    return x.reshape(-1, t, *x.shape[3:])[:b]


def _topk_order(z: Array, u: Array, k: int) -> tuple[Array, Array]:
    """The student's top-k ids and their order by teacher logit (selection.teacher_ordered_topk's choice)."""
    _, ids = jax.lax.top_k(jax.lax.stop_gradient(z), k)
    t = jax.lax.stop_gradient(jnp.take_along_axis(u, ids, axis=-1))
    return ids, jnp.argsort(-t, axis=-1, stable=True)


def _ranked(z_at_ids: Array, order: Array) -> Array:
    return jnp.take_along_axis(z_at_ids, order, axis=-1)


def _pass(head: fused.Head, rows: int, t: int, s_params, hs_c, t_params, ht_c, m_c, scale):
    """(value, (stats, em set, top-k ids/order) per chunk, dL/dparams, dL/dh) over row chunks."""
    cfg = head.cfg
    stat_cfg = dataclasses.replace(cfg, use_indirect=False)  # the ranking NLL is taken below, once

    def objective(p, h, ht_i, m_i):
        z, u = fused._chunk_pair(head, p, h, t_params, ht_i)
        st = tsdkd.token_stats(z, u, stat_cfg)
        extra = {}
        if cfg.use_indirect:
            ids, order = _topk_order(z, u, cfg.rank_k)
            z_at = jax.lax.stop_gradient(jnp.take_along_axis(z, ids, axis=-1))
            st["rank_nll"] = sel.ranked_pl_nll(_ranked(z_at, order))  # a value: its gradient comes later
            extra = {"ids": ids, "order": order}
        em = jnp.zeros_like(m_i)
        if cfg.use_em:
            em = sel.em_mask(st["h_s"].reshape(rows, t), m_i.reshape(rows, t), cfg.em_frac).reshape(-1)
        keep = {"loss/direct": m_i, "loss/em": em}
        coef = {fused.COEF_STATS[n]: keep[n] * s for n, s in scale.items() if n != "loss/indirect"}
        return fused.weighted_sum(head, st, coef), (st, em, extra)

    def body(carry, xs):
        value, d_params = carry
        h, ht_i, m_i = xs
        v, pull, out = jax.vjp(lambda p, x: objective(p, x, ht_i, m_i), s_params, h, has_aux=True)
        dp, dh = pull(jnp.ones((), v.dtype))
        return (value + v, jax.tree.map(jnp.add, d_params, dp)), (out, dh)

    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, s_params))
    (value, d_params), (out, dh) = jax.lax.scan(body, zero, (hs_c, ht_c, m_c))
    return value, out, d_params, dh


def _forward(
    head: fused.Head, rows: int, t: int, scales_fn, s_params, hs_c, t_params, ht_c, m_c, n_tok, em_pred
):
    """_pass with the EM term normalised by its real count: first by the count predicted from the mask; when
    a tie made the set larger, once more with the count the first pass found (the set itself depends on the
    entropies alone, so the second pass keeps it). A while loop, so both passes share their buffers."""

    def run(count):
        # the ranking term's count is not known yet: its scale is taken after the pass (this one is unused)
        counts = {"loss/direct": n_tok, "loss/em": count, "loss/indirect": jnp.ones((), jnp.float32)}
        scale = jax.lax.stop_gradient(scales_fn(counts))
        return _pass(head, rows, t, s_params, hs_c, t_params, ht_c, m_c, scale)

    def body(state):
        attempt, _, seen, _ = state
        result = run(seen)
        return attempt + 1, seen, jnp.sum(result[1][1]), result

    def again(state):
        attempt, used, seen, _ = state
        return (attempt == 0) | ((attempt == 1) & (seen != used))

    shapes = jax.eval_shape(run, em_pred)
    start = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    init = (jnp.zeros((), jnp.int32), jnp.float32(-1.0), jnp.asarray(em_pred, jnp.float32), start)
    *_, result = jax.lax.while_loop(again, body, init)
    return result


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def row_stats(
    head: fused.Head, rows: int, t: int, scales_fn, s_params, hs_c, t_params, ht_c, m_c, n_tok, em_pred
):
    """(Σ_tok coef·stat of the direct and EM terms, per-chunk outputs); gradient w.r.t. s_params and hs_c."""
    value, out, _, _ = _forward(head, rows, t, scales_fn, s_params, hs_c, t_params, ht_c, m_c, n_tok, em_pred)
    return value, jax.lax.stop_gradient(out)


def _fwd(head, rows, t, scales_fn, s_params, hs_c, t_params, ht_c, m_c, n_tok, em_pred):
    args = (s_params, hs_c, t_params, ht_c, m_c, n_tok, em_pred)
    value, out, d_params, dh = _forward(head, rows, t, scales_fn, *args)
    return (value, out), (d_params, dh.astype(hs_c.dtype), t_params, ht_c, m_c, n_tok, em_pred)


def _bwd(head, rows, t, scales_fn, res, cts):
    d_params, dh, *rest = res
    ct = cts[0]  # the per-token outputs are statistics and selections: no gradient
    grow = lambda g: (g * ct).astype(g.dtype)
    return (jax.tree.map(grow, d_params), grow(dh), *jax.tree.map(jnp.zeros_like, tuple(rest)))


row_stats.defvjp(_fwd, _bwd)


def _ranking_sum(head: fused.Head, rows_fn, s_params, hs, ids, order, opener) -> Array:
    """Σ_opener ranking NLL from the student's logits at its top-k ids only (differentiable: N·k·D work)."""
    n = ids.shape[0] * ids.shape[1]
    z_at = rows_fn(s_params, hs.reshape(n, hs.shape[-1]), ids.reshape(n, -1))
    z_at = fused.round_logits(z_at, head.logits_dtype)
    nll = sel.ranked_pl_nll(_ranked(z_at, order.reshape(n, -1)))
    return terms.sum_where(nll, opener.reshape(n))


def fused_kd_rows(head: fused.Head, rows_fn, s_params, hs, t_params, ht, mask, scales_fn):
    """(stats [B, T], selections, value) as fused.fused_kd gives them, without the entropy pre-pass."""
    cfg = head.cfg
    b, t = jnp.shape(mask)
    m = jnp.asarray(mask, jnp.float32)
    rows = b if int(head.chunk_size) == 0 else max(1, min(b, int(head.chunk_size) // t))
    n_chunks = -(-b // rows)
    em_pred = sel.em_count_without_ties(m, cfg.em_frac) if cfg.use_em else jnp.zeros((), jnp.float32)
    to_c = lambda x: to_row_chunks(x, rows, n_chunks)
    args = (s_params, to_c(hs), t_params, to_c(jax.lax.stop_gradient(ht)), to_c(m), jnp.sum(m), em_pred)
    value, (st, em, extra) = row_stats(head, rows, t, scales_fn, *args)
    back = lambda x: from_row_chunks(x, rows, t, b)
    stats = jax.tree.map(back, st)
    sel_masks = {"em_set": back(em), "opener": sel.opener_mask(stats["h_s"], m, cfg.opener_frac)}
    if cfg.use_indirect:
        s_ind = jax.lax.stop_gradient(scales_fn(fused.counts_of(m, sel_masks))["loss/indirect"])
        ids, order = back(extra["ids"]), back(extra["order"])
        value = value + s_ind * _ranking_sum(head, rows_fn, s_params, hs, ids, order, sel_masks["opener"])
    return stats, sel_masks, value
