"""Test-only counts of compiled programs (kept out of the package: no counters in traced code)."""

import importlib

# The module, not the `generate` function that tsdkd_jax.sampling re-exports under the same name.
_generate_module = importlib.import_module("tsdkd_jax.sampling.generate")


def sampler_programs() -> int:
    """How many generation programs (one per traced signature) this process holds."""
    return _generate_module._generate_jit._cache_size()
