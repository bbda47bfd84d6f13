"""The trained student as a Hugging Face folder, <workdir>/export: weights, config and tokenizer.

It is written aside and then put in place (renamed locally; on gs:// uploaded with the marker last), with a
marker (tsdkd_run.json: method, steps, workdir) naming the run that wrote it, so an export of another run is
never overwritten. Process 0 writes; every process takes part in gathering the parameters.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

import jax
import numpy as np
from flax import nnx

from tsdkd_jax import models
from tsdkd_jax.checkpoint import workdir as wd
from tsdkd_jax.train import rollout

log = logging.getLogger(__name__)

MARKER = "tsdkd_run.json"


def export_student(graphdef, params, tokenizer, workdir: str, *, method: str, steps: int) -> str:
    """Writes the student (float32) and its tokenizer to <workdir>/export; returns that path."""
    out = wd.path(workdir) / "export"
    model = nnx.merge(graphdef, rollout.to_host(params))  # collective
    model.dtype = np.dtype("float32")
    marker = {"method": method, "steps": steps, "workdir": workdir}
    if jax.process_index() == 0:
        if out.exists():
            prev = read_marker(out)
            if prev is None or prev.get("workdir") != workdir:
                raise FileExistsError(f"{out} holds an export of another run ({prev}); not overwriting it")
        # Locally the staging folder sits beside `out` (one filesystem: an atomic rename); for gs:// it is
        # on local disk and uploaded.
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = None if wd.is_remote(out) else os.fspath(out.parent)
        tmp = tempfile.mkdtemp(prefix=".export-", dir=staging)
        models.save_pretrained(model, tmp)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump(marker, f)
        wd.publish_folder(tmp, out, last=MARKER)
        log.info("exported the student to %s", out)
    return os.fspath(out)


def read_marker(folder: str) -> dict | None:
    """The marker of the export in `folder`, or None when it has none (or an unreadable one)."""
    try:
        return json.loads((wd.path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
