"""SIGTERM: the handler sets a flag; a real run saves once, exits 0, and the restart resumes from that step.
A failed run (non-finite loss) deletes and overwrites nothing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ckpt_states import snapshot

from tsdkd_jax.checkpoint import PreemptionGuard

WORKER = Path(__file__).with_name("sigterm_worker.py")
ROOT = Path(__file__).parents[2]


def test_guard_flag_and_clean_uninstall():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.should_stop(0)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs on the main thread at the next bytecode
        assert guard.should_stop(1)
    assert signal.getsignal(signal.SIGTERM) is before


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=str(ROOT), **extra)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/jaxcache")
    return env


def _run(workdir, total, *extra):
    return subprocess.run(
        [sys.executable, str(WORKER), str(workdir), str(total), *map(str, extra)],
        env=_env(),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sigterm_saves_once_and_restart_resumes(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(tmp_path), "100000000"],
        env=_env(STEP_SLEEP="0.003"),  # >= 3 s to the first interval save (step 1000)
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().split() == ["start", "0"]
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    stopped = int(out.split("stopped")[1].split()[0])
    assert stopped > 1
    steps = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert steps == [str(stopped)]  # exactly one save, at the step it stopped
    saved = snapshot(tmp_path / "checkpoints")

    rerun = _run(tmp_path, stopped + 3)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.split() == ["start", str(stopped), "done", str(stopped + 3)]
    after = snapshot(tmp_path / "checkpoints")
    assert all(after[k] == v for k, v in saved.items())  # the resumed run kept the preemption checkpoint


def test_failed_run_deletes_and_overwrites_nothing(tmp_path):
    first = _run(tmp_path, 2000)  # saves at 1000 and 2000
    assert first.returncode == 0, first.stderr[-3000:]
    export = tmp_path / "export" / "model.safetensors"  # stands in for an earlier run's other outputs
    export.parent.mkdir()
    export.write_bytes(b"weights")
    before = snapshot(tmp_path)

    failed = _run(tmp_path, 4000, 3000)  # resumes at 2000, NaN loss at 3000 (a save step)
    assert failed.returncode == 1
    assert failed.stdout.split()[:4] == ["start", "2000", "nonfinite", "3000"]
    assert snapshot(tmp_path) == before  # no new step, nothing removed or rewritten
