"""tsdkd_jax.hostmem: with it, XLA:CPU's per-execution scratch block is reused, not faulted in afresh."""

import json
import os
import platform
import subprocess
import sys

import pytest

from tsdkd_jax import hostmem

# One execution's scratch: a [6144, 4096] f32 matmul result (96 MiB, above every glibc mmap threshold) that
# only feeds a second matmul. The median of 9 executions' minor page faults, after 3 warm-up calls (the
# heap may still grow once or twice while it settles).
PROGRAM = """
import json, resource, sys
from tsdkd_jax import hostmem
tuned = hostmem.configure() if sys.argv[1] == "1" else False
import jax, jax.numpy as jnp
x, w = jnp.ones((6144, 64), jnp.float32), jnp.full((64, 4096), 1e-3, jnp.float32)
f = jax.jit(lambda x, w: (x @ w) @ w.T)
for _ in range(3):
    f(x, w).block_until_ready()
counts = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w).block_until_ready()
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
faults = sorted(counts)[len(counts) // 2]
print(json.dumps({"tuned": tuned, "faults": faults}))
"""
SCRATCH_PAGES = 6144 * 4096 * 4 // 4096


def faults_per_execution(configure: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("TSDKD_HOST_MALLOC", None)
    cmd = [sys.executable, "-c", PROGRAM, configure]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's mallopt")
def test_scratch_block_is_reused_across_executions():
    kept, control = faults_per_execution("1"), faults_per_execution("0")
    assert kept["tuned"] and not control["tuned"]
    assert control["faults"] > 0.5 * SCRATCH_PAGES  # async dispatch: a fresh mmap of the block per execution
    assert kept["faults"] < 0.05 * SCRATCH_PAGES


@pytest.mark.parametrize(
    "platforms,want", [("cpu", True), ("cuda", False), ("cpu,tpu", False), (" cpu ", True)]
)
def test_cpu_only_follows_jax_platforms(monkeypatch, platforms, want):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert hostmem.cpu_only() is want


def test_opt_out_changes_nothing(monkeypatch):
    monkeypatch.setenv("TSDKD_HOST_MALLOC", "0")
    assert hostmem.keep_scratch_memory() is False


def test_apply_follows_the_config_and_leaves_a_started_backend_alone(caplog):
    import jax
    import ml_collections

    assert hostmem.apply(ml_collections.ConfigDict({"cpu_inline_dispatch": False})) is False
    jax.devices()  # this process's CPU client has started: too late to change how it dispatches
    with caplog.at_level("WARNING"):
        assert hostmem.apply(ml_collections.ConfigDict({"cpu_inline_dispatch": True})) is False
    assert "already started" in caplog.text


def test_an_installed_pjrt_plugin_means_not_cpu_only(monkeypatch, tmp_path):
    (tmp_path / "jax_plugins" / "xla_fake").mkdir(parents=True)  # how jax-cuda*/jax-rocm* plugins install
    (tmp_path / "jax_plugins" / "xla_fake" / "__init__.py").write_text("")
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    assert hostmem.cpu_only() is True
    monkeypatch.syspath_prepend(str(tmp_path))
    assert hostmem.cpu_only() is False
