"""A step's metrics on the host (checked finite, with time and throughput), and their sinks on host 0:
<workdir>/metrics.jsonl, TensorBoard, and a progress line with ETA."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import jax

NONFINITE_ORDER = ("loss/direct", "loss/em", "loss/indirect", "loss/ce", "loss", "grad_norm")


def truncate_jsonl(path: str, last_step: int) -> None:
    """Drop rows logged after `last_step` (a run resumed from that checkpoint logs them again)."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip()]
    kept = [line for line in rows if json.loads(line).get("step", 0) <= last_step]
    if len(kept) != len(rows):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)


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
    """Writes one JSON object per logged step (and TensorBoard scalars) on process 0 only."""

    def __init__(self, workdir: str, *, total_steps: int, start_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.total, self.start = total_steps, start_step
        self.t0 = time.perf_counter()
        self.interactive = sys.stderr.isatty()
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        truncate_jsonl(self.path, start_step)
        self._file = open(self.path, "a")  # noqa: SIM115 (kept open for the run)
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        except ImportError:  # TensorBoard is optional at run time; JSONL is the record
            self._tb = None

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in values.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        if self.interactive and "loss" in row:
            done = step - self.start
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / max(done, 1) * (self.total - step)
            sys.stderr.write(
                f"\rstep {step}/{self.total} loss {row['loss']:.4f} "
                f"{done / max(elapsed, 1e-9):.2f} steps/s ETA {eta:,.0f}s   "
            )
            sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.interactive:
            sys.stderr.write("\n")
        self._file.close()
        if self._tb is not None:
            self._tb.close()
