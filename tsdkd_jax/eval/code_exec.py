"""Run generated code against its tests in a separate, time-limited Python process without network access.

Verdict. A harness (HARNESS) runs inside the child: it executes the program, then `setup`, then each test
statement, itself, and only after the last test has run writes a random nonce (given to it through an
environment variable it removes before the program starts) to a result file. "passed" means that file holds
the nonce — not the exit code — so a program that ends the process early (`sys.exit(0)`, `os._exit(0)`,
`unittest.main()`, `exit()`) before the asserts ran is "failed".

What is guaranteed (Linux):
  - the child is `python -I -S` (no PYTHON* variables, no site/user packages, no sitecustomize) in its own
    session, started in a fresh temporary directory, with stdin closed and an environment of only PATH, LANG
    and the nonce variable (removed before the program runs);
  - stdout and stderr go to files in that directory, not pipes, capped by RLIMIT_FSIZE (`output_bytes`, also
    the cap on any file it writes); the parent reads at most the last 4 KiB of stderr;
  - RLIMIT_CPU (timeout + 1 s), RLIMIT_AS (`memory_bytes`), RLIMIT_NPROC (no new processes; not enforced by
    Linux for root, see the next point);
  - at the deadline the whole process group is SIGKILLed, then every process still carrying this run's tag
    in its environment (a grandchild that left the group with setsid) is SIGKILLed too; the parent waits only
    for its own child, never on a pipe, so a run takes about `timeout_s` whatever its children do;
  - when the parent runs as root and a world-executable Python exists, the child runs as user `nobody`: it
    cannot read the parent's (or any root process's) environment through /proc/<pid>/environ, and can write
    only to its temporary directory and world-writable places (/tmp, /dev/shm);
  - before the program runs, socket constructors (`socket.socket`, `SocketType`, `_socket.socket`,
    `create_connection`, ...), process creation (`os.system`, `fork`, `exec*`, `spawn*`, `posix_spawn*`,
    `subprocess`), `ctypes`, file deletion/renaming and `os.chdir` raise or fail to import.
Not guaranteed: the in-process blocks are Python-level and can be undone by determined code (e.g. reloading
modules, `importlib` tricks, `/proc/self/mem`); as a non-root user the child runs with the caller's uid, so it
can read same-user processes' /proc/<pid>/environ (the parent passes it no secrets, but its own environment
is readable) and write anywhere the caller can (up to RLIMIT_FSIZE per file); RLIMIT_NPROC counts all of the
uid's processes. This stops accidents and common escapes, not an attacker: run untrusted benchmarks in a
container.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

TAG_VAR = "TSDKD_SANDBOX_TAG"  # marks every process of one run (inherited unless a program clears it)
NONCE_VAR = "TSDKD_SANDBOX_NONCE"
RESULT, JOB, STDOUT, STDERR = "result", "job.json", "stdout.txt", "stderr.txt"

HARNESS = """\
import os as _os, resource as _r, signal as _sig, sys as _sys, json as _json
_nonce = _os.environ.pop({nonce_var!r})
_job = _json.load(open({job!r}))
_os.remove({job!r})
_r.setrlimit(_r.RLIMIT_CPU, ({cpu_s}, {cpu_s} + 1))
_r.setrlimit(_r.RLIMIT_AS, ({memory_bytes}, {memory_bytes}))
_r.setrlimit(_r.RLIMIT_FSIZE, ({output_bytes}, {output_bytes}))
_r.setrlimit(_r.RLIMIT_NPROC, (0, 0))
_sig.signal(_sig.SIGXFSZ, _sig.SIG_IGN)  # an over-long write fails (EFBIG) instead of killing silently
_open, _write, _exit = _os.open, _os.write, _os._exit
import shutil as _sh, socket as _so, subprocess as _sp, _socket

def _no(*args, **kwargs):
    raise OSError("disabled in the evaluation sandbox (network / processes / file deletion)")

class _NoSocket(_so.socket):
    def __init__(self, *args, **kwargs):
        _no()

for _m in (_so, _socket):
    _m.socket = _m.SocketType = _NoSocket
    for _n in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
               "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        if hasattr(_m, _n):
            setattr(_m, _n, _no)
for _n in dir(_os):
    if _n.startswith(("exec", "spawn", "posix_spawn", "fork")) or _n in (
            "system", "popen", "kill", "killpg", "remove", "unlink", "rmdir", "removedirs", "rename", "renames",
            "replace", "truncate", "putenv", "unsetenv", "chdir", "fchdir", "chroot", "setsid", "setpgid"):
        setattr(_os, _n, _no)
_sh.rmtree = _sh.move = _no
_sp.Popen = _sp.run = _sp.call = _sp.check_output = _sp.check_call = _sp.getoutput = _no
for _n in ("ctypes", "_ctypes", "_posixsubprocess", "multiprocessing", "pty"):
    _sys.modules[_n] = None  # importing them raises ImportError
del _m, _n

def _fail(stage, e):
    print(f"{{stage}}: {{type(e).__name__}}: {{e}}"[:300], file=_sys.stderr, flush=True)
    _exit(1)

_ns = {{"__name__": "__main__", "__builtins__": __builtins__}}
for _stage, _code in [("program", _job["program"]), ("setup", _job["setup"])] + [
        ("test " + str(_i + 1), _t) for _i, _t in enumerate(_job["tests"])]:
    try:
        exec(compile(_code, "<" + _stage + ">", "exec"), _ns)
    except SystemExit as _e:  # sys.exit / exit() / unittest.main() before the tests finished
        _fail(_stage, RuntimeError(f"the code exited (SystemExit {{_e.code!r}}) before the tests ran"))
    except BaseException as _e:
        _fail(_stage, _e)
_fd = _open({result!r}, _os.O_WRONLY | _os.O_CREAT | _os.O_TRUNC, 0o600)
_write(_fd, _nonce.encode())
_exit(0)
"""


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """status: "passed", "failed" (an assert or exception), "timeout" (killed) or "error" (could not run)."""

    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _world_executable(path: str) -> bool:
    """Whether a user other than the owner can run `path` (every parent folder traversable)."""
    path = os.path.realpath(path)
    parts = [path] + [os.path.dirname(path)]
    while parts[-1] != os.path.dirname(parts[-1]):
        parts.append(os.path.dirname(parts[-1]))
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in parts)


def _sandbox_user() -> tuple[int | None, str]:
    """(uid to run as, python to run): `nobody` when we are root and a Python it may execute exists."""
    if os.geteuid() != 0:
        return None, sys.executable
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return None, sys.executable
    for python in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if python and os.path.exists(python) and _world_executable(python):
            return nobody, python
    return None, sys.executable


def _kill_tagged(tag: str) -> None:
    """SIGKILL every process whose environment carries `tag` (children that left the process group)."""
    needle = f"{TAG_VAR}={tag}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            continue


def _tail(path: str, limit: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_tests(
    program: str,
    tests: list[str] | tuple[str, ...] = (),
    *,
    setup: str = "",
    timeout_s: float = 10.0,
    memory_bytes: int = 2 << 30,
    output_bytes: int = 1 << 24,
) -> ExecResult:
    """Runs `program`, then `setup`, then each test statement; passed iff the harness got past the last test
    in time (see the module docstring)."""
    nonce, tag = secrets.token_hex(16), secrets.token_hex(8)
    uid, python = _sandbox_user()
    with tempfile.TemporaryDirectory(prefix="tsdkd_exec_") as tmp:
        paths = {name: os.path.join(tmp, name) for name in (RESULT, JOB, STDOUT, STDERR)}
        with open(paths[JOB], "w", encoding="utf-8") as f:
            json.dump({"program": program, "setup": setup, "tests": list(tests)}, f)
        harness = HARNESS.format(
            nonce_var=NONCE_VAR, job=paths[JOB], result=paths[RESULT], cpu_s=int(timeout_s) + 1,
            memory_bytes=int(memory_bytes), output_bytes=int(output_bytes),
        )  # fmt: skip
        if uid is not None:
            os.chown(tmp, uid, -1)
            os.chown(paths[JOB], uid, -1)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", TAG_VAR: tag, NONCE_VAR: nonce}
        with open(paths[STDOUT], "wb") as out, open(paths[STDERR], "wb") as err:
            try:
                proc = subprocess.Popen(
                    [python, "-I", "-S", "-c", harness], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, start_new_session=True, user=uid, group=None if uid is None else uid,
                    extra_groups=None if uid is None else [],
                )  # fmt: skip
            except OSError as e:
                return ExecResult("error", f"could not start python: {e}")
        try:
            proc.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it left running in its group
        except (ProcessLookupError, PermissionError):
            pass
        _kill_tagged(tag)
        proc.wait()
        try:
            with open(paths[RESULT], encoding="utf-8") as f:
                finished = f.read() == nonce
        except OSError:
            finished = False
        err_text = _tail(paths[STDERR]).strip().splitlines()
    if finished:
        return ExecResult("passed")
    if timed_out:
        return ExecResult("timeout", f"killed after {timeout_s:g} s")
    if proc.returncode < 0:  # killed by a signal: SIGXCPU (CPU limit) or the kernel
        return ExecResult("timeout", f"signal {-proc.returncode}")
    if proc.returncode == 0:
        return ExecResult("failed", "the process ended before its tests had run (e.g. os._exit)")
    return ExecResult("failed", err_text[-1][:300] if err_text else f"exit {proc.returncode}")
