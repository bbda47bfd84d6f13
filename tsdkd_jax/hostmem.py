"""CPU-only hosts: run XLA programs inline and keep their scratch memory in the process between steps.

XLA:CPU allocates each execution's temporary buffers as one block with `malloc` (108 MB for the testbed
teacher's SFT step). With JAX's asynchronous CPU dispatch a large program runs on a worker thread, whose
glibc arena can only serve a block above 64 MB with a fresh `mmap`, unmapped again on `free`: every step
faults in ~27,000 new pages, each zeroed by the kernel, about a third of that step's CPU time on the 2-core
box (benchmarks/RESULTS.md). Run inline (synchronous dispatch), the program allocates from the calling
thread's main arena, which keeps and reuses the block once `mmap` and trimming are off for it. Giving every
thread the main arena instead (MALLOC_ARENA_MAX=1) was measured too and dropped: lock contention made the
sampler's many small programs slower by about as much as the big steps gained.

Opt-in per run: a config with `cpu_inline_dispatch = True` (the testbed's, configs/testbed.py) has
`python -m tsdkd_jax.main` call `apply` before its first JAX computation; in a notebook, call `configure()`
first. It changes nothing on hosts with a GPU or TPU plugin (or JAX_PLATFORMS naming one), nor once a JAX
computation has run in the process (the CPU client reads the dispatch mode when it starts). The costs, why it
is not the default: host work no longer overlaps a running program, which makes small on-policy steps slower
(configs/tiny.py's loop step: about 11 → 16 ms, benchmarks/RESULTS.md), and freed memory stays in the process.
TSDKD_HOST_MALLOC=0 turns it off everywhere.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import logging
import os
import platform

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
_KEEP = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))


def cpu_only() -> bool:
    """Whether JAX can only use the host CPU here, decided without initialising a JAX backend."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return all(p.strip() == "cpu" for p in platforms.split(","))
    if importlib.util.find_spec("libtpu") is not None:
        return False
    # the two places JAX discovers PJRT plugins from (jax-cuda*, jax-rocm*, ...): entry points, the namespace
    return (
        not importlib.metadata.entry_points(group="jax_plugins")
        and importlib.util.find_spec("jax_plugins") is None
    )


def keep_scratch_memory() -> bool:
    """Inline CPU dispatch, and glibc's main arena without mmap or trimming; True if both were set."""
    if os.environ.get("TSDKD_HOST_MALLOC", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    import jax

    try:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    except (AttributeError, KeyError):  # a JAX without the option: its programs run where they run
        return False
    libc = ctypes.CDLL(None)
    return all(libc.mallopt(param, value) == 1 for param, value in _KEEP)


def configure() -> bool:
    """`keep_scratch_memory()` on CPU-only hosts; True if it changed anything."""
    return cpu_only() and keep_scratch_memory()


def apply(config) -> bool:
    """`configure()` if the run's config asks for it (`cpu_inline_dispatch`) and no JAX backend has started."""
    if not config.get("cpu_inline_dispatch", False):
        return False
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        log.warning("cpu_inline_dispatch: JAX already started its CPU client in this process; left as it is")
        return False
    return configure()
