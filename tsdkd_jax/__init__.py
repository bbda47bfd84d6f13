"""tsdkd_jax: on-policy Token-Selective Dual Knowledge Distillation (TSD-KD) in JAX/Flax NNX."""

__version__ = "0.1.0"
