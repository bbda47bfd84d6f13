"""Run generated code against its tests in a separate, time-limited Python process without network access.

The child is `python -I -S` (isolated: no PYTHON* variables, no user or site packages, so no sitecustomize;
only the standard library) in a fresh temporary directory with an empty environment, its own session (the
whole process group is killed on overrun), resource limits (CPU seconds, address space, file size), stdin
closed, and a preamble that makes every socket constructor raise before the model's code runs and disables
process-spawning / file-deleting calls (in the spirit of human-eval's `reliability_guard`). This stops accidents
(infinite loops, network calls, `rm`), not a determined attacker: run untrusted benchmarks in a container.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile

PREAMBLE = """\
import os as _os, resource as _r, shutil as _sh, socket as _so, subprocess as _sp, _socket

# Limits set by the child itself (no preexec_fn: not fork-safe in a process with JAX's threads).
_r.setrlimit(_r.RLIMIT_CPU, ({cpu_s}, {cpu_s} + 1))
_r.setrlimit(_r.RLIMIT_AS, ({memory_bytes}, {memory_bytes}))
_r.setrlimit(_r.RLIMIT_FSIZE, (1 << 24, 1 << 24))

def _no(*args, **kwargs):
    raise OSError("disabled in the evaluation sandbox (network / processes / file deletion)")

class _NoSocket(_so.socket):
    def __init__(self, *args, **kwargs):
        _no()

for _m in (_so, _socket):
    _m.socket = _NoSocket
    for _n in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
               "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        if hasattr(_m, _n):
            setattr(_m, _n, _no)
for _n in ("system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execvp", "spawnv",
           "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "truncate", "putenv", "chdir"):
    if hasattr(_os, _n):
        setattr(_os, _n, _no)
_sh.rmtree = _sh.move = _no
_sp.Popen = _sp.run = _sp.call = _sp.check_output = _sp.check_call = _no
del _m, _n
"""


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """status: "passed", "failed" (an assert or exception), "timeout" (killed) or "error" (could not run)."""

    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_tests(
    program: str,
    tests: list[str] | tuple[str, ...] = (),
    *,
    setup: str = "",
    timeout_s: float = 10.0,
    memory_bytes: int = 2 << 30,
) -> ExecResult:
    """Runs `program`, then `setup`, then each test statement; passed iff the process exits 0 in time."""
    preamble = PREAMBLE.format(cpu_s=int(timeout_s) + 1, memory_bytes=int(memory_bytes))
    source = "\n".join([preamble, program, "", setup, "", *tests, ""])
    with tempfile.TemporaryDirectory(prefix="tsdkd_exec_") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", path],
                cwd=tmp,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            return ExecResult("error", f"could not start python: {e}")
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            return ExecResult("timeout", f"killed after {timeout_s:g} s")
    if proc.returncode == 0:
        return ExecResult("passed")
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] if err else []
    if proc.returncode < 0:  # killed by a signal: SIGXCPU (CPU limit) or the kernel
        return ExecResult("timeout", f"signal {-proc.returncode}")
    return ExecResult("failed", tail[0][:300] if tail else f"exit {proc.returncode}")
