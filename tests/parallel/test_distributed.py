"""Multi-host start-up: topology resolution from env, and real 2-process runs on 127.0.0.1 (gloo)."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import pytest

from tsdkd_jax.parallel import distributed

WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")
REPO = WORKER.parents[2]


def test_resolve_nothing_configured_is_single_process():
    assert distributed.resolve(env={}) == distributed.Topology("none")
    assert (
        distributed.resolve(env={"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}).method
        == "none"
    )


def test_resolve_explicit_from_env_and_args():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed.resolve(env=env) == distributed.Topology("explicit", 3, 4, "10.0.0.1:1234")
    # Flags win over env.
    top = distributed.resolve(process_id=1, env=env)
    assert (top.process_id, top.num_processes) == (1, 4)


def test_resolve_explicit_errors_name_what_is_missing():
    with pytest.raises(ValueError, match="missing JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID"):
        distributed.resolve(num_processes=2, env={})
    with pytest.raises(ValueError, match=r"process_id=2 must be in \[0, num_processes=2\)"):
        distributed.resolve(coordinator_address="h:1", num_processes=2, process_id=2, env={})
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an integer"):
        distributed.resolve(env={"JAX_NUM_PROCESSES": "two"})
    with pytest.raises(ValueError, match="is set but not"):
        distributed.resolve(env={"JAX_COORDINATOR_ADDRESS": "h:1"})
    with pytest.raises(ValueError, match="method must be one of"):
        distributed.resolve(method="mpi", env={})
    assert (
        distributed.resolve(env={"JAX_COORDINATOR_ADDRESS": "h:1", "TSDKD_DISTRIBUTED": "none"}).method
        == "none"
    )


def _slurm_env(**extra):
    env = {
        "SLURM_JOB_ID": "12345",
        "SLURM_NTASKS": "16",
        "SLURM_PROCID": "9",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[003-010],cpu1",
        "SLURM_STEP_NUM_NODES": "2",
    }
    return {**env, **extra}


def test_resolve_slurm_one_task_per_gpu_pins_local_gpu():
    top = distributed.resolve(env=_slurm_env())
    assert top == distributed.Topology("slurm", 9, 16, "gpu003:61497", (1,))
    # srun already gave each task one GPU: no pinning (device 1 would not exist).
    assert distributed.resolve(env=_slurm_env(CUDA_VISIBLE_DEVICES="5")).local_device_ids is None


def test_resolve_slurm_one_task_per_node_sees_all_gpus():
    env = _slurm_env(SLURM_NTASKS="2", SLURM_PROCID="1", JAX_COORDINATOR_ADDRESS="gpu003:7000")
    assert distributed.resolve(env=env) == distributed.Topology("slurm", 1, 2, "gpu003:7000", None)


@pytest.mark.parametrize(
    "nodelist, host",
    [("node001", "node001"), ("a1,b2", "a1"), ("gpu[003-010,12],cpu1", "gpu003"), ("x-[7,9]", "x-7")],
)
def test_first_slurm_host(nodelist, host):
    assert distributed._first_slurm_host(nodelist) == host


def test_resolve_tpu_vm_from_env():
    assert distributed.resolve(env={"TPU_WORKER_HOSTNAMES": "t0,t1"}) == distributed.Topology(
        "tpu", None, None
    )


def test_initialize_is_a_noop_on_one_process(monkeypatch, tmp_path):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "TSDKD_DISTRIBUTED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TSDKD_DISTRIBUTED", "none")  # the CI box might sit inside a SLURM job
    assert distributed.initialize() == distributed.Topology("none")
    assert not jax.distributed.is_initialized()
    assert distributed.is_host0()
    assert not distributed.is_done(str(tmp_path))
    distributed.mark_done(str(tmp_path / "run"))
    assert distributed.is_done(str(tmp_path / "run"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(action, process_id, port, **env):
    full = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": str(process_id),
        "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/jaxcache"),
        **env,
    }
    full.pop("TSDKD_DISTRIBUTED", None)
    return subprocess.Popen(
        [sys.executable, str(WORKER), action],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc, timeout):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"process still running after {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


def test_two_processes_psum_over_eight_devices():
    port = _free_port()
    procs = [_spawn("psum", i, port) for i in range(2)]
    results = []
    for proc in procs:
        rc, out = _finish(proc, timeout=120)
        assert rc == 0, out[-3000:]
        (line,) = [x for x in out.splitlines() if x.startswith("RESULT ")]
        results.append(json.loads(line.removeprefix("RESULT ")))
    for i, r in enumerate(results):
        assert r["method"] == "explicit" and r["process_id"] == i and r["num_processes"] == 2
        assert r["is_host0"] == (i == 0)
        assert (r["local_devices"], r["devices"], r["count"]) == (4, 8, 8)
        assert r["psum"] == sum(range(1, 9))


def test_missing_peer_exits_with_clear_error_in_bounded_time():
    port = _free_port()
    start = time.monotonic()
    rc, out = _finish(_spawn("psum", 0, port, TSDKD_TEST_INIT_TIMEOUT="4"), timeout=90)
    elapsed = time.monotonic() - start
    assert rc == distributed.EXIT_PEER_TIMEOUT, out[-3000:]
    assert f"process 0 of 2 could not meet all peers at coordinator 127.0.0.1:{port} within 3 s" in out
    assert elapsed < 45, elapsed


def test_crashed_peer_stops_the_survivor_in_bounded_time():
    port = _free_port()
    survivor = _spawn("wait", 0, port, TSDKD_TEST_HEARTBEAT_TIMEOUT="3")
    crasher = _spawn("crash", 1, port, TSDKD_TEST_HEARTBEAT_TIMEOUT="3")
    rc_crash, out_crash = _finish(crasher, timeout=90)
    assert rc_crash == 3, out_crash[-3000:]
    crashed_at = time.monotonic()
    rc, out = _finish(survivor, timeout=90)
    assert rc != 0 and "READY" in out, out[-3000:]
    assert "another task died" in out
    assert time.monotonic() - crashed_at < 45
