"""The workdir lock's rules on its own: a live holder blocks, a gone or silent one is taken over, release."""

import json
import os
import socket
import subprocess
import time

import pytest

from tsdkd_jax.checkpoint import lock as lock_lib


def _write(workdir, **record):
    (workdir / lock_lib.NAME).write_text(json.dumps({"token": "other", "started": 0, **record}))


def test_live_holder_on_this_host_blocks(tmp_path):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        _write(tmp_path, host=socket.gethostname(), pid=holder.pid, heartbeat=time.time())
        with pytest.raises(lock_lib.WorkdirLockedError, match=f"pid {holder.pid}"):
            lock_lib.WorkdirLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the same holder, now gone: taken over
    lock = lock_lib.WorkdirLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / lock_lib.NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / lock_lib.NAME).exists()


def test_other_host_counts_until_its_heartbeat_is_stale(tmp_path):
    _write(tmp_path, host="another-host", pid=1, heartbeat=time.time() - 5)
    with pytest.raises(lock_lib.WorkdirLockedError, match="another-host"):
        lock_lib.WorkdirLock(tmp_path).acquire()
    _write(tmp_path, host="another-host", pid=1, heartbeat=time.time() - lock_lib.STALE_S - 5)
    lock = lock_lib.WorkdirLock(tmp_path)
    lock.acquire()
    lock.release()


def test_release_leaves_a_lock_taken_over_by_someone_else(tmp_path):
    lock = lock_lib.WorkdirLock(tmp_path)
    lock.acquire()
    _write(tmp_path, host="another-host", pid=1, heartbeat=time.time())  # e.g. deleted by hand and retaken
    lock.release()
    assert json.loads((tmp_path / lock_lib.NAME).read_text())["host"] == "another-host"
