"""One trainer per workdir: `<workdir>/LOCK`, held by process 0 while it trains.

Why: two trainers on one workdir both "succeed" while interleaving metrics.jsonl rows, mixing checkpoint
steps, and one's start-up sweep can move the other's in-flight save aside. The lock file is JSON
{host, pid, token, heartbeat}; process 0 creates it (exclusively, locally) and a daemon thread rewrites the
heartbeat every HEARTBEAT_S seconds. Another trainer finding it exits at once naming the holder, unless the
lock is stale: the holder's pid is gone on this host (kill -9, a crash), or, from another host (a re-created
pod slice), the heartbeat is older than STALE_S. A stale lock is taken over with a warning. The same process
may take its own lock again (a second Trainer in one Python process). `release` removes the file; a process
that dies without releasing leaves a stale lock, which the next run takes over.

On gs:// the check and the write are two requests (GCS has no exclusive create through epath), so two
trainers started within the same second can both pass: the lock stops the common mistake, not a race.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
import uuid

import jax
import numpy as np
from jax.experimental import multihost_utils

from tsdkd_jax.checkpoint import workdir as wd

log = logging.getLogger(__name__)

NAME = "LOCK"
HEARTBEAT_S = 60.0
STALE_S = 600.0


class WorkdirLockedError(RuntimeError):
    """Another live trainer holds the workdir."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def holder_is_stale(holder: dict, now: float) -> str | None:
    """Why the lock `holder` no longer counts (None while it does)."""
    age = now - float(holder.get("heartbeat", 0))
    if holder.get("host") == socket.gethostname():
        return None if _pid_alive(int(holder.get("pid", -1))) else f"process {holder.get('pid')} is gone"
    return f"no heartbeat for {age:.0f} s (stale after {STALE_S:.0f} s)" if age > STALE_S else None


def describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return f"host {holder.get('host')!r} pid {holder.get('pid')} (started {started})"


class WorkdirLock:
    """`acquire()` (raises WorkdirLockedError naming the holder) / `release()`; call on process 0 only."""

    def __init__(self, workdir):
        self.path = wd.path(workdir) / NAME
        self.token = uuid.uuid4().hex
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-written or damaged: treated as stale below (no heartbeat, unknown host)

    def _text(self) -> str:
        return json.dumps({**self.record, "heartbeat": time.time()})

    def _create(self) -> bool:
        """Write the lock file if there is none; False if there is one."""
        if wd.is_remote(self.path):
            if self._read() is not None:
                return False
            wd.write_text(self.path, self._text())
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(os.fspath(self.path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self._text())
        return True

    def acquire(self) -> None:
        self.record["started"] = time.time()
        for _ in range(3):  # a stale lock removed by us, or a holder that released meanwhile: try again
            if self._create():
                break
            holder = self._read()
            if holder is None:
                continue
            if holder.get("host") == self.record["host"] and holder.get("pid") == self.record["pid"]:
                wd.write_text(self.path, self._text())  # our own process's (an earlier Trainer's): take it
                break
            why = holder_is_stale(holder, time.time())
            if why is None:
                raise WorkdirLockedError(
                    f"workdir {self.path.parent} is in use by another trainer ({describe(holder)}; lock file "
                    f"{self.path}). Stop that run first, or use another --workdir. If that trainer is gone, "
                    f"delete {self.path}."
                )
            log.warning("taking over the stale workdir lock of %s: %s", describe(holder), why)
            self.path.unlink(missing_ok=True)
        else:
            raise WorkdirLockedError(f"could not take the workdir lock {self.path} (it keeps changing)")
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="tsdkd-workdir-lock", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                current = self._read()
                if current and current.get("token") != self.token:
                    log.error("the workdir lock %s was taken by %s; no longer refreshing it", self.path,
                              describe(current))  # fmt: skip
                    return
                wd.write_text(self.path, self._text())
            except OSError as e:  # a transient GCS/NFS error must not kill the run
                log.warning("could not refresh the workdir lock %s: %s", self.path, e)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still ours. Idempotent."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread = None
        try:
            current = self._read()
            if current is not None and current.get("token") == self.token:
                self.path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("could not remove the workdir lock %s: %s", self.path, e)


def acquire_for_run(workdir) -> WorkdirLock:
    """Process 0 takes the workdir lock (released by `release()` or at interpreter exit; the other processes
    get one that is never taken); every process raises WorkdirLockedError when it could not. Collective with
    several processes."""
    lock, error = WorkdirLock(workdir), ""
    if jax.process_index() == 0:
        try:
            lock.acquire()
            atexit.register(lock.release)
        except WorkdirLockedError as e:
            error = str(e)
    if jax.process_count() > 1:
        failed = bool(multihost_utils.broadcast_one_to_all(np.int32(bool(error))))
        error = error or ("the workdir is in use by another trainer (see process 0's log)" if failed else "")
    if error:
        raise WorkdirLockedError(error)
    return lock
