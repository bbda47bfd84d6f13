"""Entry point: python -m tsdkd_jax.main --config=configs/tiny.py[:arg] --workdir=DIR [--config.x=y ...].

Without --config it runs the offline reasoning testbed (configs/testbed.py) in ./workdir/testbed.
`--help` lists the config's fields and the variants of the chosen config file. A configuration or usage
mistake ends with one line on stderr and exit code 2 (TSDKD_TRACEBACK=1 shows the traceback instead).
"""

import errno
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from tsdkd_jax import checkpoint, hostmem, logs, train
from tsdkd_jax.parallel import distributed

_HERE = os.path.dirname(os.path.abspath(__file__))
# A checkout's configs/ (beside the package), else the copy a non-editable install ships as tsdkd_jax.configs.
_TESTBED = next(
    (p for p in (os.path.join(os.path.dirname(_HERE), "configs", "testbed.py"),
                 os.path.join(_HERE, "configs", "testbed.py")) if os.path.isfile(p)),
    "configs/testbed.py",
)  # fmt: skip
_CONFIG = config_flags.DEFINE_config_file("config", _TESTBED, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default for the testbed: ./workdir/testbed).")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", None, list(distributed.METHODS), "How to join a multi-process job (default: auto-detect)."
)
# Mistakes in the config, the files it names or the workdir: worth one line, not a traceback.
USER_ERRORS = (
    ValueError,  # validation (names the field), data errors (name the file), ConfigChangedError
    FileNotFoundError,
    FileExistsError,
    checkpoint.WorkdirLockedError,
    app.UsageError,
)


def fail(message: str, code: int = 2, *, hard: bool = False):
    """One line on stderr, then exit. `hard` skips interpreter shutdown: after a failed save, tensorstore's
    I/O threads may still call into Orbax's closed event loop and print tracebacks while Python finalizes;
    the trainer has already closed its files and released its lock, so there is nothing left to run."""
    sys.stderr.write(f"tsdkd_jax: error: {message}\n")
    if hard:
        logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # a traceback a background thread is part-way through printing is cut off here
    sys.exit(code)


def main(argv):
    del argv
    logs.configure()  # quiet libraries unless --verbosity is given
    config = _CONFIG.value
    hostmem.apply(config.base if "testbed" in config else config)  # before the first JAX computation
    distributed.initialize(method=_DISTRIBUTED.value)  # a no-op for one process
    logging.info(
        "process %d/%d, %d local / %d global devices (%s)",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
        jax.devices()[0].device_kind,
    )  # fmt: skip
    try:
        if "testbed" in config:  # the testbed runs the trainer once per stage
            from tsdkd_jax import testbed

            testbed.run(config, _WORKDIR.value or os.path.join("workdir", "testbed"))
        elif _WORKDIR.value is None:
            raise app.UsageError("--workdir is required")
        elif "layerdrop" in config:  # configs/gemma3_270m_layerdrop.py: one trainer run per method
            from tsdkd_jax.experiments import layerdrop

            layerdrop.run(config, _WORKDIR.value)
        else:
            train.run(config, _WORKDIR.value)
    except train.NonFiniteLossError as e:
        logging.error("%s", e)
        sys.exit(2)
    except KeyboardInterrupt:
        fail("interrupted (Ctrl-C) outside the training loop: nothing saved since the last checkpoint", 130)
    except Exception as e:
        message = None if os.environ.get("TSDKD_TRACEBACK") else user_message(e)
        if message is None:
            raise
        fail(message, hard=_is_disk_full(e))


def user_message(e: Exception) -> str | None:
    """The one line for a user's mistake or a full disk; None for anything else (a bug: keep the traceback)."""
    if _is_disk_full(e):
        return f"disk full (No space left on device) under {_WORKDIR.value}: free space, then rerun to resume"
    if isinstance(e, ValueError | app.UsageError):
        return str(e)
    if isinstance(e, USER_ERRORS):
        return f"{type(e).__name__}: {e}"
    return None


def _is_disk_full(e: Exception) -> bool:
    return getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e)


def _run():
    from tsdkd_jax import cli_help

    if cli_help.wants_help(sys.argv[1:]):
        print(cli_help.text(sys.argv[1:], default_config_file=_TESTBED))
        sys.exit(0)
    app.run(main, flags_parser=cli_help.parse_flags)


if __name__ == "__main__":
    _run()
