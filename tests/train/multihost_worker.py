"""One of the processes of a multi-host tiny run ($TSDKD_TEST_LOCAL_DEVICES fake CPU devices each, default 4);
run by test_multihost.py.

    python multihost_worker.py WORKDIR [section.field=value ...]

Joins the job from $JAX_COORDINATOR_ADDRESS / $JAX_NUM_PROCESSES / $JAX_PROCESS_ID exactly as `tsdkd_jax.main`
does, but with short timeouts ($TSDKD_TEST_HEARTBEAT_TIMEOUT) so a dead peer is noticed within seconds, then
trains configs/tiny.py (with the overrides, values as Python literals) through the same `train.run`; with
$TSDKD_TEST_STEP_SLEEP set, every step sleeps that long (tests/helpers/slow_main.py).
"""

import os
import sys

DEVICES = os.environ.get("TSDKD_TEST_LOCAL_DEVICES", "4")
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"
os.environ["JAX_PLATFORMS"] = "cpu"

import ast
import importlib.util
import logging

import jax

from tsdkd_jax import train
from tsdkd_jax.parallel import distributed

TINY = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.py")


def config(overrides):
    spec = importlib.util.spec_from_file_location("tiny_config_module", TINY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config(None)
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, field = key.rpartition(".")
        target = c
        for part in filter(None, section.split(".")):
            target = target[part]
        target[field] = ast.literal_eval(value)
    return c


def main(workdir, *overrides):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py: exact comparisons
    distributed.initialize(
        initialization_timeout=60,
        heartbeat_timeout=int(os.environ.get("TSDKD_TEST_HEARTBEAT_TIMEOUT", "10")),
        shutdown_timeout=30,
    )
    if os.environ.get("TSDKD_TEST_STEP_SLEEP"):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers"))
        import slow_main

        slow_main.install(float(os.environ["TSDKD_TEST_STEP_SLEEP"]))
    train.run(config(overrides), workdir)
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
