"""Resume: SIGKILL after a checkpoint + restart = uninterrupted run; SIGTERM saves at the current step."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import slow_main
from run_files import REPO, read_metrics

KEYS = ("loss", "loss/direct", "loss/em", "loss/indirect", "grad_norm", "lr", "gate/mean", "agree/top1",
        "clip_frac", "grad_norm/direct", "grad_norm/em", "grad_norm/indirect")  # fmt: skip


def _cmd(workdir, *extra, sleep=None):
    main = slow_main.command() if sleep else [sys.executable, "-m", "tsdkd_jax.main"]
    return [
        *main, "--config=configs/tiny.py", f"--workdir={workdir}",
        "--config.total_steps=6", "--config.checkpoint.every=2", "--config.checkpoint.export=False",
        "--config.eval_at_ends=False", *extra,
    ]  # fmt: skip


def _env(sleep=None):
    env = slow_main.env(os.environ, sleep)  # a slow loop (seconds per step) for the kill/signal tests
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/jaxcache")
    return env


def _run(workdir, *extra, timeout=300):
    out = subprocess.run(
        _cmd(workdir, *extra),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _values(workdir):
    return {r["step"]: [r.get(k, np.nan) for k in KEYS] for r in read_metrics(workdir) if "loss" in r}


def _wait_for(predicate, proc, timeout=240):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, f"the run exited early with {proc.returncode}"
        assert time.time() - start < timeout
        time.sleep(0.1)


def test_sigkill_after_checkpoint_then_restart_equals_uninterrupted(tiny_dir, tmp_path):
    _run(tmp_path / "full")
    work = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(work, sleep=0.5), cwd=REPO, env=_env(0.5), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for(lambda: (work / "checkpoints" / "4" / "commit_success.txt").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(_values(work)) < 6  # it really died before the end
    _run(work)
    full, resumed = _values(tmp_path / "full"), _values(work)
    assert sorted(full) == sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in full:
        np.testing.assert_allclose(resumed[step], full[step], rtol=1e-6, atol=1e-7, err_msg=f"step {step}")


def test_sigterm_saves_current_step_and_restart_continues(tiny_dir, tmp_path):
    work = tmp_path / "term"
    proc = subprocess.Popen(
        _cmd(work, sleep=1.0), cwd=REPO, env=_env(1.0), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for(lambda: (work / "metrics.jsonl").exists() and len(read_metrics(work)) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    saved = sorted(int(s) for s in os.listdir(work / "checkpoints") if s.isdigit())
    stopped = max(_values(work))
    assert saved[-1] == stopped < 6  # saved at the step it stopped, not at an interval step
    _run(work)
    assert sorted(_values(work)) == [1, 2, 3, 4, 5, 6]
    assert 6 in [int(s) for s in os.listdir(work / "checkpoints") if s.isdigit()]
