"""Logging defaults for the command line: the trainer's own INFO lines, other libraries' warnings only.

Orbax logs a multi-kilobyte `CheckpointManagerOptions(...)` line at INFO for every checkpoint manager, and
JAX/absl add more; by default only tsdkd_jax's loggers speak at INFO. absl's `--verbosity` flag, when given,
applies to every logger as usual: `--verbosity=0` shows everyone's INFO lines, `--verbosity=1` debug.

Orbax also logs every failed background save at ERROR with a traceback per thread (a full disk gave ~330
lines); the same error reaches the trainer as an exception, which main.py reports in one line (or with its
traceback when it is a bug), so by default Orbax's records below CRITICAL are dropped.
"""

from __future__ import annotations

import logging

from absl import flags
from absl import logging as absl_logging


class _DropOrbax(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or "/orbax/" not in record.pathname.replace("\\", "/")


def configure() -> None:
    """Call after flags are parsed (inside `app.run`'s main)."""
    if flags.FLAGS["verbosity"].present:
        return  # absl has applied the requested level to the root logger
    absl_logging.set_verbosity(absl_logging.WARNING)
    absl_logging.get_absl_handler().addFilter(_DropOrbax())
    logging.getLogger("tsdkd_jax").setLevel(logging.INFO)
