"""KV cache pytree: preallocated to max_len so cached decoding jits with static shapes."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    """Keys/values for every layer plus per-slot bookkeeping.

    k, v:          [L, B, S, K, H] keys (after RoPE) and values, S = max_len slots
    positions:     [B, S] int32 RoPE position of the token stored in each slot
    valid:         [B, S] bool, slot holds a real (non-pad, token_valid) token
    index:         [] int32, next slot to write (shared by all rows)
    next_position: [B] int32, position the next valid token of each row gets
    """

    k: jnp.ndarray
    v: jnp.ndarray
    positions: jnp.ndarray
    valid: jnp.ndarray
    index: jnp.ndarray
    next_position: jnp.ndarray

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @classmethod
    def zeros(cls, num_layers, batch_size, max_len, num_kv_heads, head_dim, dtype) -> KVCache:
        shape = (num_layers, batch_size, max_len, num_kv_heads, head_dim)
        return cls(
            k=jnp.zeros(shape, dtype),
            v=jnp.zeros(shape, dtype),
            positions=jnp.zeros((batch_size, max_len), jnp.int32),
            valid=jnp.zeros((batch_size, max_len), bool),
            index=jnp.zeros((), jnp.int32),
            next_position=jnp.zeros((batch_size,), jnp.int32),
        )
