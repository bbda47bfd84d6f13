"""Two processes (gloo, 4 CPU devices each) agree on a SIGTERM step, save collectively, and one process with
2 devices restores the checkpoint."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tsdkd_jax.checkpoint import Checkpointer, abstract_target
from tsdkd_jax.parallel import make_mesh

WORKER = Path(__file__).with_name("multihost_worker.py")
ROOT = Path(__file__).parents[2]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["jax_preemption_service", "allgather"])
def test_two_processes_sigterm_save_then_one_process_restores(tmp_path, mode):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/jaxcache")
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(port), str(i), str(tmp_path), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for p in procs:  # gloo logs to stdout too
            while (line := p.stdout.readline()) and line.strip() != "start":
                pass
            assert line, p.communicate()[1][-3000:]
        os.kill(procs[1].pid, signal.SIGTERM)  # preemption notice to ONE process
        outs = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    stops = {out.split("stopped")[1].split()[0] for out, _ in outs}
    assert len(stops) == 1, outs  # both processes saved at the same agreed step
    step = int(stops.pop())

    mesh = make_mesh(data=1, fsdp=1, tensor=2, devices=jax.devices()[:2])
    sharding = NamedSharding(mesh, P(None, "tensor"))
    target = {"w": jax.ShapeDtypeStruct((8, 16), np.float32)}
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == step
        state, meta = ckpt.restore(abstract_target(target, sharding))
    assert meta == {"data": {"position": step}}
    expected = np.arange(8 * 16, dtype=np.float32).reshape(8, 16) + step
    np.testing.assert_array_equal(np.asarray(state["w"]), expected)
    assert state["w"].sharding.is_equivalent_to(sharding, 2)
