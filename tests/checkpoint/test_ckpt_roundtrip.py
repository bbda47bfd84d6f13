"""Save/restore round trip, interval and keep-N policy, refusal of non-finite or non-JSON saves."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ckpt_states import assert_trees_equal, make_state, snapshot

from tsdkd_jax.checkpoint import Checkpointer, NonFiniteError, abstract_target

META = {"data": {"seed": 3, "epoch": 1, "position": 7}, "config": {"lr": 1e-3}, "method": "tsdkd"}


def _target(state):
    return abstract_target(state, jax.tree.map(lambda x: x.sharding, state))


def test_round_trip_is_exact(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(5, state, META, metrics={"loss": jnp.float32(0.5)}, force=True)
    with Checkpointer(tmp_path) as ckpt:  # a fresh process-like instance: auto-resume
        assert ckpt.latest_step() == 5
        restored, meta = ckpt.restore(_target(state))
    assert_trees_equal(restored, state)
    assert meta == META
    assert type(restored["params"]) is type(state["params"])
    assert jax.dtypes.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
    # A target from jax.eval_shape (what the trainer has before restoring) works too.
    with Checkpointer(tmp_path) as ckpt:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        restored2, _ = ckpt.restore(abstract_target(jax.eval_shape(make_state), device))
    assert_trees_equal(restored2, state)


def test_interval_keep_n_and_no_overwrite(tmp_path):
    state = make_state(updates=0)
    with Checkpointer(tmp_path, save_interval_steps=2, max_to_keep=2) as ckpt:
        saved = [ckpt.save(s, state, {"step": s}) for s in range(1, 8)]
        assert saved == [False, True, False, True, False, True, False]
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [4, 6]
        assert ckpt.save(7, state, {"step": 7}, force=True)  # forced: off the interval
        ckpt.wait_until_finished()
        before = snapshot(ckpt.directory / "7")
        assert not ckpt.save(7, make_state(seed=1), {"step": -1}, force=True)  # never overwrites
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [6, 7]
    assert snapshot(tmp_path / "checkpoints" / "7") == before
    on_disk = json.loads((tmp_path / "checkpoints" / "7" / "meta" / "metadata").read_text())
    assert set(on_disk.pop("_tsdkd_integrity")) == {"structure", "checksums", "identity"}
    assert on_disk == {"step": 7}


def test_refuses_non_finite_and_bad_meta(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(NonFiniteError, match="step 3: metric 'loss' is nan"):
            ckpt.save(3, state, META, metrics={"loss": np.float32("nan")}, force=True)
        bad = jax.tree.map(lambda x: x.at[0, 0].set(jnp.inf) if x.ndim == 2 else x, state)
        with pytest.raises(NonFiniteError, match="step 4: the state holds NaN or inf"):
            ckpt.save(4, bad, META, force=True)
        with pytest.raises(TypeError, match="JSON-serialisable"):
            ckpt.save(5, state, {"obj": object()}, force=True)
        assert ckpt.all_steps() == []
    assert list((tmp_path / "checkpoints").iterdir()) == []
