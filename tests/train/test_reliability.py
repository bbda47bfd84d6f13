"""Issue 13, as a user meets it (subprocess runs of configs/tiny.py): resume refuses another configuration
without moving anything, one trainer per workdir, Ctrl-C saves, mistakes end in one line with exit code 2."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import slow_main
from run_files import REPO, read_metrics

BASE = ("--config.checkpoint.every=2", "--config.checkpoint.export=False", "--config.eval_at_ends=False")


def _cmd(workdir, *extra, sleep=None):
    main = slow_main.command() if sleep else [sys.executable, "-m", "tsdkd_jax.main"]
    return [*main, "--config=configs/tiny.py", f"--workdir={workdir}", *BASE, *extra]


def _env(sleep=None):
    env = slow_main.env(os.environ, sleep)  # a slow loop (seconds per step) for the signal tests
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/jaxcache")
    env.pop("TSDKD_TRACEBACK", None)
    return env


def _run(workdir, *extra):
    return subprocess.run(_cmd(workdir, *extra), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


def _popen(workdir, *extra, sleep=None):
    return subprocess.Popen(_cmd(workdir, *extra, sleep=sleep), cwd=REPO, env=_env(sleep),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for(predicate, proc, timeout=300):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, (
            f"the run exited early with {proc.returncode}: {proc.stderr.read()[-2000:]}"
        )
        assert time.time() - start < timeout
        time.sleep(0.1)


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_line_error(out, *needles):
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("tsdkd_jax: error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_resume_refuses_another_config_and_moves_nothing(tiny_config, tmp_path):
    work = tmp_path / "run"
    work.mkdir()
    # a lock left by a trainer that was killed (its pid is gone) does not stop the next run
    stale = {"host": socket.gethostname(), "pid": _dead_pid(), "token": "x", "started": 0, "heartbeat": 0}
    (work / "LOCK").write_text(json.dumps(stale))
    out = _run(work, "--config.total_steps=4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "taking over the stale workdir lock" in out.stderr and not (work / "LOCK").exists()
    before = _listing(work / "checkpoints")
    assert "4" in before

    teacher = tiny_config().teacher.path  # another model: another state shape
    _one_line_error(_run(work, "--config.total_steps=6", f"--config.student.path={teacher}"), "another shape")
    _one_line_error(
        _run(work, "--config.total_steps=6", "--config.optim.lr=0.01", "--config.method=gkd"),
        "optim.lr: saved 0.03, now 0.01", 'method: saved "tsdkd", now "gkd"', "allow_config_change=True",
    )  # fmt: skip
    _one_line_error(_run(work, "--config.total_steps=2"), "total_steps=2 is below", "(4")
    assert _listing(work / "checkpoints") == before  # nothing renamed or deleted

    out = _run(
        work,
        "--config.total_steps=6",
        "--config.optim.lr=0.01",
        "--config.checkpoint.allow_config_change=True",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming" in out.stderr and "optim.lr" in out.stderr
    assert [r["step"] for r in read_metrics(work)] == [1, 2, 3, 4, 5, 6]


def test_second_trainer_on_a_workdir_exits_at_once_naming_the_holder(tiny_dir, tmp_path):
    work = tmp_path / "run"
    first = _popen(work, "--config.total_steps=6", sleep=1.0)
    _wait_for(lambda: (work / "metrics.jsonl").exists() and len(read_metrics(work)) >= 1, first)
    second = _run(work, "--config.total_steps=6")
    _one_line_error(second, "in use by another trainer", f"pid {first.pid}", socket.gethostname())
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    assert [r["step"] for r in read_metrics(work)] == [1, 2, 3, 4, 5, 6]  # no row twice
    assert not (work / "LOCK").exists()


def test_sigint_saves_the_current_step_and_a_second_one_aborts(tiny_dir, tmp_path):
    work = tmp_path / "int"
    proc = _popen(work, "--config.total_steps=6", sleep=1.0)
    _wait_for(lambda: (work / "metrics.jsonl").exists() and len(read_metrics(work)) >= 1, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    saved = sorted(int(s) for s in os.listdir(work / "checkpoints") if s.isdigit())
    stopped = max(r["step"] for r in read_metrics(work))
    assert saved[-1] == stopped < 6  # saved at the step it stopped, not at an interval step
    assert _run(work, "--config.total_steps=6").returncode == 0
    assert [r["step"] for r in read_metrics(work)] == [1, 2, 3, 4, 5, 6]

    work2 = tmp_path / "int2"
    proc = _popen(work2, "--config.total_steps=6", sleep=1.0)
    _wait_for(lambda: (work2 / "metrics.jsonl").exists() and len(read_metrics(work2)) >= 1, proc)
    proc.send_signal(signal.SIGINT)
    seen = []  # two signals sent at once would reach Python's handler once: wait for the first one's log line
    while not seen or "Received SIGINT" not in seen[-1]:
        seen.append(proc.stderr.readline())
        assert seen[-1], "".join(seen)[-3000:]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == -signal.SIGINT  # died of the signal: exit status 130 in a shell
    assert "aborted by a second Ctrl-C" in proc.stderr.read()


def test_config_mistakes_end_in_one_line_with_exit_code_2(tiny_dir, tmp_path):
    work = tmp_path / "bad"
    _one_line_error(_run(work, "--config.checkpoint.keep=0"), "checkpoint.keep: must be >= 1")
    _one_line_error(_run(work, "--config.loss.chunk_size=0"), "loss.chunk_size: must be >= 1")
    _one_line_error(_run(work, "--config.loss.rank_k=100000"), "loss.rank_k: 100000 exceeds")
    _one_line_error(_run(work, "--config.optim.lrr=1"), 'Did you mean "lr"')
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9", "response": "1"}\n')
    _one_line_error(_run(work, f"--config.data.path={bad}"), str(bad), "not UTF-8")
    env = {**_env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    hub = subprocess.run(_cmd(work, "--config.data.path=nonexistent-org/no-such-dataset"), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    _one_line_error(hub, "no-such-dataset", "local file")
    assert not (work / "checkpoints").exists() or not os.listdir(work / "checkpoints")


def test_help_lists_fields_and_variants():
    out = subprocess.run([sys.executable, "-m", "tsdkd_jax.main", "--config=configs/tiny.py", "--help"],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "gate_only" in out.stdout and "smoke" in out.stdout  # the variants of configs/tiny.py
    for field in ("loss.rank_k = 10", "optim.lr = 5e-6", "data.path", "checkpoint.allow_config_change"):
        assert field in out.stdout, field


# ---- the workdir after a copy, a finished run or a killed export (in-process runs) ---------------------------


def test_copied_workdir_fails_at_start_and_drops_its_stale_done(tiny_config, tmp_path):
    from tsdkd_jax import train

    c = tiny_config(total_steps=2, checkpoint__every=2)
    c.checkpoint.export = True
    train.run(c, str(tmp_path / "a"))
    assert (tmp_path / "a" / "DONE").exists() and (tmp_path / "a" / "export").is_dir()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    c.total_steps = 4
    with pytest.raises(FileExistsError, match="export of another run.*move"):
        train.Trainer(c, str(tmp_path / "b"))  # at start-up, not after training
    assert not (tmp_path / "b" / "DONE").exists()  # resume-until-done must not trust the copy's DONE
    shutil.move(tmp_path / "b" / "export", tmp_path / "b_export_of_a")
    train.run(c, str(tmp_path / "b"))
    assert (tmp_path / "b" / "DONE").exists()
    marker = json.loads((tmp_path / "b" / "export" / "tsdkd_run.json").read_text())
    assert marker["steps"] == 4 and marker["workdir"] == str(tmp_path / "b")


def test_export_killed_between_renames_is_recovered_and_leftovers_swept(tiny_config, tmp_path):
    from tsdkd_jax import train

    c = tiny_config(total_steps=2, checkpoint__every=2)
    c.checkpoint.export = True
    train.run(c, str(tmp_path))
    files = sorted(p.name for p in (tmp_path / "export").iterdir())
    # what a kill -9 in export leaves: a staging folder, and the old export renamed aside, none in place
    (tmp_path / ".export-k1ll3d").mkdir()
    (tmp_path / ".export-k1ll3d" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / "export").rename(tmp_path / ".export-old-123")
    t = train.Trainer(c, str(tmp_path))  # start-up puts the old export back and removes the staging folder
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == files
    t.run()  # the finished run exports again (old export aside, new one renamed in, old one removed)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export")] == []
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == files


@pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs (a real full disk) needs root; CI runs as root"
)
def test_full_disk_ends_in_one_short_line(tiny_dir, tmp_path):
    """A real ENOSPC (a 600 KiB tmpfs fills at the first checkpoint): one `disk full` line, exit code 2, and
    not hundreds of lines of Orbax's background-thread tracebacks before it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], check=False).returncode:
        pytest.skip("this machine does not allow a tmpfs mount")
    try:
        out = _run(mnt / "run", "--config.total_steps=6")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    line = _one_line_error(out, "disk full", "No space left on device")
    assert str(mnt / "run") in line
    assert len(out.stderr.splitlines()) < 60, out.stderr[-3000:]
