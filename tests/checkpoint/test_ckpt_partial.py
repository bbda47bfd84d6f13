"""A partially written latest step is skipped with a warning (and kept, renamed); the previous one restores."""

import logging
import shutil

import jax
import pytest
from ckpt_states import assert_trees_equal, make_state, snapshot

from tsdkd_jax.checkpoint import Checkpointer, abstract_target


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """A workdir with finalized steps 1 and 2 (different states); returns (workdir, {step: state})."""
    workdir = tmp_path_factory.mktemp("good")
    states = {1: make_state(seed=1), 2: make_state(seed=2)}
    with Checkpointer(workdir, max_to_keep=None) as ckpt:
        for step, state in states.items():
            ckpt.save(step, state, {"step": step}, force=True)
    return workdir, states


def _target(state):
    return abstract_target(state, jax.tree.map(lambda x: x.sharding, state))


def _drop(rel):
    return lambda d: (d / "2" / rel).unlink()


CORRUPTIONS = {
    # Crashed before the atomic rename: only the temporary folder exists.
    "tmp_dir": lambda d: (d / "2").rename(d / "2.orbax-checkpoint-tmp"),
    "no_commit_marker": _drop("commit_success.txt"),
    "no_step_metadata": _drop("_CHECKPOINT_METADATA"),
    "no_tree_metadata": _drop("state/_METADATA"),
    "no_manifest": _drop("state/manifest.ocdbt"),
    "no_meta_item": lambda d: shutil.rmtree(d / "2" / "meta"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_partial_latest_step_is_skipped(two_steps, tmp_path, caplog, corruption):
    good, states = two_steps
    shutil.copytree(good, tmp_path, dirs_exist_ok=True)
    ckpt_dir = tmp_path / "checkpoints"
    CORRUPTIONS[corruption](ckpt_dir)
    partial_files = {p.name: snapshot(p) for p in ckpt_dir.iterdir() if p.name.startswith("2")}
    with caplog.at_level(logging.WARNING, logger="tsdkd_jax.checkpoint"):
        ckpt = Checkpointer(tmp_path, max_to_keep=None)
    assert "Skipping partially written checkpoint step 2" in caplog.text
    assert "latest finalized step is 1" in caplog.text
    assert ckpt.latest_step() == 1
    state, meta = ckpt.restore(_target(states[1]))
    assert_trees_equal(state, states[1])
    assert meta == {"step": 1}
    # Nothing deleted: the partial folder's files are all still there, under a new name if it was "2".
    kept = {p.name: snapshot(p) for p in ckpt_dir.iterdir() if p.name.startswith("2")}
    assert sorted(kept.values(), key=len) == sorted(partial_files.values(), key=len)
    # The run can save step 2 again.
    assert ckpt.save(2, states[2], {"step": 2}, force=True)
    ckpt.close()
    assert Checkpointer(tmp_path).latest_step() == 2


# Orbax's failed read leaves an asyncio callback behind that warns when collected; harmless here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unreadable_latest_step_falls_back(two_steps, tmp_path, caplog):
    """Structure intact but array data gone: restore warns, moves the step aside and restores step 1."""
    good, states = two_steps
    shutil.copytree(good, tmp_path, dirs_exist_ok=True)
    ckpt_dir = tmp_path / "checkpoints"
    data_files = [p for p in (ckpt_dir / "2" / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data_files
    for p in data_files:
        p.unlink()
    ckpt = Checkpointer(tmp_path, max_to_keep=None)
    assert ckpt.latest_step() == 2  # passes the structural check
    with caplog.at_level(logging.WARNING, logger="tsdkd_jax.checkpoint"):
        state, meta = ckpt.restore(_target(states[1]))
    assert "Could not restore checkpoint step 2" in caplog.text
    assert_trees_equal(state, states[1])
    assert meta == {"step": 1}
    assert ckpt.latest_step() == 1
    assert [p for p in ckpt_dir.iterdir() if p.name.startswith("2.partial-")]
    ckpt.close()
