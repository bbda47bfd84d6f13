"""Host-side checks and placement of the samplers' prompts, shared by generate.py, interleaved.py and mixed.py."""

from __future__ import annotations

import jax
import numpy as np


def check_inputs(max_new_tokens, prompt_ids, prompt_mask) -> None:
    if int(max_new_tokens) < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_ids.ndim != 2 or prompt_ids.shape != prompt_mask.shape:
        raise ValueError(
            f"prompt_ids {prompt_ids.shape} and prompt_mask {prompt_mask.shape} must be [B,T] alike"
        )
    check_left_padded(prompt_mask)


def check_left_padded(prompt_mask) -> None:
    if isinstance(prompt_mask, jax.core.Tracer) or (
        isinstance(prompt_mask, jax.Array) and not prompt_mask.is_fully_addressable
    ):
        return
    m = np.asarray(prompt_mask).astype(bool)
    if np.any(m.any(axis=1) & ~m[:, -1]):
        raise ValueError("prompts must be left-padded: every non-empty row of prompt_mask must end in 1")


def to_global(x, sharding):
    """Host data → a global array in `sharding` (each process passes its own rows under multi-host)."""
    if isinstance(x, jax.Array):
        return jax.device_put(x, sharding)
    if jax.process_count() > 1:
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))
    return jax.device_put(np.asarray(x), sharding)
