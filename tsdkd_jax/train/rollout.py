"""Where a step's responses come from: the λ coin, the student's (or teacher's) samples, or the dataset.

Every decision is a function of (seed, step) only, so all hosts take the same branch and a resumed run draws
exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from tsdkd_jax import sampling
from tsdkd_jax.sampling import interleaved
from tsdkd_jax.train import methods


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


def sample_interleaved(t, prompt_ids, prompt_mask, key, k: int):
    """SKD's samples for Trainer `t`: the current student proposes, the teacher replaces proposals outside
    its top k, in one sampler call (sampling/interleaved.py) → (tokens, mask, {"skd/kept_frac": ...})."""
    states = [nnx.split(nnx.merge(g, p))[1] for g, p in ((t.graphdef, t.state["params"]),
                                                        (t.teacher_graphdef, t.teacher_params))]  # fmt: skip
    s = t.config.sampling
    out = interleaved.generate_interleaved_from_state(
        t.graphdef, states[0], t.teacher_graphdef, states[1], prompt_ids, prompt_mask, accept_top_k=k,
        max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
        eos_token_ids=tuple(t.eos_ids), pad_token_id=t.pad_id, rng=key, mesh=t.mesh, rules=t.sampling_rules,
        gather_weights=s.gather_weights,
    )  # fmt: skip
    # Sums over the global batch are replicated scalars: every host can read them.
    kept, total = float(jax.numpy.sum(out.kept)), float(jax.numpy.sum(out.mask))
    return out.tokens, out.mask, {"skd/kept_frac": kept / max(total, 1.0)}


def sample_mixed(t, params, prompt_ids, prompt_mask, key):
    """Trainer `t`'s student samples drawn from α·p_teacher + (1 − α)·q_student (MiniLLM's teacher-mixed
    sampling; α from the method table's teacher_mix) at temperature 1 over the full vocabulary."""
    c = t.config
    out = sampling.generate_mixed(
        nnx.split(nnx.merge(t.graphdef, params)),
        nnx.split(nnx.merge(t.teacher_graphdef, t.teacher_params)),
        prompt_ids, prompt_mask, alpha=methods.of(c).teacher_mix(c.loss), max_new_tokens=c.sampling.max_new_tokens,
        rng=key, eos_token_ids=tuple(t.eos_ids), pad_token_id=t.pad_id, mesh=t.mesh, rules=t.sampling_rules,
        gather_weights=c.sampling.gather_weights,
    )  # fmt: skip
    return out.tokens, out.mask


def step_batch(t, step: int, host_batch) -> tuple[dict, float, bool]:
    """The step's global batch for Trainer `t`: its prompts, and responses sampled by whoever the method
    table names for this step (methods.responder) or the dataset's; with the sampling time and whether it
    sampled."""
    c = t.config
    prompt_ids, prompt_mask = (t.to_global(host_batch[k]) for k in ("prompt_ids", "prompt_mask"))
    t0 = time.perf_counter()
    who = methods.responder(c, on_policy(c.seed, step, c.loss.lam))
    sampled_by = {
        "teacher": (t.teacher_graphdef, t.teacher_params),
        "student": (t.graphdef, t.state["params"]),
        None: None,
    }[who]
    t.sample_stats = {}  # the step's sampler statistics, logged with its row (diagnostics.response_metrics)
    if sampled_by is not None:
        key = sampling.sample_key(c.seed, step, 0)
        if who == "student" and (k := methods.interleave_k(c)) is not None:  # SKD: the teacher in the loop
            tokens, mask, t.sample_stats = sample_interleaved(t, prompt_ids, prompt_mask, key, k)
        elif who == "student" and methods.of(c).teacher_mix is not None:  # MiniLLM's teacher-mixed rollouts
            tokens, mask = sample_mixed(t, sampled_by[1], prompt_ids, prompt_mask, key)
        else:
            tokens, mask = t.sample(*sampled_by, prompt_ids, prompt_mask, key)
        jax.block_until_ready(tokens)  # sampling depends on the previous update anyway
    else:
        ids, m = pad_responses(host_batch, c.sampling.max_new_tokens, t.pad_id)
        tokens, mask = t.to_global(ids), t.to_global(m)
    batch = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "response_ids": tokens,
        "response_mask": mask,
    }
    return batch, time.perf_counter() - t0, sampled_by is not None
