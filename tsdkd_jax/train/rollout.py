"""Where a step's responses come from: the λ coin, the student's (or teacher's) samples, or the dataset.

Every decision is a function of the run's key (the state's saved `rng`, made from the config's seed) and the
step only — big_vision's `fold_in(rng, step)` — so all hosts take the same branch and a resumed run draws
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
from tsdkd_jax.train import buckets, methods

# Streams folded into a step's key: the sampler's (0, as sampling.sample_key(seed, step, 0) folds) and the coin's.
_SAMPLE, _COIN = 0, 1


def run_key(state) -> np.ndarray:
    """The run's key: the train state's saved `rng` (key data) on the host, read once per loop (the step
    never changes it)."""
    return np.asarray(to_host(state["rng"]))


def sample_key(key: np.ndarray, step: int) -> jax.Array:
    """The sampler's key of `step`: fold_in(fold_in(key, step), 0), i.e. sampling.sample_key(seed, step, 0)
    for a state made from `seed`."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(key), step), _SAMPLE)


def on_policy(key: np.ndarray, step: int, lam: float) -> bool:
    """The λ coin of `step` (True → responses are sampled this step), drawn on the host from (key, step):
    no device work, so a dataset step never waits for the previous step's update."""
    if lam >= 1.0:
        return True
    if lam <= 0.0:
        return False
    return bool(np.random.default_rng([*np.asarray(key).tolist(), step, _COIN]).random() < lam)


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


def sample_interleaved(t, params, prompt_ids, prompt_mask, key, k: int):
    """SKD's samples for run `t` (builder.Run): the current student (`params`) proposes, the teacher replaces
    proposals outside its top k, in one sampler call (sampling/interleaved.py) → (tokens, mask,
    {"skd/kept_frac": ...})."""
    states = [nnx.split(nnx.merge(g, p))[1] for g, p in ((t.graphdef, params),
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
    """Run `t`'s student samples drawn from α·p_teacher + (1 − α)·q_student (MiniLLM's teacher-mixed
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


def step_batch(run, params, step: int, host_batch, key) -> tuple[dict, float, bool, dict]:
    """The step's global batch of `run` (builder.Run): its prompts, and responses sampled by whoever the
    method table names for this step (methods.responder; the student samples with `params`) or the dataset's;
    with the sampling time, whether it sampled, and the sampler's statistics (SKD's skd/kept_frac, logged with
    the step's row). `key`: run_key of the state."""
    c = run.config
    prompt_ids, prompt_mask = (run.to_global(host_batch[k]) for k in ("prompt_ids", "prompt_mask"))
    t0 = time.perf_counter()
    who = methods.responder(c, on_policy(key, step, c.loss.lam))
    sampled_by = {
        "teacher": (run.teacher_graphdef, run.teacher_params),
        "student": (run.graphdef, params),
        None: None,
    }[who]
    stats = {}
    if sampled_by is not None:
        k_step = sample_key(key, step)
        if who == "student" and (k := methods.interleave_k(c)) is not None:  # SKD: the teacher in the loop
            tokens, mask, stats = sample_interleaved(run, params, prompt_ids, prompt_mask, k_step, k)
        elif who == "student" and methods.of(c).teacher_mix is not None:  # MiniLLM's teacher-mixed rollouts
            tokens, mask = sample_mixed(run, params, prompt_ids, prompt_mask, k_step)
        else:
            tokens, mask = run.sample(*sampled_by, prompt_ids, prompt_mask, k_step)
    else:
        ids, m = pad_responses(host_batch, c.sampling.max_new_tokens, run.pad_id)
        tokens, mask = run.to_global(ids), run.to_global(m)
    # The global batch's longest response sets the length on every host (this waits for the sampler).
    tokens, mask = buckets.cut(tokens, mask, c)
    batch = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "response_ids": tokens,
        "response_mask": mask,
    }
    return batch, time.perf_counter() - t0, sampled_by is not None, stats
