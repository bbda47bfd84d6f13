"""Float64 JAX for the tests that compare against float64 references."""

import contextlib

import jax


@contextlib.contextmanager
def x64():
    """jax_enable_x64 on inside the block, restored to its previous value after (also on error)."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)
