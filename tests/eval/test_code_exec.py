"""Code scoring: sandboxed subprocess, killed on overrun, no network."""

import time

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
