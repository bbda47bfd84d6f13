"""One of two processes (4 fake CPU devices each) saving a checkpoint collectively; run by
test_ckpt_multihost.py.  usage: python multihost_worker.py PORT PROCESS_ID WORKDIR MODE
MODE: "jax_preemption_service" (JAX's default) or "allgather" (the service disabled).
Runs steps until SIGTERM reaches either process (JAX's preemption sync point), saves there, exits 0.
"""

import os
import sys
import time

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tsdkd_jax.checkpoint import Checkpointer, PreemptionGuard
from tsdkd_jax.parallel import make_mesh


def main(port, pid, workdir, mode):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_preemption_service", mode == "jax_preemption_service")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    w = np.arange(8 * 16, dtype=np.float32).reshape(8, 16)
    state = {"w": jax.device_put(w, NamedSharding(mesh, P(("data", "fsdp"), "tensor")))}
    add = jax.jit(lambda s: {"w": s["w"] + 1.0})
    ckpt = Checkpointer(workdir, save_interval_steps=10**9)
    with PreemptionGuard() as guard:
        assert guard.mode == mode, guard.mode
        for step in range(1, 10**6):
            state = add(state)
            if step == 1:
                print("start", flush=True)
            if guard.should_stop(step):
                ckpt.save(step, state, {"data": {"position": step}}, force=True)
                print("stopped", step, flush=True)
                break
            time.sleep(0.01)
    ckpt.close()
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]))
