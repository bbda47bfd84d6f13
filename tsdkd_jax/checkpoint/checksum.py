"""Checksums and the shape/dtype structure of a train state, stored with every step and checked on restore.

Why: a step whose array bytes were damaged after it was finalized (a bad disk, a copy cut short, zeros
written over a data file) can still decode; without a check it restores and the run fails steps later as a
"non-finite loss" that points at nothing. Each leaf's checksum is computed on device, from the array's bits:
every element (its bit pattern and its flat index) is mixed through a bijective integer hash and the results
are summed modulo 2**32, twice with different constants. Integer sums are associative, so the value does not
depend on the mesh or sharding (a step saved on mesh A and restored on mesh B agrees), and changing any one
element always changes the sum. Collective under several processes: call it on every process.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_SEEDS = ((0x85EBCA6B, 0xC2B2AE35), (0x27D4EB2F, 0x165667B1))


def _words(x: jax.Array) -> jax.Array:
    """The leaf's bits as uint32 (64-bit elements give two words each)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    width = jnp.dtype(x.dtype).itemsize
    if width == 4:
        return lax.bitcast_convert_type(x, jnp.uint32)
    if width == 8:
        return lax.bitcast_convert_type(x, jnp.uint32)  # trailing axis of 2
    unsigned = {1: jnp.uint8, 2: jnp.uint16}[width]
    return lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
    """Row-major flat index of every element (uint32, wrapping), built per axis so it shards like the data."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride & 0xFFFFFFFF)
        stride *= shape[axis]
    return index


def _mix(v: jax.Array, index: jax.Array, a: int, b: int) -> jax.Array:
    # Each step (add, odd multiply, xor-shift) is a bijection of v for a fixed index.
    h = (v + index * jnp.uint32(b)) * jnp.uint32(a)
    h = h ^ (h >> 15)
    h = h * jnp.uint32((a ^ b) | 1)
    return h ^ (h >> 13)


@jax.jit
def _checksums(leaves):
    out = []
    for x in leaves:
        words = _words(x)
        index = _flat_index(words.shape)
        out.append(jnp.stack([jnp.sum(_mix(words, index, a, b), dtype=jnp.uint32) for a, b in _SEEDS]))
    return out


def leaf_names(tree: Any) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def checksums(tree: Any) -> dict[str, str]:
    """{leaf path: 16 hex digits} for every array leaf of `tree`."""
    leaves = jax.tree.leaves(tree)
    values = jax.device_get(_checksums(leaves)) if leaves else []
    return {name: f"{int(v[0]):08x}{int(v[1]):08x}" for name, v in zip(leaf_names(tree), values, strict=True)}


def structure(tree: Any) -> dict[str, str]:
    """{leaf path: "dtype[shape]"} of `tree` (arrays or ShapeDtypeStructs)."""
    leaves = jax.tree.leaves(tree)
    return {name: f"{x.dtype}{list(x.shape)}" for name, x in zip(leaf_names(tree), leaves, strict=True)}


def differences(saved: dict[str, str], current: dict[str, str], limit: int = 5) -> list[str]:
    """Human-readable differences between two {leaf: value} dicts (at most `limit`, then a count)."""
    lines = [f"{k}: saved {saved.get(k, 'absent')}, now {current.get(k, 'absent')}"
             for k in sorted(saved.keys() | current.keys()) if saved.get(k) != current.get(k)]  # fmt: skip
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])
