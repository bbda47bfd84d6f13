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


def _tb_scalars(folder) -> dict[int, dict[str, float]]:
    """{step: {tag: value}} of the TensorBoard event file, read from its TFRecord framing (u64 length,
    u32 crc, the Event proto, u32 crc)."""
    from tensorboardX.proto.event_pb2 import Event

    (name,) = os.listdir(folder / "tensorboard")
    raw, out, i = (folder / "tensorboard" / name).read_bytes(), {}, 0
    while i < len(raw):
        n = int.from_bytes(raw[i : i + 8], "little")
        event = Event.FromString(raw[i + 12 : i + 12 + n])
        i += 12 + n + 4
        for v in event.summary.value:
            out.setdefault(event.step, {})[v.tag] = v.simple_value
    return out


def test_tensorboard_gets_every_finite_value_of_a_row(tmp_path):
    writer = metrics.MetricsWriter(str(tmp_path), total_steps=2)
    writer.write(1, {"loss": 0.5, "lr": 1e-3, "bad": float("nan")})
    writer.write(2, {"loss": 0.25, "lr": 2e-3, "bad": 1.0})
    writer.close()
    assert _tb_scalars(tmp_path) == {
        1: {"loss": 0.5, "lr": np.float32(1e-3)},
        2: {"loss": 0.25, "lr": np.float32(2e-3), "bad": 1.0},
    }


def test_gcs_metrics_flush_at_checkpoints_and_survive_upload_errors(bucket, monkeypatch, caplog):
    monkeypatch.setattr(metrics, "REMOTE_FLUSH_S", 3600.0)
    writer = metrics.MetricsWriter("gs://bucket/run", total_steps=3)
    writer.write(1, {"loss": 1.0})
    writer.flush()  # what the trainer calls after each checkpoint save
    assert [r["step"] for r in _rows(bucket / "run")] == [1]
    real_write = metrics.wd.write_text
    monkeypatch.setattr(metrics.wd, "write_text", lambda *a: (_ for _ in ()).throw(OSError("503 from GCS")))
    writer.write(2, {"loss": 0.5})
    writer.flush()  # fails: logged, the run goes on, the rows are kept
    assert "could not write gs://bucket/run/metrics.jsonl (2 rows kept" in caplog.text
    monkeypatch.setattr(metrics.wd, "write_text", real_write)
    writer.write(3, {"loss": 0.25})
    writer.close()
    assert [r["step"] for r in _rows(bucket / "run")] == [1, 2, 3]


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
    assert marker == {"method": "tsdkd", "steps": 3, "workdir": workdir, "complete": True}
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


@pytest.mark.parametrize("remote", [False, True])
def test_failed_export_keeps_or_reclaims_the_folder(bucket, tmp_path, student, monkeypatch, remote):
    """A crash while exporting: locally the previous export stays whole (the new one never got renamed in);
    on GCS the folder is left marked incomplete and the same run's next export completes it. The local
    staging folder is removed either way."""
    graphdef, params, tokenizer = student
    workdir, folder = _where(remote, bucket, tmp_path, "run")
    export.export_student(graphdef, params, tokenizer, workdir, method="tsdkd", steps=1)
    before = _files(folder / "export")
    staged = []
    real_mkdtemp = export.tempfile.mkdtemp
    monkeypatch.setattr(
        export.tempfile, "mkdtemp", lambda **kw: staged.append(real_mkdtemp(**kw)) or staged[-1]
    )
    calls = []

    def flaky_upload(src, dst):  # the second file fails, as a dropped connection would
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("connection reset")
        return real_upload(src, dst)

    def crash_in_save(*args, **kwargs):
        raise OSError("disk full")

    real_upload = export.wd.upload_file
    if remote:
        monkeypatch.setattr(export.wd, "upload_file", flaky_upload)
    else:
        monkeypatch.setattr(export.models, "save_pretrained", crash_in_save)
    with pytest.raises(OSError):
        export.export_student(graphdef, params, tokenizer, workdir, method="tsdkd", steps=2)
    assert staged and not any(os.path.exists(p) for p in staged)
    if not remote:
        assert _files(folder / "export") == before
        return
    assert json.loads((folder / "export" / export.MARKER).read_text())["complete"] is False
    monkeypatch.setattr(export.wd, "upload_file", real_upload)
    export.export_student(graphdef, params, tokenizer, workdir, method="tsdkd", steps=2)
    after = _files(folder / "export")
    assert json.loads(after.pop(export.MARKER)) == {
        "method": "tsdkd", "steps": 2, "workdir": workdir, "complete": True
    }  # fmt: skip
    del before[export.MARKER]
    assert after == before  # same weights: every file uploaded again
