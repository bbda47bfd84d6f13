"""Held-out closeness of student to teacher: mean per-token KL(p_T ‖ p_S), teacher-forced on teacher samples.

The teacher samples responses to held-out prompts with a fixed key per batch, so every evaluation of a run
scores the same tokens; both models then score [prompt; response] and the forward KL is averaged over the
response tokens (the first EOS included).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tsdkd_jax import data, losses, sampling
from tsdkd_jax.train import step as step_lib

_FKL = losses.make_config(divergence="fkl", use_gate=False, use_indirect=False, use_em=False)


@functools.partial(jax.jit, static_argnames=("graphdef", "teacher_graphdef", "chunk_size", "vocab_policy"))
def kl_sums(params, teacher_params, batch, *, graphdef, teacher_graphdef, chunk_size, vocab_policy):
    """(Σ KL(p_T‖p_S) over response tokens, token count) of one batch."""
    spec = step_lib.StepSpec(_FKL, "global", 1, chunk_size, vocab_policy)
    inputs = step_lib.score_inputs(batch, spec)
    n = inputs["labels"].shape[-1]
    student, teacher = nnx.merge(graphdef, params), nnx.merge(teacher_graphdef, teacher_params)
    hs = step_lib.response_hidden(student, inputs, n)
    ht = step_lib.response_hidden(teacher, inputs, n)
    stats = step_lib.kd_stats(hs, ht, student=student, teacher=teacher, spec=spec)
    m = inputs["loss_mask"] * batch["example_mask"][:, None]
    return jnp.sum(jnp.where(m > 0, stats["direct"], 0.0)), jnp.sum(m)


def heldout_batches(rows, config, *, pad_id: int, teacher, sample, to_global) -> list[dict]:
    """The held-out batches of `rows` with the teacher's responses ([] when the run evaluates nothing).

    teacher: (graphdef, params) or None; sample(graphdef, params, prompt_ids, prompt_mask, key) -> (tokens,
    mask) and to_global(host rows) -> global array: the run's (builder.Run.sample, builder.Run.to_global).
    """
    c = config
    if not (c.eval_every or c.eval_at_ends) or teacher is None or not len(rows):
        return []
    it = data.eval_batches(
        rows, batch_size=c.data.batch_size, max_prompt_len=c.data.max_prompt_len,
        max_response_len=c.data.max_response_len,
        pad_id=pad_id, prompt_bucket=c.data.prompt_bucket, bucket_multiple=c.data.bucket_multiple,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )  # fmt: skip
    batches = [b for _, b in zip(range(c.eval_batches), it)]
    return teacher_samples(batches, c.seed, teacher=teacher, sample=sample, to_global=to_global)


def teacher_samples(batches, seed: int, *, teacher, sample, to_global) -> list[dict]:
    """Teacher responses (fixed keys) for each held-out batch, as global arrays; computed once per run."""
    out = []
    for i, b in enumerate(batches):
        key = sampling.sample_key(seed + 7919, i, 0)
        prompt_ids, prompt_mask = (to_global(b[k]) for k in ("prompt_ids", "prompt_mask"))
        tokens, mask = sample(*teacher, prompt_ids, prompt_mask, key)
        out.append(
            {
                "prompt_ids": prompt_ids,
                "prompt_mask": prompt_mask,
                "response_ids": tokens,
                "response_mask": mask,
                "example_mask": to_global(b["example_mask"].astype(np.float32)),
            }
        )
    return out


def heldout_kl(
    params, batches, *, graphdef, teacher_graphdef, teacher_params, chunk_size, vocab_policy
) -> float:
    """Mean per-token KL(teacher‖student) over the held-out batches."""
    total, count = 0.0, 0.0
    for b in batches:
        s, n = kl_sums(
            params, teacher_params, b, graphdef=graphdef, teacher_graphdef=teacher_graphdef,
            chunk_size=chunk_size, vocab_policy=vocab_policy,
        )  # fmt: skip
        total, count = total + float(s), count + float(n)
    return total / max(count, 1.0)
