"""Code scoring: sandboxed subprocess, killed on overrun, no network."""

import os
import pathlib
import time

import pytest

from tsdkd_jax.eval import CodeScorer, run_tests

TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]


def test_passes_and_fails():
    out = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    v = CodeScorer()(out, {"tests": TESTS, "gold": ""})
    assert v.correct and v.extracted.startswith("def add")
    assert not CodeScorer()("def add(a, b):\n    return a - b\n", {"tests": TESTS}).correct
    assert run_tests("def add(a, b:\n", TESTS).status == "failed"  # syntax error
    assert run_tests("x = 1", ["assert y == 1"], setup="y = 1").passed


def test_infinite_loop_is_killed_within_timeout():
    t = time.monotonic()
    r = run_tests("def add(a, b):\n    while True:\n        pass\n", TESTS, timeout_s=1.0)
    assert r.status == "timeout" and not r.passed
    assert time.monotonic() - t < 5.0


def test_spawned_children_die_with_it():
    # a busy loop that also sleeps: the whole process group is killed, nothing keeps running
    r = run_tests("import time\nwhile True:\n    time.sleep(0.01)\n", timeout_s=0.5)
    assert r.status == "timeout"


def test_network_fails_cleanly():
    for program in (
        "import socket\nsocket.create_connection(('93.184.216.34', 80), timeout=30)",
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.connect(('8.8.8.8', 53))",
        "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=30).read()",
        "import _socket\n_socket.socket()",
    ):
        t = time.monotonic()
        r = run_tests(program, timeout_s=20.0)
        assert r.status == "failed", (program, r)
        assert "disabled in the evaluation sandbox" in r.detail, r.detail
        assert time.monotonic() - t < 10.0


def test_no_process_spawning_or_deleting():
    assert "disabled" in run_tests("import os\nos.system('echo hi')").detail
    assert "disabled" in run_tests("import subprocess\nsubprocess.run(['ls'])").detail
    assert "disabled" in run_tests("import os\nos.remove('/tmp/x')").detail


# ---- issue 13: the verdict comes from the tests having run, and the sandbox's limits hold --------------------

ADD = "def add(a, b):\n    return a - b\n"  # wrong: every test below would fail if it ran


def test_exiting_before_the_asserts_is_a_failure():
    for early_exit in (
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "exit()",
        "raise SystemExit",
        "import unittest\nunittest.main()",
    ):
        r = run_tests(ADD + early_exit + "\n", TESTS)
        assert r.status == "failed", (early_exit, r)
    # a program whose tests really pass, and one that only exits in a test it never reaches, still pass/fail
    assert run_tests("def add(a, b):\n    return a + b\n", TESTS).passed
    assert not run_tests("def add(a, b):\n    return a + b\n", [*TESTS, "import os; os._exit(0)"]).passed


def test_huge_output_is_capped_and_does_not_reach_the_parent():
    # 600 MB to stderr: the file cap stops it; the parent keeps only a short tail of stderr
    program = "import sys\nfor _ in range(600):\n    sys.stderr.write('x' * (1 << 20))\n"
    r = run_tests(program, ["assert True"], timeout_s=20.0, output_bytes=1 << 20)
    assert not r.passed and len(r.detail) <= 300


def test_process_creation_escapes_are_blocked():
    for program in (
        "import os\nos.posix_spawn('/bin/true', ['true'], {})",
        "import os\nos.execv('/bin/true', ['true'])",
        "import ctypes\nctypes.CDLL(None).system(b'true')",
        "import socket\ns = socket.SocketType(socket.AF_INET, socket.SOCK_STREAM)",
        "import os\nos.setsid()",
    ):
        r = run_tests(program, ["assert True"])
        assert r.status == "failed", (program, r)


def test_a_setsid_grandchild_is_refused_or_killed(tmp_path):
    """Python-level blocks undone (`posix` is the C module under os): a grandchild that leaves the process
    group and sleeps must not outlive the run (nor keep it waiting: the parent reads files, not pipes)."""
    pid_file = f"/tmp/tsdkd_grandchild_{os.getpid()}"
    program = (
        "import posix, time\n"
        "try:\n"
        "    pid = posix.fork()\n"
        "except OSError:\n"
        "    pid = -1\n"
        "if pid == 0:\n"
        "    posix.setsid()\n"
        f"    open({pid_file!r}, 'w').write(str(posix.getpid()))\n"
        "    time.sleep(3600)\n"
        "time.sleep(3600)\n"
    )
    r = run_tests(program, timeout_s=1.0)
    assert r.status == "timeout"
    if os.path.exists(pid_file):  # the fork was allowed (e.g. no RLIMIT_NPROC for this user): it must be gone
        pid = int(pathlib.Path(pid_file).read_text())
        os.remove(pid_file)
        stat = pathlib.Path(f"/proc/{pid}/stat")
        status = stat.read_text().split()[2] if stat.exists() else "gone"
        assert status in ("gone", "Z"), status


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the sandbox can hide /proc/<ppid>/environ only when run as root"
)
def test_parent_environment_and_files_outside_the_temp_dir_are_out_of_reach(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    program = (
        "import os\n"
        "try:\n"
        "    leaked = open(f'/proc/{os.getppid()}/environ', 'rb').read()\n"
        "except OSError:\n"
        "    leaked = b''\n"
        "try:\n"
        f"    open({str(victim)!r}, 'w').write('overwritten')\n"
        "except OSError:\n"
        "    pass\n"
    )
    r = run_tests(program, ["assert b'PATH=' not in leaked, leaked[:80]"])
    assert r.passed, r
    assert victim.read_text() == "original"
