"""Entry point: python -m tsdkd_jax.main --config=configs/tiny.py[:arg] --workdir=DIR [--config.x=y ...]."""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from tsdkd_jax import train
from tsdkd_jax.parallel import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: metrics, checkpoints, export.", required=True)
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", None, list(distributed.METHODS), "How to join a multi-process job (default: auto-detect)."
)


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    distributed.initialize(method=_DISTRIBUTED.value)  # a no-op for one process
    logging.info(
        "process %d/%d, %d local / %d global devices (%s)",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
        jax.devices()[0].device_kind,
    )  # fmt: skip
    try:
        train.run(_CONFIG.value, _WORKDIR.value)
    except train.NonFiniteLossError as e:
        logging.error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
