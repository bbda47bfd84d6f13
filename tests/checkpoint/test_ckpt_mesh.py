"""A state saved on a (data=2, fsdp=2, tensor=2) mesh of 8 devices restores onto other meshes directly."""

import jax
import numpy as np
import optax
import pytest
from ckpt_states import assert_trees_equal
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tsdkd_jax.checkpoint import Checkpointer, abstract_target
from tsdkd_jax.parallel import make_mesh

SPECS = {"w": P(("data", "fsdp"), "tensor"), "b": P("tensor"), "emb": P("tensor", "fsdp")}


def _state(mesh):
    rng = np.random.default_rng(0)
    params = {
        "w": rng.standard_normal((8, 16), np.float32),
        "b": rng.standard_normal((16,), np.float32),
        "emb": rng.standard_normal((32, 4), np.float32),
    }
    params = {k: jax.device_put(v, NamedSharding(mesh, SPECS[k])) for k, v in params.items()}
    tx = optax.adamw(1e-2)
    opt_state = tx.init(params)
    upd, opt_state = tx.update(jax.tree.map(lambda p: 0.1 * p, params), opt_state, params)
    params = optax.apply_updates(params, upd)
    rep = NamedSharding(mesh, P())
    return {
        "params": params,
        "opt_state": opt_state,
        "step": jax.device_put(np.int32(1), rep),
        "rng": jax.device_put(jax.random.key(7), rep),
    }


def _shardings(state, mesh):
    """Same logical placement as SPECS on `mesh` (params and their Adam moments), replicated elsewhere."""

    def one(path, x):
        name = getattr(path[-1], "key", None)
        return NamedSharding(mesh, SPECS[name] if name in SPECS and x.ndim else P())

    return jax.tree_util.tree_map_with_path(one, state)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    mesh_a = make_mesh(data=2, fsdp=2, tensor=2)
    state = _state(mesh_a)
    assert state["params"]["w"].sharding.mesh.devices.size == 8
    assert len(state["opt_state"][0].mu["w"].sharding.device_set) == 8
    workdir = tmp_path_factory.mktemp("mesh")
    with Checkpointer(workdir) as ckpt:
        ckpt.save(1, state, {"mesh": [2, 2, 2]}, force=True)
    return workdir, state


@pytest.mark.parametrize(
    "mesh_b",
    [
        lambda: make_mesh(data=1, fsdp=1, tensor=2, devices=jax.devices()[6:8]),
        lambda: make_mesh(data=2, fsdp=1, tensor=1, devices=jax.devices()[3:5]),
        lambda: make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[5:6]),
    ],
    ids=["tensor2", "data2", "one_device"],
)
def test_restore_onto_another_mesh(saved, mesh_b):
    workdir, state = saved
    mesh_b = mesh_b()
    shardings = _shardings(state, mesh_b)
    with Checkpointer(workdir) as ckpt:
        restored, meta = ckpt.restore(abstract_target(jax.eval_shape(lambda: state), shardings))
    assert meta == {"mesh": [2, 2, 2]}
    assert_trees_equal(restored, state)
    for x, s in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings), strict=True):
        assert x.sharding.is_equivalent_to(s, x.ndim), (x.sharding, s)
        assert x.sharding.device_set == set(mesh_b.devices.flat)
