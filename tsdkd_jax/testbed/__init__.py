"""The offline reasoning testbed (configs/testbed.py, the default run): teacher, weak student, distillation."""

from tsdkd_jax.testbed.pipeline import run

__all__ = ["run"]
