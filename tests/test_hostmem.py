"""tsdkd_jax.hostmem: on CPU-only hosts XLA's per-execution scratch block is reused, not faulted in afresh."""

import json
import os
import platform
import subprocess
import sys

import pytest

from tsdkd_jax import hostmem

# One execution's scratch: a [6144, 4096] f32 matmul result (96 MiB, above every glibc mmap threshold) that
# only feeds a second matmul. Minor page faults per steady-state execution, after two warm-up calls.
PROGRAM = """
import json, resource, sys
import tsdkd_jax
import jax, jax.numpy as jnp
x, w = jnp.ones((6144, 64), jnp.float32), jnp.full((64, 4096), 1e-3, jnp.float32)
f = jax.jit(lambda x, w: (x @ w) @ w.T)
for _ in range(2):
    f(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    f(x, w).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"tuned": tsdkd_jax.HOST_MALLOC_TUNED, "faults": faults}))
"""
SCRATCH_PAGES = 6144 * 4096 * 4 // 4096


def faults_per_execution(host_malloc: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TSDKD_HOST_MALLOC": host_malloc}
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's mallopt")
def test_scratch_block_is_reused_across_executions():
    kept, control = faults_per_execution("1"), faults_per_execution("0")
    assert kept["tuned"] and not control["tuned"]
    assert control["faults"] > 0.5 * SCRATCH_PAGES  # glibc maps and unmaps the block on every execution
    assert kept["faults"] < 0.05 * SCRATCH_PAGES


@pytest.mark.parametrize(
    "platforms,want", [("cpu", True), ("cuda", False), ("cpu,tpu", False), (" cpu ", True)]
)
def test_cpu_only_follows_jax_platforms(monkeypatch, platforms, want):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert hostmem.cpu_only() is want


def test_opt_out_changes_nothing(monkeypatch):
    monkeypatch.setenv("TSDKD_HOST_MALLOC", "0")
    assert hostmem.keep_freed_memory() is False
