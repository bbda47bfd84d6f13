"""Diagnostics of a KD step that cost no extra backward pass through the model.

Per-term gradient norms (`grad_norm/direct`, `grad_norm/em`, `grad_norm/indirect`): the L2 norm of the
gradient of each *weighted* term (w_i·T_i, as it enters the loss) with respect to the student's final hidden
states of the step's response positions, [B, N, D] over the whole global batch. They are taken through the
loss head only (unembedding → per-token statistics → term), with the selections and counts the step used,
so they say which term sets the direction of the update the model receives.

With gradient accumulation each micro-batch's hidden states are separate rows of that [B, N, D] tensor, and
a micro-batch's terms depend only on its own rows (the counts that normalise them are constants of the
step), so the gradient with respect to the whole tensor is the concatenation of the per-micro-batch ones
and its squared norm is exactly the sum of theirs: the step accumulates squared norms and takes the square
root once. With `loss.normalize="global"` the value is therefore independent of `optim.grad_accum`.

`clip_frac`: the fraction of the run's optimizer steps so far whose global gradient norm exceeded
`optim.grad_clip`, from a counter kept in the optimizer state (checkpointed with it, so it survives resume).

Response metrics: pass `train_and_evaluate(..., response_metrics=fn)` (or set `Trainer.response_metrics =
fn`; fn(texts) -> {name: value}) and every sampled step logs `fn` of its decoded responses, e.g. the testbed's
count of distinct final answers (the collapse signature). SKD's sampled steps also log `skd/kept_frac` (the
sampler's statistics, rollout.step_batch), the fraction of response tokens that are the student's own
proposals (1 - the paper's correction rate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tsdkd_jax.train import rollout

GRAD_NORM_NAMES = {
    "loss/direct": "grad_norm/direct",
    "loss/em": "grad_norm/em",
    "loss/indirect": "grad_norm/indirect",
}


def term_grad_sq(head_terms: Callable, hs: jax.Array, weights: dict[str, float]) -> dict[str, jax.Array]:
    """Squared L2 norm of ∂(w_i·T_i)/∂hs for every weighted KD term of `head_terms(hs) -> {name: T_i}`.

    One forward of the head and one backward per term (jacrev = vmap over the cotangents); `hs` is
    stop-gradiented, so nothing here reaches the model's parameters.
    """
    names = [name for name in weights if name in GRAD_NORM_NAMES]
    if not names:
        return {}

    def weighted(h):
        terms = head_terms(h)
        return jnp.stack([weights[name] * terms[name] for name in names])

    jac = jax.jacrev(weighted)(jax.lax.stop_gradient(hs))  # [n_terms, *hs.shape]
    sq = jnp.sum(jnp.square(jac.reshape(len(names), -1).astype(jnp.float32)), axis=1)
    return {GRAD_NORM_NAMES[name]: sq[i] for i, name in enumerate(names)}


def grad_norms(sq: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The step's norms from its accumulated squared norms."""
    return {name: jnp.sqrt(value) for name, value in sq.items()}


class ClipCountState(NamedTuple):
    clipped: jax.Array  # int32: optimizer steps whose global gradient norm exceeded the threshold


def count_clipped(threshold: float) -> optax.GradientTransformation:
    """Identity on the updates; counts the steps whose global norm exceeds `threshold` (0 = never)."""

    def init(params):
        del params
        return ClipCountState(clipped=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        over = optax.tree.norm(updates) > threshold if threshold > 0 else jnp.bool_(False)
        return updates, ClipCountState(clipped=state.clipped + over.astype(jnp.int32))

    return optax.GradientTransformation(init, update)


def clip_frac(opt_state, steps_done: jax.Array) -> dict[str, jax.Array]:
    """{"clip_frac": clipped steps / steps done} when the optimizer counts them (state.optimizer), else {}."""
    found = optax.tree.get(opt_state, "clipped", None)
    if found is None:
        return {}
    return {"clip_frac": found.astype(jnp.float32) / jnp.maximum(steps_done, 1).astype(jnp.float32)}


def response_metrics(fn, tokenizer, batch: dict) -> dict:
    """`fn(texts)` of the step's sampled responses decoded to text by `tokenizer` (masked tokens dropped); {}
    when fn is None. The loop calls it after dispatching the step, so this host work overlaps the device's;
    it is collective across hosts (every host gets all rows; process 0 logs)."""
    if fn is None:
        return {}
    ids, mask = rollout.to_host((batch["response_ids"], batch["response_mask"]))
    texts = [
        tokenizer.decode([int(t) for t, m in zip(row, keep, strict=True) if m], skip_special_tokens=True)
        for row, keep in zip(np.asarray(ids), np.asarray(mask), strict=True)
    ]
    return {name: float(value) for name, value in fn(texts).items()}
