"""Compiled generation: one prefill of the left-padded prompts, then a `lax.while_loop` of cached decode steps.

The whole call is one jitted pure function of (graphdef, state, arrays); the static parts are the shapes
(batch, prompt bucket, max_new_tokens), the top-k cap and the mesh. Temperature, top-k, top-p, the EOS ids
(padded with -1 to a multiple of 8), pad id and the key are arrays, so a training run compiles one program
per prompt bucket (see `batching`); `trace_count()` counts the traces so tests can assert that. The knobs go
in as host NumPy arrays (jit places them, replicated): no `device_put` onto a sharding that spans hosts, which
would check their equality across processes on every call.

Loop state is an explicit pytree (`_Loop`). Step 0 samples from the prefill's last logits; each loop
iteration feeds the previous token through `decode_step` and samples the next, so N tokens cost N - 1 decode
steps and the cache holds prompt_len + N - 1 slots. The loop exits as soon as every row has emitted an EOS.

Weights. The decode loop reads a copy of the weights made at the top of the call, floating weights cast down
to the model's compute dtype on the shards where they lie (the forward casts them at use anyway, so outputs
are unchanged; no copy when nothing narrows). By default (`gather_weights=True`) that copy is, with `mesh`,
constrained to the *sampling* rules (default: the training rules with "embed" replicated), so the fsdp shards
are all-gathered once per call in the compute dtype, never per decode step; tensor-parallel axes stay
sharded. With `gather_weights=False` the copy stays sharded, and XLA gathers each block's fsdp shards (in the
compute dtype) as the layer scan reaches it, every decode step: slower, but a device never holds more than
its shards plus one block (for a teacher too big to hold whole).

With `mesh`, the batch is split over the batch axes of the rules. Token choice runs under `shard_map` on each
batch shard's rows with the whole vocabulary (XLA would otherwise gather the full [B,V] logits onto every
device for top_k), and row b's noise depends on (key, step, b) only, so the same key gives the same samples
sharded or not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.sharding import PartitionSpec

from tsdkd_jax.models.cache import KVCache
from tsdkd_jax.parallel.sharding import (
    DEFAULT_RULES,
    logical_to_sharding,
    logical_to_spec,
    state_shardings,
)
from tsdkd_jax.sampling.decode_weights import decode_weights
from tsdkd_jax.sampling.distributions import choose, make_params
from tsdkd_jax.sampling.host_inputs import check_inputs, to_global

SAMPLING_RULES = {**DEFAULT_RULES, "embed": None}
DEFAULT_TOP_K_CAP = 64


@struct.dataclass
class SampleOutput:
    """tokens [B,N] int32 (pad after the first EOS); mask [B,N] int32, 1 up to and including the first EOS;
    logprobs [B,N] f32 of each token under the sampling distribution (0 where mask is 0 or for greedy rows);
    num_steps [] int32, tokens sampled before the loop stopped (N, or fewer when every row ended early)."""

    tokens: jnp.ndarray
    mask: jnp.ndarray
    logprobs: jnp.ndarray
    num_steps: jnp.ndarray


@struct.dataclass
class _Loop:
    step: jnp.ndarray  # [] next column to fill
    last_B: jnp.ndarray  # token sampled at step - 1
    done_B: jnp.ndarray  # row has emitted an EOS
    tokens_BN: jnp.ndarray
    mask_BN: jnp.ndarray
    logprobs_BN: jnp.ndarray
    cache: KVCache


def _cache_shardings(cache: KVCache, mesh, rules) -> KVCache:
    kv = ("layers", "batch", "length", "kv_heads", "head_dim")
    names = KVCache(kv, kv, ("batch", "length"), ("batch", "length"), (), ("batch",))
    return jax.tree.map(
        lambda n, x: logical_to_sharding(n, mesh, rules, x.shape),
        names,
        cache,
        is_leaf=lambda n: isinstance(n, tuple),
    )


def _prefill(graphdef, state, prompt_ids, prompt_mask, n_new: int, mesh, rules, gather_weights):
    """(model, KV cache after the prompts, last prompt logits [B, V])."""
    B, T = prompt_ids.shape
    if gather_weights and mesh is not None:
        state = jax.lax.with_sharding_constraint(state, state_shardings(state, mesh, rules))
    model = nnx.merge(graphdef, state)
    cache = model.init_cache(B, T + n_new - 1)
    if mesh is not None:
        cache = jax.lax.with_sharding_constraint(cache, _cache_shardings(cache, mesh, rules))
    logits_BV, cache = model.prefill(prompt_ids, prompt_mask, cache)
    return model, cache, logits_BV


def _row_chooser(params, k_max: int, mesh, rules, batch: int, vocab: int):
    """choose(logits_BV, params, key, k_max, row_ids_B), per batch shard when there is a mesh."""

    def choose_rows(logits_BV, params, key, row_ids_B):
        return choose(logits_BV, params, key, k_max, row_ids_B)

    if mesh is None:
        return choose_rows
    # Each batch shard chooses its own rows with the whole vocabulary: without shard_map XLA gathers the
    # full [B,V] logits onto every device for top_k.
    rows = logical_to_spec(("batch", None), mesh, rules, (batch, vocab))
    row = PartitionSpec(rows[0])
    return jax.shard_map(
        choose_rows,
        mesh=mesh,
        in_specs=(rows, row, PartitionSpec(), row),
        out_specs=(row, row),
        check_vma=False,  # rows are independent; the bisection's fresh carries need no annotation
    )


def _write(s: _Loop, tok_B, logp_B, done_B, cache) -> _Loop:
    """Column s.step of the outputs; the mask covers every token up to and including a row's first EOS."""
    at = (0, s.step)
    return _Loop(
        step=s.step + 1,
        last_B=tok_B,
        done_B=done_B,
        tokens_BN=jax.lax.dynamic_update_slice(s.tokens_BN, tok_B[:, None], at),
        mask_BN=jax.lax.dynamic_update_slice(s.mask_BN, (~s.done_B).astype(jnp.int32)[:, None], at),
        logprobs_BN=jax.lax.dynamic_update_slice(s.logprobs_BN, logp_B[:, None], at),
        cache=cache,
    )


def _start(B: int, N: int, pad_id, cache) -> _Loop:
    """The loop state before step 0: no row done, tokens all pad, mask and logprobs 0."""
    return _Loop(
        step=jnp.zeros((), jnp.int32),
        last_B=jnp.zeros((B,), jnp.int32),
        done_B=jnp.zeros((B,), bool),
        tokens_BN=jnp.full((B, N), pad_id, jnp.int32),
        mask_BN=jnp.zeros((B, N), jnp.int32),
        logprobs_BN=jnp.zeros((B, N), jnp.float32),
        cache=cache,
    )


def _generate(
    graphdef,
    state,
    prompt_ids,
    prompt_mask,
    params,
    eos_ids,
    pad_id,
    rng,
    *,
    max_new_tokens,
    k_max,
    mesh,
    rules,
    gather_weights,
):
    rules = dict(rules) if rules is not None else None
    B, N = prompt_ids.shape[0], max_new_tokens
    model, cache, logits_BV = _prefill(
        graphdef, state, prompt_ids, prompt_mask, N, mesh, rules, gather_weights
    )
    choose_rows = _row_chooser(params, k_max, mesh, rules, B, model.config.vocab_size)
    row_ids_B = jnp.arange(B)

    def pick(step, logits_BV, done_B):
        tok_B, logp_B = choose_rows(logits_BV, params, jax.random.fold_in(rng, step), row_ids_B)
        tok_B = jnp.where(done_B, pad_id, tok_B)
        logp_B = jnp.where(done_B, 0.0, logp_B)
        new_done_B = done_B | jnp.any(tok_B[:, None] == eos_ids[None, :], axis=1)
        return tok_B, logp_B, new_done_B

    def cond(s: _Loop):
        return (s.step < N) & ~jnp.all(s.done_B)

    def body(s: _Loop) -> _Loop:
        # Rows already done feed pad as an invalid token: it takes a slot but no position.
        logits_BV, cache = model.decode_step(s.last_B, s.cache, ~s.done_B)
        return _write(s, *pick(s.step, logits_BV, s.done_B), cache)

    s = _start(B, N, pad_id, cache)
    s = _write(s, *pick(0, logits_BV, s.done_B), cache)
    s = jax.lax.while_loop(cond, body, s)
    return SampleOutput(tokens=s.tokens_BN, mask=s.mask_BN, logprobs=s.logprobs_BN, num_steps=s.step)


_generate_jit = jax.jit(
    _generate, static_argnames=("graphdef", "max_new_tokens", "k_max", "mesh", "rules", "gather_weights")
)


def _knobs(batch: int, temperature, top_k, top_p, top_k_cap: int, vocab: int, rng):
    """(SamplingParams [batch], the static top-k cap, the key); rng may be None only when every row is greedy."""
    params = make_params(batch, temperature, top_k, top_p)
    k_max = _k_cap(int(np.max(params.top_k)), int(top_k_cap), vocab)
    if rng is None:
        if np.any(params.temperature > 0):
            raise ValueError("rng is required unless temperature=0.0 (greedy)")
        rng = jax.random.key(0)
    return params, k_max, rng


def _place_prompts(prompt_ids, prompt_mask, mesh, rules):
    """(prompt_ids, prompt_mask, rules_key): without a mesh the prompts as given and no rules; with one, the
    prompts as global arrays split over the batch axes of `rules` (default SAMPLING_RULES), and the rules as
    a sorted tuple (hashable, for jit's static arguments)."""
    if mesh is None:
        return prompt_ids, prompt_mask, None
    rules = SAMPLING_RULES if rules is None else rules
    batch = logical_to_sharding(("batch", None), mesh, rules, prompt_ids.shape)
    return to_global(prompt_ids, batch), to_global(prompt_mask, batch), tuple(sorted(rules.items()))


def _eos_array(eos_token_ids) -> np.ndarray:
    """The EOS ids padded with -1 (never a token) to a multiple of 8, so their number rarely changes the
    compiled program's shape."""
    eos = np.asarray(tuple(eos_token_ids), np.int32).reshape(-1)
    return np.pad(eos, (0, max(8, -(-len(eos) // 8) * 8) - len(eos)), constant_values=-1)


def generate_from_state(
    graphdef,
    state,
    prompt_ids,
    prompt_mask,
    *,
    max_new_tokens: int,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    eos_token_ids=(),
    pad_token_id: int = 0,
    rng=None,
    top_k_cap: int = DEFAULT_TOP_K_CAP,
    mesh=None,
    rules=None,
    gather_weights: bool = True,
) -> SampleOutput:
    """Sample `max_new_tokens` per row after left-padded prompts [B,T] from a split model; temperature=0.0
    means greedy (`generate` takes the model itself).

    temperature/top_k/top_p are scalars or per-row [B] values. top_k ≤ top_k_cap compiles once; a larger
    top_k raises the cap to the next power of two (one more program). `rng` is required unless greedy.
    `mesh` shards the batch over the batch axes of `rules` (default SAMPLING_RULES). gather_weights=True
    decodes from one compute-dtype copy of the weights, fsdp shards all-gathered once per call; False leaves
    them sharded and gathers one block at a time, every step (less memory, slower).
    """
    check_inputs(max_new_tokens, prompt_ids, prompt_mask)
    vocab = jax.tree.leaves(state["embed"])[0].shape[0]
    params, k_max, rng = _knobs(prompt_ids.shape[0], temperature, top_k, top_p, top_k_cap, vocab, rng)
    eos = _eos_array(eos_token_ids)
    prompt_ids, prompt_mask, rules_key = _place_prompts(prompt_ids, prompt_mask, mesh, rules)
    state = decode_weights(graphdef, state)  # gathered or not: per-step gathers move bf16 too
    # params, eos and pad stay NumPy: jit places them replicated, each process from its own (equal) copy.
    return _generate_jit(
        graphdef,
        state,
        jnp.asarray(prompt_ids, jnp.int32),
        jnp.asarray(prompt_mask, jnp.int32),
        params,
        eos,
        np.int32(pad_token_id),
        rng,
        max_new_tokens=int(max_new_tokens),
        k_max=k_max,
        mesh=mesh,
        rules=rules_key,
        gather_weights=bool(gather_weights),
    )


def generate(model: nnx.Module, prompt_ids, prompt_mask, **kwargs) -> SampleOutput:
    """`generate_from_state` on `nnx.split(model)`, with its keywords: generate(model, prompt_ids, prompt_mask,
    *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, eos_token_ids=(), pad_token_id=0, rng=None,
    top_k_cap, mesh=None, rules=None, gather_weights=True)."""
    graphdef, state = nnx.split(model)
    return generate_from_state(graphdef, state, prompt_ids, prompt_mask, **kwargs)


def _k_cap(max_top_k: int, cap: int, vocab: int) -> int:
    """Static top-k cap: `cap`, raised to the next power of two ≥ the largest top_k, at most V."""
    if max_top_k > cap:
        cap = 1 << (max_top_k - 1).bit_length()
    return min(cap, vocab)
