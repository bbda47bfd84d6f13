"""Teacher-mixed sampling (MiniLLM): each token drawn from α·p_teacher + (1 − α)·q_student at temperature 1.

The student and the teacher decode side by side in one compiled `lax.while_loop` (one prefill each, one KV
cache each, the same token fed to both), reusing generate.py's prefill and loop state. The mixture is over
the student's vocabulary: a larger teacher vocabulary is cut to the student's ids and renormalised, so no
token the student cannot embed is ever sampled. Temperature, top-k and top-p are not applied: MiniLLM's
importance weights q/p̃ are computed in the loss from the two models' plain softmaxes.
Returned log-probabilities are those of the mixture (the behaviour policy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tsdkd_jax.sampling.decode_weights import decode_weights
from tsdkd_jax.sampling.generate import (  # the package's `generate` is the function, not the module
    SampleOutput,
    _eos_array,
    _Loop,
    _place_prompts,
    _prefill,
    _start,
    _write,
)
from tsdkd_jax.sampling.host_inputs import check_inputs


def mixture_logprobs(student_logits_BV, teacher_logits_BV, alpha):
    """log(α·softmax(teacher) + (1 − α)·softmax(student)) over the student's V ids [B, V] (f32)."""
    v = student_logits_BV.shape[-1]
    logq = jax.nn.log_softmax(student_logits_BV.astype(jnp.float32), axis=-1)
    logp = jax.nn.log_softmax(teacher_logits_BV[..., :v].astype(jnp.float32), axis=-1)
    # α = 0 → log α = -inf: logaddexp then returns log q exactly (no gradient is taken here)
    return jnp.logaddexp(logp + jnp.log(alpha), logq + jnp.log1p(-alpha))


def _generate_mixed(
    s_graphdef, t_graphdef, s_state, t_state, prompt_ids, prompt_mask, alpha, eos_ids, pad_id, rng, *,
    max_new_tokens, mesh, rules, gather_weights,
):  # fmt: skip
    rules = dict(rules) if rules is not None else None
    B, N = prompt_ids.shape[0], max_new_tokens
    prefill = lambda g, st: _prefill(g, st, prompt_ids, prompt_mask, N, mesh, rules, gather_weights)
    student, s_cache, s_logits = prefill(s_graphdef, s_state)
    teacher, t_cache, t_logits = prefill(t_graphdef, t_state)

    def pick(step, zs, zt, done_B):
        logmix = mixture_logprobs(zs, zt, alpha)
        tok_B = jax.random.categorical(jax.random.fold_in(rng, step), logmix, axis=-1).astype(jnp.int32)
        logp_B = jnp.take_along_axis(logmix, tok_B[:, None], axis=1)[:, 0]
        tok_B = jnp.where(done_B, pad_id, tok_B)
        logp_B = jnp.where(done_B, 0.0, logp_B)
        return tok_B, logp_B, done_B | jnp.any(tok_B[:, None] == eos_ids[None, :], axis=1)

    def body(s: _Loop) -> _Loop:
        zs, sc = student.decode_step(s.last_B, s.cache[0], ~s.done_B)
        zt, tc = teacher.decode_step(s.last_B, s.cache[1], ~s.done_B)
        return _write(s, *pick(s.step, zs, zt, s.done_B), (sc, tc))

    s = _start(B, N, pad_id, (s_cache, t_cache))
    s = _write(s, *pick(0, s_logits, t_logits, s.done_B), s.cache)
    s = jax.lax.while_loop(lambda s: (s.step < N) & ~jnp.all(s.done_B), body, s)
    return SampleOutput(tokens=s.tokens_BN, mask=s.mask_BN, logprobs=s.logprobs_BN, num_steps=s.step)


_generate_mixed_jit = jax.jit(
    _generate_mixed,
    static_argnames=("s_graphdef", "t_graphdef", "max_new_tokens", "mesh", "rules", "gather_weights"),
)


def generate_mixed(
    student,
    teacher,
    prompt_ids,
    prompt_mask,
    *,
    alpha: float,
    max_new_tokens: int,
    rng,
    eos_token_ids=(),
    pad_token_id: int = 0,
    mesh=None,
    rules=None,
    gather_weights: bool = True,
) -> SampleOutput:
    """Sample after left-padded prompts [B, T] from α·p_teacher + (1 − α)·q_student; `student` and `teacher`
    are (graphdef, state) pairs. With `mesh` the batch is split over the batch axes of `rules` (default
    generate.SAMPLING_RULES); gather_weights as in generate_from_state, for both models."""
    check_inputs(max_new_tokens, prompt_ids, prompt_mask)
    if not 0.0 <= float(alpha) < 1.0:
        raise ValueError(f"alpha (the teacher's share of the mixture) must be in [0, 1), got {alpha!r}")
    prompt_ids, prompt_mask, rules_key = _place_prompts(prompt_ids, prompt_mask, mesh, rules)
    (s_graphdef, s_state), (t_graphdef, t_state) = student, teacher
    return _generate_mixed_jit(
        s_graphdef,
        t_graphdef,
        decode_weights(s_graphdef, s_state),
        decode_weights(t_graphdef, t_state),
        jnp.asarray(prompt_ids, jnp.int32),
        jnp.asarray(prompt_mask, jnp.int32),
        np.float32(alpha),
        _eos_array(eos_token_ids),
        np.int32(pad_token_id),
        rng,
        max_new_tokens=int(max_new_tokens),
        mesh=mesh,
        rules=rules_key,
        gather_weights=bool(gather_weights),
    )
