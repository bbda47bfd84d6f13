"""tsdkd_jax: on-policy Token-Selective Dual Knowledge Distillation (TSD-KD) in JAX/Flax NNX."""

from tsdkd_jax import hostmem

__version__ = "0.1.0"

# before any JAX backend starts its threads (tsdkd_jax/hostmem.py: XLA:CPU's per-step scratch memory)
HOST_MALLOC_TUNED = hostmem.configure()
