"""Weights & Biases: the rows of metrics.jsonl also logged to a W&B run (optional `wandb` extra).

Off by default (`config.logging.wandb.mode = "disabled"`); "offline" writes the run under the W&B folder
(`wandb sync` uploads it later), "online" streams it. Process 0 logs, like metrics.jsonl. The run id is kept in
<workdir>/wandb_run_id, so a resumed run continues the same W&B run. Every row carries its training "step",
which W&B plots against (`define_metric`): a resumed run that logs steps again after its checkpoint is not
dropped by W&B's own monotonic step counter.
"""

from __future__ import annotations

import logging
import os
import secrets

import jax
import ml_collections

from tsdkd_jax.checkpoint import workdir as wd

log = logging.getLogger(__name__)

MODES = ("disabled", "offline", "online")
RUN_ID_FILE = "wandb_run_id"


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "disabled"  # "disabled", "offline" (files only; `wandb sync` later) or "online"
    c.project = "tsdkd_jax"  # W&B project
    c.entity = ""  # W&B team/user ("" = the account's default)
    c.name = ""  # run name ("" = the workdir's folder name)
    c.dir = ""  # where W&B writes its files ("" = $WANDB_DIR, else the workdir when local, else the cwd)
    return c


def check(config) -> None:
    """config.logging.wandb: a known mode, and the package installed when it is on (errors name the field)."""
    mode = config.logging.wandb.mode
    if mode not in MODES:
        raise ValueError(f"logging.wandb.mode: must be one of {MODES}, got {mode!r}")
    if mode != "disabled":
        try:
            import wandb  # noqa: F401
        except ImportError as e:
            raise ValueError(
                f"logging.wandb.mode={mode!r} needs the wandb package: pip install 'tsdkd_jax[wandb]'"
            ) from e


def run_id(workdir: str) -> str:
    """The run's W&B id: the one recorded in <workdir>/wandb_run_id, else a new one (recorded)."""
    path = wd.path(workdir) / RUN_ID_FILE
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    new = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
    wd.write_text(path, new + "\n")
    return new


class WandbSink:
    """One W&B run fed the metrics rows; `open` gives None when W&B is off or this is not process 0."""

    def __init__(self, run):
        self.run = run

    @classmethod
    def open(cls, config, workdir: str) -> WandbSink | None:
        w = config.logging.wandb
        if w.mode == "disabled" or jax.process_index() != 0:
            return None
        check(config)
        import wandb

        folder = (
            w.dir or os.environ.get("WANDB_DIR") or (None if wd.is_remote(workdir) else os.fspath(workdir))
        )
        try:  # a run asked to log to W&B that cannot start it stops here, before any training
            run = wandb.init(
                project=w.project, entity=w.entity or None, name=w.name or os.path.basename(os.fspath(workdir)),
                id=run_id(workdir), resume="allow", mode=w.mode, dir=folder,
                config=config.to_dict(), settings=wandb.Settings(quiet=True),
            )  # fmt: skip
        except Exception as e:  # wandb raises its own errors (no API key, no network); name our field
            raise ValueError(f"logging.wandb (mode={w.mode!r}): could not start the W&B run: {e}") from e
        run.define_metric("*", step_metric="step")
        log.info("W&B run %s (%s, project %s)", run.id, w.mode, w.project)
        return cls(run)

    def log(self, row: dict) -> None:
        try:
            self.run.log(dict(row))
        except Exception as e:  # noqa: BLE001 - a W&B failure (network, quota) never stops training
            log.warning("W&B log failed at step %s: %s", row.get("step"), e)

    def close(self) -> None:
        try:
            self.run.finish()
        except Exception as e:  # noqa: BLE001 (see log)
            log.warning("could not finish the W&B run: %s", e)
