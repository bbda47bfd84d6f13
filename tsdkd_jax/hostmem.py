"""Keep XLA:CPU's per-execution scratch memory in the process instead of handing it back to the OS each step.

XLA:CPU allocates each execution's temporary buffers as one block with `malloc`, from the thread that runs the
program (126 MB for the testbed teacher's SFT step). glibc serves a block that large from the thread's own
arena with a fresh `mmap` and unmaps it on `free`, so every step faults in ~31,000 new pages, each zeroed by
the kernel: a third of that step's CPU time on the 2-core box (benchmarks/RESULTS.md). With one arena, no
`mmap` and no trimming, the block is taken from the heap and reused by the next step.

Applied once, at `import tsdkd_jax`, when JAX can only run on the host CPU (no GPU or TPU plugin installed,
or JAX_PLATFORMS=cpu): on accelerator hosts the host's memory is better given back, and the device's
allocator keeps its own pool. It takes effect for threads that have not allocated yet, so it helps when
`tsdkd_jax` is imported before the first JAX computation; MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647 in the environment does the same for any process. TSDKD_HOST_MALLOC=0 turns
it off. The cost: memory freed by the process stays in it (its peak stays resident), and all threads share one
malloc arena.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_KEEP = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
_ACCELERATOR_DISTS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu", "jax-tpu")


def cpu_only() -> bool:
    """Whether JAX can only use the host CPU here, decided without initialising a JAX backend."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return all(p.strip() == "cpu" for p in platforms.split(","))
    if importlib.util.find_spec("libtpu") is not None:
        return False
    if importlib.metadata.entry_points(group="jax_plugins"):
        return False
    names = (d.metadata["Name"] or "" for d in importlib.metadata.distributions())
    return not any(n.lower().startswith(_ACCELERATOR_DISTS) for n in names)


def keep_freed_memory() -> bool:
    """Set glibc's malloc to one arena, no mmap, no trimming (see the module docstring); True if it was set."""
    if os.environ.get("TSDKD_HOST_MALLOC", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return all(libc.mallopt(param, value) == 1 for param, value in _KEEP)


def configure() -> bool:
    """`keep_freed_memory()` on CPU-only hosts; True if the allocator was changed."""
    return cpu_only() and keep_freed_memory()
