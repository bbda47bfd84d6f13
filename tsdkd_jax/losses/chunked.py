"""The TSD-KD loss from final hidden states without ever building [B, T, V] logits.

Tokens are flattened (N = B·T), padded to a multiple of the chunk size and scanned over in chunks; the
chunk body (unembed → logits [C, V] → per-token statistics) is wrapped in jax.checkpoint, so the backward
pass recomputes each chunk's logits instead of storing them: peak memory ∝ chunk × V. The per-token
statistics come back as [B, T] vectors and the selections (gate, opener, EM quantiles) are applied on those
by the same loss_from_stats as the full-logit tsdkd_loss, so both give identical results.

Chunk layout: chunk i holds tokens {i, i + n_chunks, i + 2·n_chunks, ...} (a reshape [C, n_chunks] of the
flat tokens, then a transpose), so with tokens sharded over the data axis every chunk is itself spread
evenly over the devices and each device works on local tokens only.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from tsdkd_jax.losses import tsdkd
from tsdkd_jax.losses.divergences import as_f32
from tsdkd_jax.losses.selection import TOPK_IDS

Array = jax.Array
VOCAB_POLICIES = ("pad_student", "truncate_teacher")


def align_vocab(
    student_logits: Array, teacher_logits: Array, policy: str = "pad_student"
) -> tuple[Array, Array]:
    """Bring student [..., V_S] and teacher [..., V_T] logits onto one vocabulary (needs V_T ≥ V_S).

    pad_student: student logits get -inf for the ids it lacks (probability exactly 0; the divergences are
      NaN-free at -inf, but KL(p_T‖p_S), i.e. divergence="fkl" or beta=0, is +inf if the teacher puts mass on
      those ids: use truncate_teacher there).
    truncate_teacher: drop teacher ids ≥ V_S; the teacher's softmax renormalises over the rest.
    """
    if policy not in VOCAB_POLICIES:
        raise ValueError(f"vocab_policy must be one of {VOCAB_POLICIES}, got {policy!r}")
    vs, vt = student_logits.shape[-1], teacher_logits.shape[-1]
    if vs == vt:
        return student_logits, teacher_logits
    if vs > vt:
        raise ValueError(f"student vocab ({vs}) is larger than the teacher's ({vt}); resize the teacher side")
    if policy == "truncate_teacher":
        return student_logits, teacher_logits[..., :vs]
    pad = jnp.full(student_logits.shape[:-1] + (vt - vs,), -jnp.inf, student_logits.dtype)
    return jnp.concatenate([student_logits, pad], axis=-1), teacher_logits


def chunked_tsdkd_loss(
    student_hidden: Array,
    teacher_hidden: Array,
    response_mask: Array,
    *,
    student_unembed: Callable[[Array], Array],
    teacher_unembed: Callable[[Array], Array],
    chunk_size: int = 512,
    vocab_policy: str = "pad_student",
    **loss_kwargs,
) -> tuple[Array, dict[str, Array]]:
    """TSD-KD loss from hidden states [B, T, D_S], [B, T, D_T] and unembed callables [N, D] → [N, V].

    The callables may close over their weights (gradients flow to the student's and to student_hidden) and
    may include soft-capping; the teacher side is stop-gradiented. loss_kwargs are tsdkd_loss's.
    """
    cfg = tsdkd.make_config(**loss_kwargs)
    if vocab_policy not in VOCAB_POLICIES:
        raise ValueError(f"vocab_policy must be one of {VOCAB_POLICIES}, got {vocab_policy!r}")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer ≥ 1, got {chunk_size!r}")
    b, t = jnp.shape(response_mask)
    if jnp.shape(student_hidden)[:2] != (b, t) or jnp.shape(teacher_hidden)[:2] != (b, t):
        raise ValueError(
            f"hidden states {jnp.shape(student_hidden)}, {jnp.shape(teacher_hidden)} do not match mask [{b}, {t}]"
        )

    def body(hs_CD, ht_CD):
        z_CV = as_f32(student_unembed(hs_CD))
        u_CV = jax.lax.stop_gradient(as_f32(teacher_unembed(ht_CD)))
        z_CV, u_CV = align_vocab(z_CV, u_CV, vocab_policy)
        return tsdkd.token_stats(z_CV, u_CV, cfg)

    stats_BT = chunked_map(body, (student_hidden, jax.lax.stop_gradient(teacher_hidden)), chunk_size)
    return tsdkd.loss_from_stats(stats_BT, response_mask, cfg)


def chunked_map(fn: Callable[..., dict[str, Array]], per_token: tuple[Array, ...], chunk_size: int) -> dict:
    """fn over token chunks of [B, T, ...] inputs → dict of [B, T] per-token values (the one chunked scan).

    Each chunk's body is rematerialised in the backward pass (peak memory ∝ chunk × V, never [B, T, V])
    except the student's top-k ids (selection.TOPK_IDS, [C, k] ints per chunk): saving them spares the
    backward pass a second top-k over the whole vocabulary.
    """
    b, t = per_token[0].shape[:2]
    n_tok = b * t
    chunk = min(int(chunk_size), n_tok)
    n_chunks = -(-n_tok // chunk)

    def body(carry, xs):
        return carry, fn(*xs)

    policy = jax.checkpoint_policies.save_only_these_names(TOPK_IDS)
    remat = jax.checkpoint(body, prevent_cse=False, policy=policy)
    flat = lambda x: to_chunks(x.reshape(n_tok, *x.shape[2:]), chunk, n_chunks)
    _, out = jax.lax.scan(remat, None, tuple(map(flat, per_token)))
    return {k: from_chunks(v, n_tok).reshape(b, t) for k, v in out.items()}


def to_chunks(flat: Array, chunk: int, n_chunks: int) -> Array:
    """Flat tokens [N, ...] → [n_chunks, chunk, ...], zero-padded; chunk i holds tokens i, i + n_chunks, ...

    Strided, so that with tokens sharded over devices every chunk is spread over all of them.
    """
    n_tok = flat.shape[0]
    flat = jnp.pad(flat, [(0, n_chunks * chunk - n_tok)] + [(0, 0)] * (flat.ndim - 1))
    return flat.reshape(chunk, n_chunks, *flat.shape[1:]).swapaxes(0, 1)


def from_chunks(chunks: Array, n_tok: int) -> Array:
    """The inverse of to_chunks: [n_chunks, chunk, ...] → flat tokens [n_tok, ...]."""
    flat = chunks.swapaxes(0, 1)
    return flat.reshape(-1, *flat.shape[2:])[:n_tok]
