"""What host 0 writes into the workdir besides checkpoints — metrics.jsonl and the export — on local disk and
on GCS (fake_gcs: gs:// served from a local folder, appends refused as GCS refuses them)."""

import json
import os

import fake_gcs
import jax
import numpy as np
import pytest
from flax import nnx

from tsdkd_jax import data, models
from tsdkd_jax.train import export, metrics, tiny


@pytest.fixture
def bucket(tmp_path):
    fake_gcs.install(tmp_path / "gcs")
    return tmp_path / "gcs" / "bucket"


def _where(remote, bucket, tmp_path, name):
    """(workdir as the trainer gets it, the local folder that holds it)."""
    return (f"gs://bucket/{name}", bucket / name) if remote else (str(tmp_path / name), tmp_path / name)


def _rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("remote", [False, True])
def test_metrics_rows_and_resume_truncation(bucket, tmp_path, monkeypatch, remote):
    workdir, folder = _where(remote, bucket, tmp_path, "run")
    monkeypatch.setattr(metrics, "REMOTE_FLUSH_S", 3600.0)  # remote rows wait for close (or the interval)
    writer = metrics.MetricsWriter(workdir, total_steps=4)
    for step in range(4):
        writer.write(step, {"loss": 1.0 / (step + 1)})
    if remote:
        assert not (folder / "metrics.jsonl").exists()
    writer.close()
    assert [r["step"] for r in _rows(folder)] == [0, 1, 2, 3]

    # A run resumed from the step-1 checkpoint drops rows 2 and 3 and logs them again.
    monkeypatch.setattr(metrics, "REMOTE_FLUSH_S", 0.0)  # every row written through
    writer = metrics.MetricsWriter(workdir, total_steps=4, start_step=1)
    assert [r["step"] for r in _rows(folder)] == [0, 1]
    writer.write(2, {"loss": 0.25})
    assert [r["step"] for r in _rows(folder)] == [0, 1, 2]  # on disk before close
    writer.close()
    assert _rows(folder)[-1] == {"step": 2, "loss": 0.25}


@pytest.fixture(scope="module")
def student(tiny_dir):
    """(graphdef, params, tokenizer) of the tiny student."""
    paths = tiny.build(tiny_dir)
    graphdef, state = nnx.split(models.from_pretrained(paths["student"]))
    return graphdef, state, data.load_tokenizer(paths["tokenizer"])


def _files(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("remote", [False, True])
def test_export_replaces_its_own_and_refuses_another_runs(bucket, tmp_path, student, remote):
    graphdef, params, tokenizer = student
    workdir, folder = _where(remote, bucket, tmp_path, "run")
    out = export.export_student(graphdef, params, tokenizer, workdir, method="tsdkd", steps=3)
    assert out == f"{workdir}/export"
    marker = json.loads((folder / "export" / export.MARKER).read_text())
    assert marker == {"method": "tsdkd", "steps": 3, "workdir": workdir}
    reloaded = nnx.state(models.from_pretrained(folder / "export"))  # what transformers would read, too
    for a, b in zip(jax.tree.leaves(reloaded), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # The same run exports again (a later step): replaced; no staging folder left behind.
    export.export_student(graphdef, params, tokenizer, workdir, method="tsdkd", steps=5)
    assert json.loads((folder / "export" / export.MARKER).read_text())["steps"] == 5
    assert sorted(os.listdir(folder)) == ["export"]

    # An export another run wrote (its marker names another workdir), or one without a marker, is kept.
    for marker_text in ('{"workdir": "/elsewhere"}', None):
        if marker_text is None:
            (folder / "export" / export.MARKER).unlink()
        else:
            (folder / "export" / export.MARKER).write_text(marker_text)
        before = _files(folder / "export")
        with pytest.raises(FileExistsError, match="holds an export of another run"):
            export.export_student(graphdef, params, tokenizer, workdir, method="tsdkd", steps=6)
        assert _files(folder / "export") == before


def test_local_and_gcs_exports_hold_the_same_bytes(bucket, tmp_path, student):
    graphdef, params, tokenizer = student
    export.export_student(graphdef, params, tokenizer, str(tmp_path / "run"), method="tsdkd", steps=1)
    export.export_student(graphdef, params, tokenizer, "gs://bucket/run", method="tsdkd", steps=1)
    local, remote = _files(tmp_path / "run" / "export"), _files(bucket / "run" / "export")
    assert local.pop(export.MARKER) != remote.pop(export.MARKER)  # they name their own workdirs
    assert local == remote
