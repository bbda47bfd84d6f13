"""Teacher-mixed sampling (MiniLLM): tokens follow α·p_teacher + (1 − α)·q_student, both models decode in step."""

import jax
import numpy as np
import pytest
from flax import nnx

from tsdkd_jax import sampling
from tsdkd_jax.models import Decoder, ModelConfig

SMALL = {"intermediate_size": 64, "num_heads": 4, "num_kv_heads": 2, "head_dim": 8}
STUDENT = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, **SMALL)
TEACHER = ModelConfig(vocab_size=72, hidden_size=32, num_layers=3, **SMALL)  # 8 ids the student lacks
ALPHA = 0.5


@pytest.fixture(scope="module")
def models():
    student = Decoder(STUDENT, rngs=nnx.Rngs(0))
    teacher = Decoder(TEACHER, rngs=nnx.Rngs(1))
    head = teacher.lm_head.get_value()
    teacher.lm_head.set_value(head * 100.0)  # a confident teacher, far from the student
    return student, teacher


def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _mixture(student, teacher, ids, mask, alpha):
    """α·p + (1 − α)·q [B, T, 64] at every position of ids, from full forward passes (float64)."""
    z = student.unembed(student.hidden_states(ids, mask))
    u = teacher.unembed(teacher.hidden_states(ids, mask))[..., :64]  # cut to the student's ids, renormalised
    return alpha * np.exp(_np_log_softmax(u)) + (1 - alpha) * np.exp(_np_log_softmax(z)), np.exp(
        _np_log_softmax(u)
    )


def test_tokens_follow_the_mixture_given_their_prefix(models):
    """The first token's frequencies over many rows are the mixture's; every token's log-prob is the mixture's
    given the sampled prefix (both caches saw the same tokens)."""
    student, teacher = models
    rows, n = 2048, 3
    ids = np.tile(np.array([[0, 0, 5, 17, 3, 9]], np.int32), (rows, 1))
    mask = (np.arange(6) >= 2).astype(np.int32)[None].repeat(rows, 0)  # left-padded
    out = sampling.generate_mixed(
        nnx.split(student),
        nnx.split(teacher),
        ids,
        mask,
        alpha=ALPHA,
        max_new_tokens=n,
        rng=jax.random.key(0),
    )
    tokens, logprobs = np.asarray(out.tokens), np.asarray(out.logprobs)
    assert tokens.max() < STUDENT.vocab_size  # never an id only the teacher has
    few = 4  # rows scored token by token on their own sampled prefixes
    full = np.concatenate([ids[:few], tokens[:few]], 1)
    mix, p = _mixture(
        student, teacher, full, np.concatenate([mask[:few], np.ones((few, n), np.int32)], 1), ALPHA
    )
    for t in range(n):
        want = np.log(mix[np.arange(few), ids.shape[1] - 1 + t, tokens[:few, t]])
        np.testing.assert_allclose(logprobs[:few, t], want, rtol=1e-4, atol=1e-5)
    mix0, p0 = mix[0, ids.shape[1] - 1], p[0, ids.shape[1] - 1]
    q0 = (mix0 - ALPHA * p0) / (1 - ALPHA)
    freq = np.bincount(tokens[:, 0], minlength=64) / rows
    top = int(np.argmax(p0))  # the teacher's favourite: α·p + (1 − α)·q of the rows, not q alone
    assert p0[top] - q0[top] > 0.3
    assert abs(freq[top] - mix0[top]) < 5 * np.sqrt(mix0[top] * (1 - mix0[top]) / rows)
    assert 0.5 * np.abs(freq - mix0).sum() < 0.08  # total variation; ~0.05 expected from 2048 draws


def test_alpha_must_leave_the_student_a_share(models):
    student, teacher = models
    ids, mask = np.ones((1, 2), np.int32), np.ones((1, 2), np.int32)
    with pytest.raises(ValueError, match="alpha"):
        sampling.generate_mixed(
            nnx.split(student),
            nnx.split(teacher),
            ids,
            mask,
            alpha=1.0,
            max_new_tokens=2,
            rng=jax.random.key(0),
        )
