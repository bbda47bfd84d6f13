"""The trained student as a Hugging Face folder, <workdir>/export: weights, config and tokenizer.

A marker, tsdkd_run.json ({method, steps, workdir, complete}), names the run that wrote the folder, so an
export of another run (or a folder without a marker) is never overwritten; `prepare_workdir` checks that at
start-up, before any training, instead of after it. The files are written to a local staging folder
(`.export-<random>`) first. Locally the old export is then renamed aside (`.export-old-<time>`), the staging
folder renamed into place, and the old one removed: a kill -9 between the two renames leaves the old export
aside, which `prepare_workdir` renames back at the next start, and leftover staging folders are removed then. On gs://, where folders cannot
be renamed, the marker is written first with complete=false (claiming the folder), then the files are
uploaded, stale ones removed, and the marker rewritten with complete=true: a reader that sees
`complete: true` sees the whole export, and a run interrupted mid-upload finds its own incomplete export on
resume and writes it again. Process 0 writes; every process takes part in gathering the parameters and waits
until the export is in place (so no peer's shutdown deadline cuts a long upload short).

A LoRA student (models/lora.py) is exported merged, and its adapter alone goes to <workdir>/export_adapter
(PEFT's layout: weights/peft_lora.py), published the same way (staging `.export_adapter-<random>`, marker).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import time

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from tsdkd_jax import models
from tsdkd_jax.checkpoint import workdir as wd
from tsdkd_jax.models import lora
from tsdkd_jax.train import rollout
from tsdkd_jax.weights import peft_lora

log = logging.getLogger(__name__)

MARKER = "tsdkd_run.json"
ADAPTER = "export_adapter"  # a LoRA student's adapter alone (PEFT's layout), beside <workdir>/export


def export_student(
    graphdef, params, tokenizer, workdir: str, *, method: str, steps: int, base_model: str = ""
) -> str:
    """Writes the student (float32) and its tokenizer to <workdir>/export; returns that path. A LoRA student
    is exported merged (W + (α/r)·A·B), and its adapter alone to <workdir>/export_adapter in PEFT's layout
    (base_model: the original student folder, recorded in adapter_config.json)."""
    out = wd.path(workdir) / "export"
    model = nnx.merge(graphdef, rollout.to_host(params))  # collective
    model.dtype = np.dtype("float32")
    if jax.process_index() == 0:
        marker = {"method": method, "steps": steps, "workdir": workdir}
        if lora.has_adapters(model):  # the adapter first: merging drops it from the model
            save = functools.partial(peft_lora.save_adapter, model, base_model=base_model)
            _write_folder(workdir, ADAPTER, save, marker)
            lora.merge_into_base(model)
        _write_folder(workdir, "export", lambda tmp: _save_hf(model, tokenizer, tmp), marker)
        log.info("exported the student to %s", out)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("tsdkd_export")
    return os.fspath(out)


def _save_hf(model, tokenizer, folder: str) -> None:
    models.save_pretrained(model, folder)
    tokenizer.save_pretrained(folder)


def _write_folder(workdir: str, name: str, save, marker: dict) -> None:
    """save(staging folder), then publish it as <workdir>/<name> (see the module docstring)."""
    out = wd.path(workdir) / name
    _check_owner(out, workdir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Locally the staging folder sits beside `out` (one filesystem: an atomic rename).
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=None if wd.is_remote(out) else os.fspath(out.parent))
    try:
        save(tmp)
        _publish(tmp, out, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(staging: str, out, marker: dict) -> None:
    names = sorted(os.listdir(staging))
    if not wd.is_remote(out):
        wd.write_text(wd.path(staging) / MARKER, json.dumps({**marker, "complete": True}))
        old = os.path.join(os.fspath(out.parent), f".{out.name}-old-{time.time_ns()}")
        if out.exists():
            os.rename(os.fspath(out), old)
        os.rename(staging, os.fspath(out))
        shutil.rmtree(old, ignore_errors=True)
        return
    wd.write_text(out / MARKER, json.dumps({**marker, "complete": False}))
    for name in names:
        wd.upload_file(os.path.join(staging, name), out / name)
    for stale in {p.name for p in out.iterdir()} - {*names, MARKER}:
        (out / stale).unlink()
    wd.write_text(out / MARKER, json.dumps({**marker, "complete": True}))


def read_marker(folder) -> dict | None:
    """The marker of the export in `folder`, or None when it has none (or an unreadable one). An export is
    whole only when the marker says `complete: true`."""
    try:
        return json.loads((wd.path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _check_owner(out, workdir: str) -> None:
    prev = read_marker(out) if out.exists() else {"workdir": workdir}
    if prev is None or prev.get("workdir") != workdir:
        raise FileExistsError(
            f"{out} holds an export of another run (marker: {prev}); not overwriting it. A workdir copied from "
            f"another run brings that run's export: move {out} away (or delete it) and run again."
        )


def prepare_workdir(workdir: str, config, start_step: int) -> None:
    """Process 0, at start-up: finish or undo an export interrupted by a kill (see the module docstring),
    refuse now an export folder this run could not overwrite at the end, and remove a DONE marker left by an
    earlier run when this one will train (launch/'s resume-until-done trusts DONE)."""
    if jax.process_index() != 0:
        return
    root = wd.path(workdir)
    names = ("export", ADAPTER) if "lora" in config and config.lora.rank else ("export",)
    if not wd.is_remote(root) and root.is_dir():
        for name in ("export", ADAPTER):  # leftovers of either, whatever this run exports
            _recover(root, name)
    done = root / "DONE"
    if start_step < config.total_steps and done.exists():  # first: even if the check below stops this run
        done.unlink()
        log.warning("removed %s: it was left by an earlier run; this one trains on", done)
    if config.checkpoint.export:
        for name in names:
            _check_owner(root / name, os.fspath(workdir))


def _recover(root, name: str) -> None:
    """Undo what a kill left of publishing <root>/<name>: the old folder back, staging folders removed."""
    out = root / name
    for leftover in sorted(p for p in root.iterdir() if p.name.startswith(f".{name}-")):
        if leftover.name.startswith(f".{name}-old-") and not out.exists():
            os.rename(os.fspath(leftover), os.fspath(out))  # killed between the two renames
            log.warning("restored the previous %s from %s (an export was interrupted)", name, leftover)
        else:
            shutil.rmtree(os.fspath(leftover), ignore_errors=True)
            log.warning("removed %s, left by an interrupted export", leftover)
