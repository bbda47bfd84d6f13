"""Multi-host training on one box: two processes (gloo, 4 fake CPU devices each) train configs/tiny.py.

- they log the same metrics as one process with 8 devices (≤ 1e-5; in fact bit for bit) when that process
  reduces across its devices with the same collectives (gloo), host 0 alone writes metrics, TensorBoard, the
  export and DONE, and one process with 2 devices restores their checkpoint and continues;
- against XLA's in-process all-reduce (a single-host run's default) the fp32 sums are ordered differently:
  1-ulp differences at step 2 grow through Adam (lr 3e-2) to ~1e-5 by step 5, so that comparison is 1e-4;
- SIGKILL of one process makes the other exit non-zero within seconds with a clear message, and restarting
  both resumes from the last finalized checkpoint and ends where the uninterrupted run ends.

The mesh is data=1 × fsdp=4 × tensor=2, so every parameter is split across the two processes (fsdp) and the
batch shards of a step come from both hosts.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from run_files import REPO, read_metrics

from tsdkd_jax import train

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
STEPS, EVERY = 6, 2
OVERRIDES = {"total_steps": STEPS, "checkpoint.every": EVERY, "checkpoint.keep": 3, "mesh.data": 1,
             "mesh.fsdp": 4, "mesh.tensor": 2}  # fmt: skip
SKIP = ("time/", "tokens_per_s", "mfu", "eval/")  # wall-clock metrics differ; only one run evaluates


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(workdir, log_dir, port, process_id, num_processes=2, sleep=None, **overrides):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(process_id),
               TSDKD_TEST_LOCAL_DEVICES=str(8 // num_processes), TSDKD_TEST_HEARTBEAT_TIMEOUT="5")  # fmt: skip
    env.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/jaxcache")
    env.pop("TSDKD_DISTRIBUTED", None)
    env.pop("TSDKD_TEST_STEP_SLEEP", None)
    if sleep is not None:  # a slow loop (seconds per step, tests/helpers/slow_main.py) for the kill test
        env["TSDKD_TEST_STEP_SLEEP"] = str(sleep)
    args = [f"{k}={v!r}" for k, v in {**OVERRIDES, **overrides}.items()]
    log = open(os.path.join(log_dir, f"p{process_id}.log"), "a")  # noqa: SIM115 (closed by the child's exit)
    return subprocess.Popen([sys.executable, "-u", WORKER, str(workdir), *args], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


def _log(log_dir, process_id):
    with open(os.path.join(log_dir, f"p{process_id}.log")) as f:
        return "".join(line for line in f if "[Gloo]" not in line)


def _run_pair(workdir, log_dir, timeout=600, num_processes=2, **overrides):
    """Runs the job as `num_processes` processes (8 devices in all) and waits for all of them to succeed."""
    port = _free_port()
    procs = [_spawn(workdir, log_dir, port, i, num_processes, **overrides) for i in range(num_processes)]
    try:
        for i, p in enumerate(procs):
            assert p.wait(timeout=timeout) == 0, _log(log_dir, i)[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _values(workdir, steps=None):
    rows = [r for r in read_metrics(workdir) if "loss" in r and (steps is None or r["step"] in steps)]
    return {r["step"]: {k: v for k, v in r.items() if not k.startswith(SKIP)} for r in rows}


def _assert_same(got, want, rtol=1e-5):
    assert sorted(got) == sorted(want)
    for step in want:
        assert set(got[step]) == set(want[step]), step
        keys = sorted(want[step])
        np.testing.assert_allclose([got[step][k] for k in keys], [want[step][k] for k in keys], rtol=rtol,
                                   atol=1e-6, err_msg=f"step {step}: {keys}")  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process with 8 devices, joined to a one-process job so it all-reduces with gloo like the pair."""
    work = tmp_path_factory.mktemp("one_process")
    _run_pair(work / "run", work, num_processes=1)
    return _values(work / "run")


@pytest.fixture(scope="module")
def in_process_reference(tiny_config, tmp_path_factory):
    """The same run in this pytest process (8 devices, XLA's in-process collectives)."""
    work = tmp_path_factory.mktemp("in_process")
    c = tiny_config(**{k.replace(".", "__"): v for k, v in OVERRIDES.items()})
    train.run(c, str(work))
    return _values(work)


@pytest.mark.slow
def test_two_processes_equal_one_process_and_two_devices_continue(
    tiny_config, reference, in_process_reference, tmp_path
):
    work = tmp_path / "two_hosts"
    _run_pair(work, tmp_path, eval_at_ends=True)  # eval, async saves and the export on the multi-host path
    _assert_same(_values(work), reference)
    _assert_same(_values(work), in_process_reference, rtol=1e-4)  # reduction order only (module docstring)
    rows = read_metrics(work)
    assert [r["step"] for r in rows] == [0, *range(1, STEPS + 1)]  # host 0 alone writes: no duplicate rows
    assert "eval/kl_teacher_student" in rows[0] and "eval/kl_teacher_student" in rows[-1]
    assert len(os.listdir(work / "tensorboard")) == 1
    assert (work / "DONE").is_file() and (work / "export" / "config.json").is_file()
    assert sorted(int(s) for s in os.listdir(work / "checkpoints") if s.isdigit()) == [2, 4, 6]

    # One process, 2 devices (mesh data=2), from the two processes' step-4 checkpoint.
    cont = tmp_path / "one_host"
    shutil.copytree(work / "checkpoints" / "4", cont / "checkpoints" / "4")
    c = tiny_config(**{k.replace(".", "__"): v for k, v in OVERRIDES.items()})
    c.mesh.devices, c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, -1, 1, 1
    t = train.Trainer(c, str(cont))
    assert t.start_step == 4 and t.mesh.devices.size == 2
    t.run()
    # In-process collectives over 2 devices instead of gloo over 8 reorder the fp32 sums: 1e-4, as above.
    _assert_same(_values(cont), {s: reference[s] for s in (5, 6)}, rtol=1e-4)


@pytest.mark.slow
def test_killed_process_stops_its_peer_and_both_resume(reference, tmp_path):
    work = tmp_path / "run"
    port = _free_port()
    procs = [_spawn(work, tmp_path, port, i, sleep=1.0) for i in range(2)]
    try:
        start = time.monotonic()
        while not (work / "checkpoints" / "4" / "commit_success.txt").exists():
            assert all(p.poll() is None for p in procs), _log(tmp_path, 0)[-4000:]
            assert time.monotonic() - start < 600
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        rc = procs[0].wait(timeout=120)
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    out = _log(tmp_path, 0)
    assert rc != 0, out[-4000:]
    assert "another task died" in out, out[-4000:]  # jax's coordination service names the cause
    assert waited < 60, waited
    assert not (work / "DONE").exists() and not (work / "export").exists()
    assert max(_values(work)) < STEPS

    _run_pair(work, tmp_path)  # both restart: resume from the last finalized step, finish the run
    assert re.search(r"resumed from \S+ at step 4\n", _log(tmp_path, 0))  # the last finalized step
    _assert_same(_values(work), reference)
    assert (work / "DONE").is_file()
