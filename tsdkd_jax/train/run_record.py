"""A run's config in its workdir: <workdir>/config.json, written at start and read back by tools such as
`python -m tsdkd_jax.inspect`."""

from __future__ import annotations

import json

import jax
import ml_collections

from tsdkd_jax.checkpoint import workdir as wd

RUN_CONFIG = "config.json"  # the run's config, in its workdir


def record(config, workdir: str) -> None:
    """Writes the run's config to <workdir>/config.json (process 0), so that tools such as
    `python -m tsdkd_jax.inspect --workdir=DIR` can rebuild the run's models, data and loss."""
    if jax.process_index() == 0:
        wd.write_text(wd.path(workdir) / RUN_CONFIG, config.to_json_best_effort(indent=1) + "\n")


def recorded(workdir: str) -> ml_collections.ConfigDict:
    """The config a run recorded in its workdir (see `record`)."""
    target = wd.path(workdir) / RUN_CONFIG
    if not target.exists():
        raise FileNotFoundError(f"{target}: no recorded config (is {workdir!r} a run's workdir?)")
    return ml_collections.ConfigDict(json.loads(target.read_text()))
