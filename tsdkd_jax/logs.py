"""Logging defaults for the command line: the trainer's own INFO lines, other libraries' warnings only.

Orbax logs a multi-kilobyte `CheckpointManagerOptions(...)` line at INFO for every checkpoint manager, and
JAX/absl add more; by default only tsdkd_jax's loggers speak at INFO. absl's `--verbosity` flag, when given,
applies to every logger as usual: `--verbosity=0` shows everyone's INFO lines, `--verbosity=1` debug.
"""

from __future__ import annotations

import logging

from absl import flags
from absl import logging as absl_logging


def configure() -> None:
    """Call after flags are parsed (inside `app.run`'s main)."""
    if flags.FLAGS["verbosity"].present:
        return  # absl has applied the requested level to the root logger
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tsdkd_jax").setLevel(logging.INFO)
