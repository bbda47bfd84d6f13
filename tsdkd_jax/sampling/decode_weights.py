"""The weights the decode loop reads: the model's state in its compute dtype, cast where the shards lie."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def _decode_dtype(path, x, compute_dtype):
    """The dtype of weight `x` in the decode copy: the compute dtype where that is narrower, norms excepted.

    Exact: the forward casts every matrix, embedding table and bias to the compute dtype at use, while norm
    scales are read in float32 (layers.rms_norm), so they keep their dtype (and are tiny). A wider compute
    dtype (bf16 weights, fp32 compute) leaves the weights as they are: the narrow copy is the smaller one.
    """
    is_norm = any("norm" in str(getattr(k, "key", "")) for k in path)
    narrower = jnp.issubdtype(x.dtype, jnp.floating) and jnp.dtype(compute_dtype).itemsize < x.dtype.itemsize
    return jnp.dtype(compute_dtype) if narrower and not is_norm else x.dtype


def _in_compute_dtype(state, compute_dtype):
    return jax.tree_util.tree_map_with_path(lambda p, x: x.astype(_decode_dtype(p, x, compute_dtype)), state)


# Its own program, so the cast runs on the shards where they lie: inside `_generate`, XLA's sharding
# propagation puts the convert after the all-gather, which then moves and holds the wide weights.
_in_compute_dtype_jit = jax.jit(_in_compute_dtype, static_argnums=1)


def decode_weights(graphdef, state):
    """The weights the decode loop reads (gathered or not): `state` in the model's compute dtype."""
    dtype = nnx.merge(graphdef, state).dtype
    leaves = jax.tree_util.tree_leaves_with_path(state)
    if all(_decode_dtype(p, x, dtype) == x.dtype for p, x in leaves):
        return state  # nothing to narrow (a bf16 teacher, an fp32 student): no extra program
    return _in_compute_dtype_jit(state, dtype)
