"""The student's train state (fp32 params, AdamW state, step, RNG) and its sharding; the optimizer.

The state is a plain dict pytree {"params", "opt_state", "step", "rng"} with `params` a pure dict of arrays
(nnx.to_pure_dict of the student), so Orbax saves it as is and `nnx.merge(graphdef, params)` rebuilds the
model inside the jitted step. `rng` is the run's key (from config.seed, saved with the state): the loop folds
the step into it for the λ coin and the sampler's key (rollout.py). The teacher is never part of it.

A LoRA student (models/lora.py) keeps its whole tree in `params` (the frozen base too, so sampling, evaluation,
export and checkpoints see one model), but only the adapters train: `split_trainable` separates them, the
optimizer state is built for them alone, and the step differentiates them alone.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from tsdkd_jax import parallel
from tsdkd_jax.train import diagnostics


def schedule(config) -> optax.Schedule:
    """Linear warm-up to optim.lr over warmup_frac of the run, then cosine decay to end_lr_frac · lr."""
    o, total = config.optim, config.total_steps
    warmup = round(o.warmup_frac * total)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=o.lr,
        warmup_steps=warmup,
        decay_steps=max(total, warmup + 1),
        end_value=o.lr * o.end_lr_frac,
    )


def optimizer(config) -> optax.GradientTransformation:
    """AdamW after global-norm clipping; the first link counts the clipped steps (the clip_frac metric)."""
    o = config.optim
    adamw = optax.adamw(schedule(config), b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
    clip = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
    return optax.chain(diagnostics.count_clipped(o.grad_clip), *clip, adamw)


def split_trainable(params) -> tuple[Any, dict]:
    """(what trains, what stays frozen) of a params pure dict (or a tree of the same layout): a LoRA
    student's top-level "lora" subtree and the rest; a plain student's whole tree and {}."""
    if not isinstance(params, dict) or "lora" not in params:
        return params, {}
    return params["lora"], {k: v for k, v in params.items() if k != "lora"}


def join_trainable(trainable, frozen: dict):
    """The inverse of split_trainable."""
    return {**frozen, "lora": trainable} if frozen else trainable


def param_shardings(model: nnx.Module, mesh, rules) -> dict[str, Any]:
    """NamedSharding per parameter (pure-dict layout) from the model's logical axis names."""
    state = nnx.state(model, nnx.Param)
    return nnx.to_pure_dict(parallel.state_shardings(state, mesh, rules))


def state_shardings(params_shardings, tx, abstract_params, mesh) -> dict[str, Any]:
    """Shardings of the whole train state: optimizer moments follow their parameter, the rest replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_opt = jax.eval_shape(tx.init, split_trainable(abstract_params)[0])
    opt = optax.tree_map_params(
        tx,
        lambda _, s: s,
        abstract_opt,
        split_trainable(params_shardings)[0],
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )
    return {"params": params_shardings, "opt_state": opt, "step": replicated, "rng": replicated}


def init_state(params, tx, seed: int, shardings) -> dict[str, Any]:
    """The state at step 0, created directly in `shardings` (params are donated into it)."""

    def init(p):
        return {
            "params": p,
            "opt_state": tx.init(split_trainable(p)[0]),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed)),
        }

    return jax.jit(init, out_shardings=shardings, donate_argnums=0)(params)


def abstract_state(abstract_params, tx) -> dict[str, Any]:
    """ShapeDtypeStructs of the state (for restoring a checkpoint into its shardings)."""
    return jax.eval_shape(
        lambda p: {
            "params": p,
            "opt_state": tx.init(split_trainable(p)[0]),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(0)),
        },
        abstract_params,
    )


def count_params(params) -> int:
    """Number of parameters in a tree (the trainable ones: count_params(split_trainable(p)[0]))."""
    return sum(int(x.size) for x in jax.tree.leaves(params))
