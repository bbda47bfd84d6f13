"""Config sections of what a run reports beyond metrics.jsonl: benchmark accuracy (`eval`, see
tsdkd_jax/eval/during_training.py) and Weights & Biases (`logging.wandb`, see wandb_log.py)."""

from __future__ import annotations

import ml_collections

from tsdkd_jax.eval import during_training
from tsdkd_jax.train import wandb_log


def add_defaults(c: ml_collections.ConfigDict) -> None:
    """Adds the `eval` and `logging` sections, with their defaults (both off), to a default config."""
    c.eval = during_training.default_config()
    c.logging = ml_collections.ConfigDict()
    c.logging.wandb = wandb_log.default_config()


def check(config, *, process_count: int = 1, check_paths: bool = True) -> None:
    """Both sections' values (errors name the field)."""
    during_training.check(config, process_count=process_count, check_paths=check_paths)
    wandb_log.check(config)
