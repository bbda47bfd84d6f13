"""Score only what was sampled (train/buckets.py): the cut step's loss equals the uncut step's."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tsdkd_jax import train
from tsdkd_jax.train import buckets
from tsdkd_jax.train import step as step_lib


def test_cut_length_is_the_smallest_bucket_holding_the_longest():
    assert [buckets.cut_length(n, 64, 256) for n in (0, 1, 64, 65, 200, 256)] == [64, 64, 64, 128, 256, 256]
    assert [buckets.cut_length(n, 1, 16) for n in (0, 5, 16)] == [1, 5, 16]
    assert buckets.cut_length(300, 64, 256) == 256  # never beyond the cap


def test_longest_response_is_the_last_masked_position():
    mask = np.zeros((3, 10), np.int32)
    mask[0, :4], mask[1, :7] = 1, 1
    assert buckets.longest_response(jnp.asarray(mask)) == 7
    assert buckets.longest_response(jnp.zeros((2, 5), jnp.int32)) == 0


def test_default_unit_per_method(tiny_config):
    assert buckets.unit(tiny_config()) == 64
    assert buckets.unit(tiny_config("official")) == 1  # the released run's grid: the batch's longest
    assert buckets.unit(tiny_config(sampling__length_bucket=8)) == 8


def _half_batch(t, keep: int):
    """The trainer's step-1 batch with every response ended after at most `keep` tokens (pad beyond)."""
    batch, _, _ = t.make_batch(1, next(t.iterator))
    ids, mask = np.asarray(batch["response_ids"]), np.asarray(batch["response_mask"])
    assert ids.shape[1] == t.config.sampling.max_new_tokens  # length_bucket = the cap: uncut
    mask = mask * (np.arange(ids.shape[1]) < keep)
    ids = np.where(mask > 0, ids, t.pad_id)
    return {**batch, "response_ids": jnp.asarray(ids), "response_mask": jnp.asarray(mask)}


def _step(t, batch):
    """One step with SGD at lr 1 (new params = params − gradient: compares the gradients themselves)."""
    tx = optax.sgd(1.0)
    fn = functools.partial(
        step_lib.train_step, graphdef=t.graphdef, teacher_graphdef=t.teacher_graphdef, tx=tx,
        lr_fn=train.state.schedule(t.config), spec=dataclasses.replace(t.spec, full_logits_max=0),
    )  # fmt: skip
    state = jax.tree.map(jnp.copy, t.state)
    state["opt_state"] = tx.init(state["params"])
    return jax.jit(fn)(state, t.teacher_params, batch)


@pytest.mark.parametrize("arg", ["", "gkd"])  # the paper variant (gate, EM, ranking) and a plain divergence
def test_cut_step_equals_uncut_step(tiny_config, tmp_path, arg):
    cap = 16
    config = tiny_config(arg, mesh__devices=1, sampling__length_bucket=cap, optim__warmup_frac=0.0)
    t = train.Trainer(config, str(tmp_path))
    try:
        uncut = _half_batch(t, keep=7)
        assert buckets.longest_response(uncut["response_mask"]) == 7
        ids, mask = uncut["response_ids"], uncut["response_mask"]
        n = buckets.cut_length(buckets.longest_response(mask), 4, cap)
        cut = {**uncut, "response_ids": ids[:, :n], "response_mask": mask[:, :n]}
        state_u, m_u = _step(t, uncut)
        state_c, m_c = _step(t, cut)
    finally:
        t.close()
    assert cut["response_ids"].shape[1] == 8 and float(m_u["tokens"]) == float(np.sum(mask))
    assert set(m_u) == set(m_c)
    for name in m_u:
        np.testing.assert_allclose(float(m_c[name]), float(m_u[name]), rtol=2e-5, atol=1e-6, err_msg=name)
    for a, b in zip(jax.tree.leaves(state_c["params"]), jax.tree.leaves(state_u["params"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)
