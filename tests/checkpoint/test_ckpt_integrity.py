"""Restore checks what it restores: damaged array bytes are caught by checksums (the step is moved aside and
the previous one restores); a state of another shape or a run of another identity is refused with a clear
error that renames or deletes nothing."""

import logging
import os
import shutil

import jax
import jax.numpy as jnp
import pytest
from ckpt_states import Tiny, assert_trees_equal, make_state, snapshot
from flax import nnx

from tsdkd_jax.checkpoint import Checkpointer, abstract_target

IDENTITY = {"method": '"tsdkd"', "optim.lr": "0.03"}


def _target(state):
    return abstract_target(state, jax.tree.map(lambda x: x.sharding, state))


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """A workdir with finalized steps 1 and 2 (different states), saved with IDENTITY."""
    workdir = tmp_path_factory.mktemp("good")
    states = {1: make_state(seed=1), 2: make_state(seed=2)}
    with Checkpointer(workdir, max_to_keep=None, run_identity=IDENTITY) as ckpt:
        for step, state in states.items():
            ckpt.save(step, state, {"step": step}, force=True)
    return workdir, states


def _copy(two_steps, tmp_path):
    good, states = two_steps
    shutil.copytree(good, tmp_path, dirs_exist_ok=True)
    return tmp_path / "checkpoints", states


def _data_files(step_dir):
    """Files of the step's array data (OCDBT data files), largest first."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return sorted(files, key=lambda p: -p.stat().st_size)


def _big_state(seed):
    """Arrays large enough that Orbax stores their bytes in a data file of their own (compressed)."""
    return {"w": jax.random.normal(jax.random.key(seed), (256, 256)), "step": jnp.asarray(seed, jnp.int32)}


# Orbax's failed read leaves an asyncio callback behind that warns when collected; harmless here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("eighth", range(1, 8))
def test_zeroed_array_bytes_are_caught_and_the_previous_step_restores(tmp_path, caplog, eighth):
    """64 bytes of zeros at 7 places of the data file: a zeroed block of a stored (raw) zstd block decodes
    to wrong values without any error, so only a checksum catches it. Whatever the place, restore must give
    the previous step, never the damaged values."""
    states = {1: _big_state(1), 2: _big_state(2)}
    with Checkpointer(tmp_path, max_to_keep=None) as ckpt:
        for step, state in states.items():
            ckpt.save(step, state, {"step": step}, force=True)
    ckpt_dir = tmp_path / "checkpoints"
    target = _data_files(ckpt_dir / "2")[0]
    size = target.stat().st_size
    assert size > 100_000  # the array's own data, not an index node
    with open(target, "r+b") as f:  # silent corruption: the file keeps its size, a block becomes zeros
        f.seek(size * eighth // 8)
        f.write(b"\0" * 64)
    ckpt = Checkpointer(tmp_path, max_to_keep=None)
    with caplog.at_level(logging.WARNING, logger="tsdkd_jax.checkpoint"):
        state, meta = ckpt.restore(_target(states[1]))
    assert "Could not restore checkpoint step 2" in caplog.text
    assert_trees_equal(state, states[1])
    assert meta == {"step": 1}
    assert [p for p in ckpt_dir.iterdir() if p.name.startswith("2.partial-")]  # kept aside, not deleted
    ckpt.close()


def test_a_state_of_another_shape_is_refused_and_nothing_is_moved(two_steps, tmp_path):
    ckpt_dir, _ = _copy(two_steps, tmp_path)
    before = snapshot(ckpt_dir)

    class Wider(Tiny):
        def __init__(self, *, rngs):
            super().__init__(rngs=rngs)
            self.up = nnx.Linear(8, 32, rngs=rngs)
            self.down = nnx.Linear(32, 8, use_bias=False, rngs=rngs)

    state = make_state(seed=3)
    state["params"] = nnx.split(Wider(rngs=nnx.Rngs(0)), nnx.Param)[1]
    other = abstract_target(
        jax.eval_shape(lambda: state), jax.sharding.SingleDeviceSharding(jax.devices()[0])
    )
    ckpt = Checkpointer(tmp_path, max_to_keep=None, run_identity=IDENTITY)
    with pytest.raises(
        ValueError, match=r"another shape.*'up'.*kernel.*saved float32\[8, 16\], now float32\[8, 32\]"
    ):
        ckpt.restore(other)
    ckpt.close()
    assert snapshot(ckpt_dir) == before  # the good steps are where they were, byte for byte


@pytest.mark.parametrize("allow", [False, True])
def test_another_run_identity_is_refused_unless_allowed(two_steps, tmp_path, allow):
    ckpt_dir, states = _copy(two_steps, tmp_path)
    before = snapshot(ckpt_dir)
    changed = {**IDENTITY, "optim.lr": "0.01"}
    ckpt = Checkpointer(tmp_path, max_to_keep=None, run_identity=changed, allow_config_change=allow)
    if allow:
        state, meta = ckpt.restore(_target(states[2]))
        assert_trees_equal(state, states[2]) and meta == {"step": 2}
    else:
        with pytest.raises(ValueError, match=r"optim.lr: saved 0.03, now 0.01.*allow_config_change=True"):
            ckpt.restore(_target(states[2]))
    ckpt.close()
    assert snapshot(ckpt_dir) == before


def test_keep_zero_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep must be >= 1"):
        Checkpointer(tmp_path, max_to_keep=0)
    assert not os.path.exists(tmp_path / "checkpoints" / "1")


def test_checksums_do_not_depend_on_sharding():
    from tsdkd_jax.checkpoint import checksum

    x = jnp.arange(64 * 8, dtype=jnp.float32).reshape(64, 8) / 7
    mesh = jax.make_mesh((len(jax.devices()),), ("d",))
    sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d")))
    assert checksum.checksums({"x": x}) == checksum.checksums({"x": sharded})
    # one element changed (by one ulp) changes the checksum
    assert checksum.checksums({"x": x}) != checksum.checksums(
        {"x": x.at[5, 3].set(jnp.nextafter(x[5, 3], 1e9))}
    )
