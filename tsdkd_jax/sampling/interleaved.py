"""Speculative KD's interleaved sampling (Xu et al., ICLR 2025) in one compiled loop.

The student proposes each next token; the teacher keeps it when it is among the teacher's top K tokens and
otherwise replaces it with a token sampled from the teacher (the paper's Algorithm 1). Both models are
prefilled on the same left-padded prompts, each into its own KV cache, and every `lax.while_loop` step feeds
the chosen token to both (`decode_step`), so the teacher always judges the very prefix the student continues
from, with no host round trip per token. Shapes, EOS handling, masks and weight handling are the plain
sampler's (generate.py): N tokens cost N - 1 decode steps of each model.

The rule (`interleave`), per row, from the two models' next-token logits:
  proposal  y_s ~ the student's sampling distribution (temperature, top-k, top-p of the call);
  kept      iff fewer than K tokens have a strictly larger *raw* teacher logit (y_s is in the teacher's top K;
            ties at the K-th value are kept, as in the top-k filter). Raw logits: the sampling knobs never
            change which proposals are kept;
  else      y_t ~ the teacher's sampling distribution (the same knobs), drawn with its own noise.
K ≥ V keeps every proposal (on-policy sampling), K = 0 replaces every one (teacher sampling). Keys: step i's
proposals use fold_in(fold_in(rng, 0), i) and its replacements fold_in(fold_in(rng, 1), i), the keys
`generate` uses with rng = fold_in(rng, 0) resp. fold_in(rng, 1), so the two limits are exactly those
samplers' draws. Independent noise matters: a shared draw would correlate y_s and y_t and change the
distribution of the replaced tokens.

Vocabularies: the rule sees the ids both models have (the smaller vocabulary; a teacher's padded extra rows
are cut), so a replacement is never an id the student cannot embed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.sharding import PartitionSpec

from tsdkd_jax.parallel.sharding import logical_to_spec
from tsdkd_jax.sampling.decode_weights import decode_weights
from tsdkd_jax.sampling.distributions import choose
from tsdkd_jax.sampling.generate import (  # the plain sampler's pieces, shared
    DEFAULT_TOP_K_CAP,
    _eos_array,
    _knobs,
    _place_prompts,
    _prefill,
)
from tsdkd_jax.sampling.host_inputs import check_inputs


@struct.dataclass
class InterleavedOutput:
    """tokens [B,N] int32 (pad after the first EOS); mask [B,N] int32 as `generate`'s; kept [B,N] int32, 1
    where the token is the student's own proposal (0 where the teacher replaced it, and where mask is 0);
    num_steps [] int32."""

    tokens: jnp.ndarray
    mask: jnp.ndarray
    kept: jnp.ndarray
    num_steps: jnp.ndarray


def in_top_k(logits_BV, tok_B, k):
    """Whether each row's token is among its top k logits: fewer than k logits strictly larger (ties kept)."""
    own_B1 = jnp.take_along_axis(logits_BV, tok_B[:, None], axis=1)
    return jnp.sum(logits_BV > own_B1, axis=1) < k


def interleave(s_logits_BV, t_logits_BV, params, key_s, key_t, k, k_max: int, row_ids_B=None):
    """SKD's rule (module docstring) on logits [B, V] → (tokens [B] int32, kept [B] bool: the proposal
    stayed). k: a scalar or per-row [B] K; key_s / key_t: the proposals' and the replacements' keys (row b
    folds in row_ids_B[b], as `choose` does)."""
    proposal_B, _ = choose(s_logits_BV, params, key_s, k_max, row_ids_B)
    kept_B = in_top_k(t_logits_BV.astype(jnp.float32), proposal_B, k)
    replacement_B, _ = choose(t_logits_BV, params, key_t, k_max, row_ids_B)
    return jnp.where(kept_B, proposal_B, replacement_B), kept_B


def _row_rule(k_max: int, mesh, rules, batch: int, vocab: int):
    """interleave(...) per batch shard when there is a mesh (each shard's rows with the whole vocabulary)."""

    def rule(s_logits_BV, t_logits_BV, params, key_s, key_t, k, row_ids_B):
        return interleave(s_logits_BV, t_logits_BV, params, key_s, key_t, k, k_max, row_ids_B)

    if mesh is None:
        return rule
    rows = logical_to_spec(("batch", None), mesh, rules, (batch, vocab))
    row, rep = PartitionSpec(rows[0]), PartitionSpec()
    return jax.shard_map(
        rule,
        mesh=mesh,
        in_specs=(rows, rows, row, rep, rep, rep, row),
        out_specs=(row, row),
        check_vma=False,  # rows are independent (as in generate._row_chooser)
    )


@struct.dataclass
class _Loop:
    step: jnp.ndarray  # [] next column to fill
    last_B: jnp.ndarray  # token chosen at step - 1 (fed to both models)
    done_B: jnp.ndarray
    tokens_BN: jnp.ndarray
    mask_BN: jnp.ndarray
    kept_BN: jnp.ndarray
    s_cache: object
    t_cache: object


def _write(s: _Loop, tok_B, kept_B, done_B, s_cache, t_cache) -> _Loop:
    at = (0, s.step)
    put = lambda buf, col: jax.lax.dynamic_update_slice(buf, col.astype(jnp.int32)[:, None], at)
    return _Loop(
        step=s.step + 1, last_B=tok_B, done_B=done_B, tokens_BN=put(s.tokens_BN, tok_B),
        mask_BN=put(s.mask_BN, ~s.done_B), kept_BN=put(s.kept_BN, kept_B), s_cache=s_cache, t_cache=t_cache,
    )  # fmt: skip


def _generate(models, states, prompt_ids, prompt_mask, params, k, eos_ids, pad_id, rng, *, max_new_tokens,
              k_max, mesh, rules, gather_weights):  # fmt: skip
    rules = dict(rules) if rules is not None else None
    B, N = prompt_ids.shape[0], max_new_tokens
    (student, s_cache, s_logits), (teacher, t_cache, t_logits) = (
        _prefill(g, st, prompt_ids, prompt_mask, N, mesh, rules, gather_weights)
        for g, st in zip(models, states, strict=True)
    )
    v = min(student.config.vocab_size, teacher.config.vocab_size)
    rule = _row_rule(k_max, mesh, rules, B, v)
    key_s, key_t, row_ids_B = jax.random.fold_in(rng, 0), jax.random.fold_in(rng, 1), jnp.arange(B)

    def pick(step, s_logits_BV, t_logits_BV, done_B):
        keys = jax.random.fold_in(key_s, step), jax.random.fold_in(key_t, step)
        tok_B, kept_B = rule(s_logits_BV[:, :v], t_logits_BV[:, :v], params, *keys, k, row_ids_B)
        tok_B = jnp.where(done_B, pad_id, tok_B)
        new_done_B = done_B | jnp.any(tok_B[:, None] == eos_ids[None, :], axis=1)
        return tok_B, kept_B & ~done_B, new_done_B

    def body(s: _Loop) -> _Loop:
        # Rows already done feed pad as an invalid token to both models: a slot, no position.
        s_logits_BV, s_cache = student.decode_step(s.last_B, s.s_cache, ~s.done_B)
        t_logits_BV, t_cache = teacher.decode_step(s.last_B, s.t_cache, ~s.done_B)
        return _write(s, *pick(s.step, s_logits_BV, t_logits_BV, s.done_B), s_cache, t_cache)

    zeros = jnp.zeros((B, N), jnp.int32)
    s = _Loop(step=jnp.zeros((), jnp.int32), last_B=jnp.zeros((B,), jnp.int32), done_B=jnp.zeros((B,), bool),
              tokens_BN=jnp.full((B, N), pad_id, jnp.int32), mask_BN=zeros, kept_BN=zeros, s_cache=s_cache,
              t_cache=t_cache)  # fmt: skip
    s = _write(s, *pick(0, s_logits, t_logits, s.done_B), s_cache, t_cache)
    s = jax.lax.while_loop(lambda s: (s.step < N) & ~jnp.all(s.done_B), body, s)
    return InterleavedOutput(tokens=s.tokens_BN, mask=s.mask_BN, kept=s.kept_BN, num_steps=s.step)


_generate_jit = jax.jit(
    _generate, static_argnames=("models", "max_new_tokens", "k_max", "mesh", "rules", "gather_weights")
)


def generate_interleaved_from_state(
    graphdef, state, teacher_graphdef, teacher_state, prompt_ids, prompt_mask, *, accept_top_k: int,
    max_new_tokens: int, temperature=1.0, top_k=0, top_p=1.0, eos_token_ids=(), pad_token_id: int = 0,
    rng=None, top_k_cap: int = DEFAULT_TOP_K_CAP, mesh=None, rules=None, gather_weights: bool = True,
) -> InterleavedOutput:  # fmt: skip
    """SKD's interleaved samples after left-padded prompts [B,T]: the student (graphdef, state) proposes, the
    teacher keeps proposals within its top `accept_top_k` tokens and replaces the others by its own samples.

    The other arguments are `generate_from_state`'s (temperature/top_k/top_p shape both models' draws;
    temperature=0.0 makes both greedy). K is an array input: changing it never recompiles.
    """
    check_inputs(max_new_tokens, prompt_ids, prompt_mask)
    k = np.float64(accept_top_k)
    if not (np.isfinite(k) and k >= 0 and k == np.floor(k)):
        raise ValueError(f"accept_top_k must be a whole number >= 0, got {accept_top_k}")
    vocab = min(jax.tree.leaves(s["embed"])[0].shape[0] for s in (state, teacher_state))
    params, k_max, rng = _knobs(prompt_ids.shape[0], temperature, top_k, top_p, top_k_cap, vocab, rng)
    prompt_ids, prompt_mask, rules_key = _place_prompts(prompt_ids, prompt_mask, mesh, rules)
    states = (decode_weights(graphdef, state), decode_weights(teacher_graphdef, teacher_state))
    return _generate_jit(
        (graphdef, teacher_graphdef), states, jnp.asarray(prompt_ids, jnp.int32),
        jnp.asarray(prompt_mask, jnp.int32), params, np.int32(min(k, 2**31 - 1)),
        _eos_array(eos_token_ids), np.int32(pad_token_id), rng, max_new_tokens=int(max_new_tokens),
        k_max=k_max, mesh=mesh, rules=rules_key, gather_weights=bool(gather_weights),
    )  # fmt: skip


def generate_interleaved(student: nnx.Module, teacher: nnx.Module, prompt_ids, prompt_mask, **kwargs):
    """`generate_interleaved_from_state` on `nnx.split` of the two models, with its keywords (accept_top_k,
    max_new_tokens, temperature, top_k, top_p, eos_token_ids, pad_token_id, rng, ...)."""
    graphdef, state = nnx.split(student)
    t_graphdef, t_state = nnx.split(teacher)
    return generate_interleaved_from_state(graphdef, state, t_graphdef, t_state, prompt_ids, prompt_mask,
                                           **kwargs)  # fmt: skip
