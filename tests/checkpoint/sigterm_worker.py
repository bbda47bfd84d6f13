"""A tiny training loop driven by the checkpoint API, run as a subprocess by test_ckpt_preemption.py.

usage: python sigterm_worker.py WORKDIR TOTAL_STEPS [NAN_AT_STEP]   (env STEP_SLEEP: seconds per step)
Each step adds 1 to `x` and splits the RNG; after step s the state has x == s. Prints "start <step>" once the
first step ran, "stopped <step>" after a SIGTERM save, "nonfinite <step>" on a forced NaN, "done <step>".
"""

import os
import sys
import time

import jax
import jax.numpy as jnp

from tsdkd_jax.checkpoint import Checkpointer, NonFiniteError, PreemptionGuard, abstract_target


def main(workdir, total, nan_at=-1):
    def init():
        return {"x": jnp.zeros((), jnp.float32), "step": jnp.zeros((), jnp.int32), "rng": jax.random.key(0)}

    @jax.jit
    def train_step(state):
        rng, _ = jax.random.split(state["rng"])
        return {"x": state["x"] + 1.0, "step": state["step"] + 1, "rng": rng}

    pause = float(os.environ.get("STEP_SLEEP", "0"))
    ckpt = Checkpointer(workdir, save_interval_steps=1000, max_to_keep=2)
    state, start, data = init(), 0, {"position": 0}
    if ckpt.latest_step() is not None:
        target = abstract_target(jax.eval_shape(init), jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        state, meta = ckpt.restore(target)
        start, data = int(state["step"]), meta["data"]
        assert start == ckpt.latest_step() == data["position"], (start, data)
    with PreemptionGuard() as guard:
        for step in range(start + 1, total + 1):
            state = train_step(state)
            data = {"position": step}
            loss = jnp.nan if step == nan_at else state["x"]
            if step == start + 1:
                print("start", start, flush=True)
            try:
                ckpt.save(step, state, {"data": data, "method": "test"}, metrics={"loss": loss})
            except NonFiniteError as e:
                print("nonfinite", step, e, flush=True)
                ckpt.close()
                return 1
            if guard.should_stop(step):
                ckpt.save(step, state, {"data": data, "method": "test"}, force=True)
                print("stopped", step, flush=True)
                break
            if pause:
                jax.block_until_ready(state)
                time.sleep(pause)
    ckpt.close()
    assert float(state["x"]) == int(state["step"])
    print("done", int(state["step"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), *(int(a) for a in sys.argv[3:])))
