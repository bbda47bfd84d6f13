"""One process of the multi-process tests: joins via tsdkd_jax.parallel.distributed from env, then acts.

argv[1] (action): psum — print the all-reduce results as JSON; wait — sleep (a survivor waiting on a dead
peer); crash — exit abruptly right after start-up. Timeouts come from TSDKD_TEST_INIT/HEARTBEAT_TIMEOUT.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import json
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tsdkd_jax.parallel import distributed, make_mesh


def main(action: str) -> None:
    topology = distributed.initialize(
        initialization_timeout=int(os.environ.get("TSDKD_TEST_INIT_TIMEOUT", "60")),
        heartbeat_timeout=int(os.environ.get("TSDKD_TEST_HEARTBEAT_TIMEOUT", "100")),
        shutdown_timeout=10,
    )
    if action == "crash":
        os._exit(3)
    if action == "wait":
        print("READY", flush=True)
        time.sleep(120)
        return
    mesh = make_mesh(data=-1)
    sharding = NamedSharding(mesh, P("data"))
    # Mesh position i holds i + 1, so the all-reduce over 8 devices is 36.
    mine = [i + 1 for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    local = np.asarray(mine)
    x = jax.make_array_from_process_local_data(sharding, local.astype(np.float32), (mesh.devices.size,))

    @jax.jit
    @jax.shard_map(mesh=mesh, in_specs=P("data"), out_specs=P())
    def reduce(x_local):
        return jax.lax.psum(x_local, "data"), jax.lax.psum(1, "data")

    total, count = reduce(x)
    out = {
        "method": topology.method,
        "process_id": topology.process_id,
        "num_processes": topology.num_processes,
        "is_host0": distributed.is_host0(),
        "local_devices": jax.local_device_count(),
        "devices": jax.device_count(),
        "psum": float(np.asarray(total.addressable_data(0)).reshape(-1)[0]),
        "count": int(np.asarray(count.addressable_data(0)).reshape(-1)[0]),
    }
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
