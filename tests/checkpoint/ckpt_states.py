"""A small train state like the trainer's: NNX params, optax AdamW state, step, RNG key."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


class Tiny(nnx.Module):
    def __init__(self, *, rngs):
        self.up = nnx.Linear(8, 16, rngs=rngs)
        self.down = nnx.Linear(16, 8, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.down(jax.nn.gelu(self.up(x)))


def make_state(seed=0, updates=2):
    """{"params": nnx.State, "opt_state": AdamW state after `updates` steps, "step", "rng"}."""
    model = Tiny(rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamw(1e-2)
    opt_state = tx.init(params)
    x = jnp.ones((4, 8))
    for _ in range(updates):
        grads = jax.grad(lambda p: jnp.mean(nnx.merge(graphdef, p)(x) ** 2))(params)
        upd, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, upd)
    return {
        "params": params,
        "opt_state": opt_state,
        "step": jnp.asarray(updates, jnp.int32),
        "rng": jax.random.key(seed + 100),
    }


def host_leaves(tree):
    """NumPy copies of every leaf (typed PRNG keys as their raw key data)."""
    out = []
    for x in jax.tree.leaves(tree):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(host_leaves(a), host_leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def snapshot(directory):
    """{relative path: file bytes} of everything under the local folder `directory`."""
    directory = pathlib.Path(directory)
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }
