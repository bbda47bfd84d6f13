"""A step's metrics on the host (checked finite, with time and throughput), and their sinks on host 0:
<workdir>/metrics.jsonl, TensorBoard, W&B when `config.logging.wandb` turns it on (wandb_log.py), and a
progress line with ETA.

A local metrics.jsonl is appended to and flushed every row. A gs:// one cannot be appended to (GCS objects
are written whole), so its rows are kept in memory and the object is rewritten at most every
`REMOTE_FLUSH_S` seconds, whenever the trainer saves a checkpoint (`flush`), and on close. A crash therefore
loses only rows after the last checkpoint, which the resumed run logs again (it truncates the file to its
checkpoint step first). A failed upload is logged and retried at the next flush: metrics never stop a run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import jax

from tsdkd_jax.checkpoint import workdir as wd
from tsdkd_jax.train import progress, wandb_log
from tsdkd_jax.train import state as state_lib

log = logging.getLogger(__name__)

NONFINITE_ORDER = ("loss/direct", "loss/em", "loss/indirect", "loss/ce", "loss", "grad_norm")


REMOTE_FLUSH_S = 30.0


def truncate_jsonl(path, last_step: int) -> list[str]:
    """Drop rows logged after `last_step` (a run resumed from that checkpoint logs them again); returns the
    rows kept. `path`: a local path or an epath.Path (gs://)."""
    path = wd.path(path)
    if not path.exists():
        return []
    rows = [line + "\n" for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line).get("step", 0) <= last_step]
    if len(kept) != len(rows):
        wd.write_text(path, "".join(kept))
    return kept


def first_nonfinite(metrics: dict[str, float]) -> str | None:
    """The name of the term to blame for a non-finite loss (loss terms first)."""
    names = [n for n in NONFINITE_ORDER if n in metrics] + sorted(metrics)
    for name in names:
        if not math.isfinite(metrics[name]):
            return name
    return None


class NonFiniteLossError(RuntimeError):
    """The run stopped because a step's loss was NaN/inf."""


def host_values(step: int, metrics, extra: dict, t_dispatch: float, *, peak_flops, n_devices: int) -> dict:
    """A dispatched step's metrics pulled to the host (a non-finite one stops the run), with `extra`, the
    step's wall time since `t_dispatch`, token throughput and MFU."""
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    bad = first_nonfinite(values)
    if bad is not None:
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {bad} = {values[bad]} (loss = {values.get('loss')}); "
            "stopping without a checkpoint"
        )
    dt = time.perf_counter() - t_dispatch
    values.update(extra)
    values["time/step"] = dt
    values["tokens_per_s"] = values["tokens"] / max(dt, 1e-9)
    if peak_flops:
        values["mfu"] = values["flops"] / max(dt, 1e-9) / (peak_flops * n_devices)
    return values


class MetricsWriter:
    """Writes one JSON object per logged step (and TensorBoard scalars, W&B rows) on process 0 only.

    `config`, when given, is the run's: its `logging.wandb` section may add a W&B run (wandb_log.py).
    """

    def __init__(self, workdir: str, *, total_steps: int, start_step: int = 0, config=None):
        self.enabled = jax.process_index() == 0
        self.total, self.start = total_steps, start_step
        self.t0 = time.perf_counter()
        self._tb = self._wandb = None
        if not self.enabled:
            return
        if config is not None and "logging" in config:
            self._wandb = wandb_log.WandbSink.open(config, workdir)
        self._bar = progress.Bar(total_steps, start_step) if progress.wanted() else None
        root = wd.path(workdir)
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "metrics.jsonl"
        kept = truncate_jsonl(self.path, start_step)
        self.remote = wd.is_remote(self.path)
        self._rows, self._flushed_at = kept, time.monotonic()  # remote only: the whole file
        # Local: appended to and flushed every row (kept open for the run).
        self._file = None if self.remote else open(os.fspath(self.path), "a")  # noqa: SIM115
        try:  # TensorBoard is optional at run time; JSONL is the record
            from tensorboardX import SummaryWriter

            if self.remote:  # tensorboardX writes gs:// through this client (gcsfs brings it)
                import google.cloud.storage  # noqa: F401
            self._tb = SummaryWriter(os.fspath(root / "tensorboard"))
        except ImportError as e:
            log.warning("no TensorBoard events: %s", e)

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in values.items()}}
        if self.remote:
            self._rows.append(json.dumps(row) + "\n")
            if time.monotonic() - self._flushed_at >= REMOTE_FLUSH_S:
                self._flush_remote()
        else:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        if self._tb is not None:
            self._tb_write(step, row)
        if self._wandb is not None:
            self._wandb.log(row)
        if self._bar is not None and "loss" in row:
            self._bar.update(step, row["loss"])

    def _tb_write(self, step: int, row: dict[str, float]) -> None:
        """The row's finite values as one TensorBoard event: add_scalar per value (an event and a proto
        with plugin metadata each) took ~2 ms a row on the 2-core box, a tenth of a tiny step."""
        from tensorboardX.proto.summary_pb2 import Summary  # optional: only imported with a writer open

        values = [
            Summary.Value(tag=k, simple_value=v) for k, v in row.items() if k != "step" and math.isfinite(v)
        ]
        self._tb._get_file_writer().add_summary(Summary(value=values), step)  # no public call for one event

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._wandb is not None:
            self._wandb.close()
        if self.remote:
            self._flush_remote()
        else:
            self._file.close()
        if self._tb is not None:
            try:
                self._tb.close()  # on gs:// an upload, which may fail like any other
            except Exception as e:  # noqa: BLE001 (see _flush_remote)
                log.warning("could not close the TensorBoard writer: %s", e)

    def flush(self) -> None:
        """Everything written so far is in metrics.jsonl (called at checkpoints)."""
        if self.enabled and self.remote:
            self._flush_remote()

    def _flush_remote(self) -> None:
        self._flushed_at = time.monotonic()
        try:
            wd.write_text(self.path, "".join(self._rows))
        # gcsfs raises its HttpError and google-auth transport errors besides OSError; none should end a run.
        except Exception as e:  # noqa: BLE001
            log.warning(
                "could not write %s (%d rows kept for the next try): %s", self.path, len(self._rows), e
            )


def log_run_summary(t) -> None:
    """One INFO line describing a built run (builder.Run) (models, mesh, memory of weights and optimizer, data)."""
    c = t.config
    n_s = state_lib.count_params(t.state["params"])
    n_t = state_lib.count_params(t.teacher_params) if t.teacher_params is not None else 0
    n_train = state_lib.count_params(state_lib.split_trainable(t.state["params"])[0])  # < n_s: LoRA
    # Weights and optimizer only (fp32 params; AdamW moments + fp32 gradients of the trained ones; teacher).
    gb = (4 * n_s + 12 * n_train + jax.numpy.dtype(c.teacher.dtype).itemsize * n_t) / 1e9
    peak = f"{t.peak_flops / 1e12:.0f} TFLOP/s" if t.peak_flops else "unknown"
    log.info(
        "tsdkd run: method=%s processes=%d devices=%d (%s, peak bf16 %s/device) mesh=%s student=%.2fM "
        "params (%.4fM trained, fp32 master, %s compute) teacher=%.2fM params (%s) state+teacher≈%.1f GB (no "
        "activations) batch=%d×%d accum=%d steps=%d start=%d train=%d heldout=%d",
        c.method, jax.process_count(), jax.device_count(), jax.devices()[0].device_kind, peak,
        dict(t.mesh.shape), n_s / 1e6, n_train / 1e6, c.student.compute_dtype, n_t / 1e6, c.teacher.dtype, gb,
        c.data.batch_size, c.sampling.max_new_tokens, c.optim.grad_accum, c.total_steps, t.start_step,
        len(t.iterator.examples), len(t.heldout),
    )  # fmt: skip
