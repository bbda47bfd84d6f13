"""Where a step's responses come from: the λ coin, the student's (or teacher's) samples, or the dataset.

Every decision is a function of (seed, step) only, so all hosts take the same branch and a resumed run draws
exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from tsdkd_jax import sampling


def on_policy(seed: int, step: int, lam: float) -> bool:
    """The λ coin of `step`: True → responses are sampled this step."""
    if lam >= 1.0:
        return True
    if lam <= 0.0:
        return False
    return bool(np.random.default_rng([seed, step, 0x5EED]).random() < lam)


def to_global(x: np.ndarray, mesh, batch_axes) -> jax.Array:
    """This host's rows → a global array with the batch axis over the mesh's data axes."""
    sharding = NamedSharding(mesh, PartitionSpec(batch_axes, *([None] * (x.ndim - 1))))
    if jax.process_count() > 1:
        return jax.make_array_from_process_local_data(sharding, x)
    return jax.device_put(x, sharding)


def to_host(tree):
    """Global arrays → whole NumPy arrays on every host (an all-gather when they span other processes)."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def pad_responses(batch: dict[str, np.ndarray], n: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Dataset responses right-padded to the step's response length n."""
    ids, mask = batch["response_ids"], batch["response_mask"]
    extra = n - ids.shape[1]
    ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=pad_id)
    return ids.astype(np.int32), np.pad(mask, ((0, 0), (0, extra))).astype(np.int32)


def sample(graphdef, params, prompt_ids, prompt_mask, key, *, config, eos_ids, pad_id, mesh, rules):
    """One sampler call for the whole global batch with the model's current parameters."""
    state = nnx.split(nnx.merge(graphdef, params))[1]  # Variables carry the logical axis names
    s = config.sampling
    out = sampling.generate_from_state(
        graphdef,
        state,
        prompt_ids,
        prompt_mask,
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p,
        eos_token_ids=tuple(eos_ids),
        pad_token_id=pad_id,
        rng=key,
        mesh=mesh,
        rules=rules,
        gather_weights=s.gather_weights,
    )
    return out.tokens, out.mask
