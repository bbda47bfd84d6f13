"""Entry point: python -m tsdkd_jax.main --config=configs/tiny.py[:arg] --workdir=DIR [--config.x=y ...].

Without --config it runs the offline reasoning testbed (configs/testbed.py) in ./workdir/testbed.
"""

import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from tsdkd_jax import logs, train
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


def main(argv):
    del argv
    logs.configure()  # quiet libraries unless --verbosity is given
    distributed.initialize(method=_DISTRIBUTED.value)  # a no-op for one process
    logging.info(
        "process %d/%d, %d local / %d global devices (%s)",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
        jax.devices()[0].device_kind,
    )  # fmt: skip
    config = _CONFIG.value
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


if __name__ == "__main__":
    app.run(main)
