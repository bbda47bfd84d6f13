"""Training: config schema and validation, train state, the pure train step, the on-policy loop."""

from tsdkd_jax.train.builder import Run, build
from tsdkd_jax.train.config import METHODS, default_config, validate
from tsdkd_jax.train.loop import NonFiniteLossError, Trainer, run, train_and_evaluate
from tsdkd_jax.train.pair import check_pair
from tsdkd_jax.train.step import StepSpec, train_step

__all__ = [
    "METHODS",
    "NonFiniteLossError",
    "Run",
    "StepSpec",
    "Trainer",
    "build",
    "check_pair",
    "default_config",
    "run",
    "train_and_evaluate",
    "train_step",
    "validate",
]
