"""The ranking (indirect) term's direction: one optimizer step on it alone, with the student's logits as the
parameters, moves probability towards the candidate the teacher prefers among the student's top-k."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tsdkd_jax import losses

K = 4
# Student top-4: ids 3, 7, 1, 12 (in that order); the teacher orders the same four the other way round, so
# its preferred candidate (id 12) is the student's 4th, and it ranks id 5 (outside the student's top-4) first.
STUDENT = np.full(16, -1.0, np.float32)
STUDENT[[3, 7, 1, 12]] = [4.0, 3.0, 2.0, 1.0]
TEACHER = np.zeros(16, np.float32)
TEACHER[[12, 1, 7, 3, 5]] = [3.0, 2.0, 1.0, 0.5, 9.0]
PREFERRED, LEAST = 12, 3


T = 4  # the same token 4 times; with these fractions both variants' openers are position 0 alone
OPENER_FRAC = {"paper": 0.2, "official": 0.4}


def _indirect_alone(z, variant):
    u = jnp.broadcast_to(jnp.asarray(TEACHER), (1, T, 16))
    loss, _ = losses.tsdkd_loss(
        z, u, jnp.ones((1, T)), variant=variant, rank_k=K, rank_weight=1.0, opener_frac=OPENER_FRAC[variant],
        use_direct=False, use_em=False,
    )  # fmt: skip
    return loss


def _one_step(variant, tx):
    """Student probabilities at position 0 before and after one step, and the gradient there."""
    z = jnp.broadcast_to(jnp.asarray(STUDENT), (1, T, 16))
    grads = jax.grad(_indirect_alone)(z, variant)
    assert np.all(np.asarray(grads[0, 1:]) == 0.0)  # outside the opener: no ranking gradient
    updates, _ = tx.update(grads, tx.init(z), z)
    new = optax.apply_updates(z, updates)
    return np.asarray(jax.nn.softmax(z)[0, 0]), np.asarray(jax.nn.softmax(new)[0, 0]), np.asarray(grads[0, 0])


@pytest.mark.parametrize("tx", [optax.sgd(0.1), optax.adam(0.1)], ids=["sgd", "adam"])
def test_paper_ranking_step_raises_the_teachers_preferred_candidate(tx):
    before, after, grads = _one_step("paper", tx)
    assert after[PREFERRED] > before[PREFERRED]
    assert after[LEAST] < before[LEAST]
    # only the student's top-k logits receive gradient: the teacher's favourite id 5 is not a candidate
    outside = np.setdiff1d(np.arange(16), [3, 7, 1, 12])
    assert np.all(grads[outside] == 0.0)
    # the step moves the four candidates' logits in the teacher's order (preferred up the most)
    moves = -grads[[12, 1, 7, 3]]
    assert np.all(np.diff(moves) < 0), moves


def test_official_ranking_step_follows_the_reversed_order():
    """SPEC §2: the released code's prefix sums are the PL likelihood of the reversed teacher order, so its
    step raises the candidate the teacher likes least among the student's top-k (pinned as released)."""
    before, after, _ = _one_step("official", optax.sgd(0.1))
    assert after[LEAST] > before[LEAST]
    assert after[PREFERRED] < before[PREFERRED]
