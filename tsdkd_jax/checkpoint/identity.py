"""The run identity saved with every checkpoint step, and the check that a resume is the same run.

Why: resuming with another student, method, loss, optimizer setting or dataset does not fail by itself — it
either silently continues a different experiment, or fails inside Orbax in a way that looks like a corrupt
step. So each step's meta holds (under INTEGRITY_KEY) the run identity (`run_identity`), the state's
shape/dtype structure and its array checksums (checksum.py); `check` compares the first two before anything
is read. A difference is a `ConfigChangedError` naming the fields; nothing on disk is renamed or deleted.
`checkpoint.allow_config_change=True` resumes anyway after a warning (identity only: a state of another shape
cannot be restored at all). The lora section counts only when LoRA is on. Fields left out on purpose:
total_steps (extending a run), mesh (restoring onto another mesh), checkpoint/eval/logging settings,
sampling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from tsdkd_jax.checkpoint import checksum

log = logging.getLogger(__name__)

INTEGRITY_KEY = "_tsdkd_integrity"  # reserved key of the meta item; stripped from what restore returns
OVERRIDE = "--config.checkpoint.allow_config_change=True"


class ConfigChangedError(ValueError):
    """Raised when a checkpoint was saved by a run with another identity or state structure."""


def _local_path(p: str) -> str:
    return os.path.abspath(os.path.expanduser(p)) if p and os.path.exists(os.path.expanduser(p)) else p


def data_fingerprint(data_config: Any, train_set: Any) -> str:
    """sha256 (16 hex digits) of the data section and the tokenized training examples."""
    h = hashlib.sha256(json.dumps(dict(data_config), sort_keys=True, default=str).encode())
    for part in (train_set.prompts, train_set.responses or []):
        for ids in part:
            h.update(memoryview(ids.astype("int32", copy=False)).cast("B"))
            h.update(b"|")
    return h.hexdigest()[:16]


def run_identity(config: Any, train_set: Any) -> dict[str, str]:
    """{field: JSON value} of what makes a checkpoint belong to this run (see the module docstring)."""
    from tsdkd_jax.train import methods  # here: tsdkd_jax.train imports this package

    ident = {
        "method": config.method,
        "student.path": _local_path(config.student.path),
        "teacher.path": _local_path(config.teacher.path) if methods.of(config).needs_teacher else "",
        "data (fingerprint of the data section and the tokenized examples)": data_fingerprint(
            config.data, train_set
        ),
    }
    # lora only when on: a plain run's identity stays what checkpoints saved before the section existed hold
    lora_on = "lora" in config and config.lora.rank
    for section in ("loss", "optim", *(("lora",) if lora_on else ())):
        for key, value in sorted(config[section].to_dict().items()):
            ident[f"{section}.{key}"] = value
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in ident.items()}


def check(
    saved: dict[str, Any], target: Any, identity: dict[str, str] | None, *, allow: bool, where: str
) -> None:
    """Raise ConfigChangedError when the step at `where` cannot or should not be resumed by this run.

    `saved` is the step's INTEGRITY_KEY dict ({} for steps written before it existed: nothing to check).
    """
    fresh = f"To start fresh, use another --workdir (or move {where} away); nothing on disk was changed."
    if saved.get("structure") is not None:
        diff = checksum.differences(saved["structure"], checksum.structure(target))
        if diff:
            raise ConfigChangedError(
                f"checkpoint {where} holds a train state of another shape than this run's model "
                f"({'; '.join(diff)}). Was student.path or a model setting changed? {fresh}"
            )
    if identity is None or saved.get("identity") is None:
        return
    diff = checksum.differences(saved["identity"], identity, limit=8)
    if not diff:
        return
    if not allow:
        raise ConfigChangedError(
            f"checkpoint {where} was saved by a run with another configuration: {'; '.join(diff)}. {fresh} "
            f"To resume it with the new values deliberately, pass {OVERRIDE}."
        )
    log.warning("resuming %s with a changed configuration (checkpoint.allow_config_change): %s", where, diff)


def check_resume_step(step: int, total_steps: int, directory) -> None:
    """A checkpoint past total_steps cannot be continued: say so instead of exiting 0 having done nothing."""
    if step > total_steps:
        raise ConfigChangedError(
            f"total_steps={total_steps} is below the step of the checkpoint to resume ({step}, in {directory}). "
            f"Raise --config.total_steps to continue past {step}, or use another --workdir to start fresh."
        )
