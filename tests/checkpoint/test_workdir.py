"""The run folder on local disk and on GCS (a gs:// stand-in, fake_gcs): paths, whole-file writes, uploads,
the missing-gcsfs error, and the partial-checkpoint sweep reading a gs:// checkpoints folder."""

import logging
import os
import shutil
import subprocess
import sys

import fake_gcs
import numpy as np
import pytest
from ckpt_states import make_state

from tsdkd_jax.checkpoint import Checkpointer, integrity
from tsdkd_jax.checkpoint import workdir as wd


@pytest.fixture
def bucket(tmp_path):
    """(gs:// URL of a run folder, the local folder that holds it)."""
    fake_gcs.install(tmp_path / "gcs")
    return "gs://bucket/run", tmp_path / "gcs" / "bucket" / "run"


def test_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert os.fspath(wd.path("rel/run")) == os.path.join(str(tmp_path), "rel", "run")
    assert os.fspath(wd.path("~/x")) == os.path.expanduser("~/x")
    assert os.fspath(wd.path("gs://b/run") / "checkpoints") == "gs://b/run/checkpoints"  # not a local "gs:"
    assert wd.is_remote("gs://b/run") and not wd.is_remote("/tmp/run")


@pytest.mark.parametrize("remote", [False, True])
def test_write_text_replaces_the_whole_file(bucket, tmp_path, remote):
    url, local = bucket if remote else (str(tmp_path / "run"), tmp_path / "run")
    target = wd.path(url) / "sub" / "metrics.jsonl"
    wd.write_text(target, "a\nb\n")
    wd.write_text(target, "a\n")
    assert (local / "sub" / "metrics.jsonl").read_text() == "a\n"
    assert os.listdir(local / "sub") == ["metrics.jsonl"]  # no temporary file left behind


@pytest.mark.parametrize("remote", [False, True])
def test_upload_file_streams_bytes_into_place(bucket, tmp_path, remote):
    url, local = bucket if remote else (str(tmp_path / "run"), tmp_path / "run")
    blob = np.random.default_rng(0).bytes(3 * 1024**2 + 7)  # not a multiple of any buffer size
    (tmp_path / "shard.bin").write_bytes(blob)
    wd.path(url).mkdir(parents=True, exist_ok=True)
    wd.upload_file(str(tmp_path / "shard.bin"), wd.path(url) / "export" / "shard.bin")
    assert (local / "export" / "shard.bin").read_bytes() == blob


def test_check_names_the_missing_piece():
    with pytest.raises(ValueError, match="expected a local path or gs://"):
        wd.check("s3://b/run")
    wd.check("/tmp/anything")  # local: nothing needed
    # A fresh process where neither gcsfs nor TensorFlow can be imported.
    code = (
        "import sys; sys.modules['gcsfs'] = sys.modules['tensorflow'] = None\n"
        "from tsdkd_jax.checkpoint import workdir\n"
        "workdir.check('gs://b/run')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    argv = [sys.executable, "-c", code]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "is on GCS, which needs gcsfs: pip install 'tsdkd_jax[gcs]'" in proc.stderr, proc.stderr


def test_partial_step_sweep_on_gcs(bucket, tmp_path, caplog):
    """Steps saved locally, copied into the bucket; the latest made partial the way a crashed GCS save
    leaves it (Orbax's CommitFileTemporaryPath: `<step>/` without commit_success.txt). The sweep that
    `Checkpointer` runs first reads and renames through epath; Orbax's own manager then asks the GCS client
    about the bucket, which needs the network, so it is not built here."""
    url, local = bucket
    with Checkpointer(tmp_path / "saved", max_to_keep=None) as ckpt:
        for step in (1, 2):
            ckpt.save(step, make_state(seed=step), {"step": step}, force=True)
    shutil.copytree(tmp_path / "saved" / "checkpoints", local / "checkpoints")
    (local / "checkpoints" / "2" / "commit_success.txt").unlink()
    with caplog.at_level(logging.WARNING, logger="tsdkd_jax.checkpoint"):
        assert integrity.sweep(wd.path(url) / "checkpoints") == [1]
    assert "Skipping partially written checkpoint step 2 in gs://bucket/run/checkpoints" in caplog.text
    names = sorted(os.listdir(local / "checkpoints"))
    assert names[0] == "1" and names[1].startswith("2.partial-")  # moved aside in the bucket, not deleted
