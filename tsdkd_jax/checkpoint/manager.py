"""Save / resume the student's train state with Orbax: async interval saves, keep-N, forced saves, restore
onto any mesh.

What is saved. Two items per step, in `<workdir>/checkpoints/<step>/`:
  `state` — the caller's pytree of jax arrays (student params, optimizer state, step, RNG key; a dict or an
            nnx.State), written by every process (Orbax saves are collective: call `save` on all hosts);
  `meta`  — a JSON dict (by convention {"data": iterator.get_state(), "config": config.to_dict(),
            "method": ...}), written by process 0.
The teacher is NEVER passed in: it is frozen, reloaded from its own path, and may be sharded differently.

Safety. A save never overwrites an existing step (a forced save of a step already on disk is skipped); a
save whose `metrics` or floating-point state is non-finite raises `NonFiniteError` before anything is
written; `close()` never saves. Partially written steps found at start-up are renamed aside, never deleted
(`integrity.py`). Old steps are deleted only by keep-N rotation when a new step is finalized.

Integrity. Every step's meta also holds (under identity.INTEGRITY_KEY, hidden from callers) the state's
structure, its array checksums (checksum.py) and the caller's run identity. Restore first compares structure
and identity (identity.py): a difference raises ConfigChangedError and touches nothing. Only a step that
cannot be read, or whose restored arrays fail their checksums, is treated as corrupt: moved aside, naming it,
and the previous step restored (single process; with several processes it raises instead).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any, Self

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from tsdkd_jax.checkpoint import checksum, identity, integrity
from tsdkd_jax.checkpoint import workdir as workdir_lib

log = logging.getLogger(__name__)


class NonFiniteError(ValueError):
    """Raised instead of saving a state (or metrics) holding NaN/inf."""


class ChecksumError(ValueError):
    """A restored step's arrays differ from the checksums saved with it (damaged after it was written)."""


def abstract_target(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or `jax.eval_shape` output) placed with `shardings`.

    `shardings` is a matching pytree of `jax.sharding.Sharding` or one sharding for every leaf. Restoring
    into this target reshards on read, so a checkpoint from mesh A lands directly on mesh B.
    """
    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


@jax.jit
def _all_finite(tree):
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


class Checkpointer:
    """Orbax CheckpointManager over `<workdir>/checkpoints` with the policies above.

    Typical trainer use::

        ckpt = Checkpointer(workdir, save_interval_steps=cfg.every, max_to_keep=cfg.keep)
        if ckpt.latest_step() is not None:
            state, meta = ckpt.restore(abstract_target(jax.eval_shape(init, rng), shardings))
            iterator.set_state(meta["data"])
        for step in range(start, total):
            state, metrics = train_step(...)
            ckpt.save(step, state, meta_fn(), metrics={"loss": loss})   # no-op off the interval
            if guard.should_stop(step):
                ckpt.save(step, state, meta_fn(), force=True); break
        ckpt.close()            # waits for the async save; a non-finite stop just calls close()
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        save_interval_steps: int = 1000,
        max_to_keep: int | None = 3,
        async_save: bool = True,
        run_identity: dict[str, str] | None = None,
        allow_config_change: bool = False,
    ):
        """`run_identity` (identity.run_identity) is saved with each step and compared on restore;
        `allow_config_change` turns an identity difference into a warning."""
        if save_interval_steps < 1:
            raise ValueError(f"checkpoint save_interval_steps must be >= 1, got {save_interval_steps}")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"checkpoint max_to_keep must be >= 1 (or None: keep all), got {max_to_keep}")
        self.run_identity, self.allow_config_change = run_identity, allow_config_change
        self.directory = workdir_lib.path(workdir) / "checkpoints"  # local or gs://
        if jax.process_index() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            integrity.sweep(self.directory)
        _barrier("tsdkd_checkpoint_sweep")
        policies = ocp.checkpoint_managers
        options = ocp.CheckpointManagerOptions(
            # Multiples of the interval plus JAX preemption sync points; unlike Orbax's default, no save of
            # whatever step comes first.
            save_decision_policy=policies.AnySavePolicy(
                [policies.FixedIntervalPolicy(save_interval_steps), policies.PreemptionCheckpointingPolicy()]
            ),
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=False,  # partial writes are moved aside by `integrity.sweep` instead
        )
        self._mgr = ocp.CheckpointManager(
            self.directory, item_names=(integrity.STATE, integrity.META), options=options
        )

    # ---- queries -------------------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        """Latest complete step on disk at start-up, or the latest step saved by this run (which may still
        be finalizing asynchronously; call `wait_until_finished()` first to be sure)."""
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    # ---- save ----------------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        meta: Mapping[str, Any],
        *,
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Start an async save of (`state`, `meta`) at `step`; True if one started. Call on every process.

        Without `force` it saves only on `save_interval_steps` multiples (Orbax's policy) and at a JAX
        preemption sync point. `force=True` (SIGTERM, end of run) saves any step not already on disk.
        Raises NonFiniteError, writing nothing, when a `metrics` value or a floating leaf of `state` is
        NaN/inf. `meta` must be JSON-serialisable.
        """
        step = int(step)
        if step in self._mgr.all_steps():
            if force:
                log.info("Step %d is already checkpointed; not overwriting it", step)
            return False
        if not force and not self._mgr.should_save(step):
            return False
        for name, value in (metrics or {}).items():
            if not math.isfinite(float(value)):
                raise NonFiniteError(f"Refusing to checkpoint step {step}: metric {name!r} is {float(value)}")
        if not bool(_all_finite(state)):
            raise NonFiniteError(f"Refusing to checkpoint step {step}: the state holds NaN or inf values")
        meta = dict(meta)
        meta[identity.INTEGRITY_KEY] = {
            "structure": checksum.structure(state),
            "checksums": checksum.checksums(state),  # collective
            "identity": self.run_identity,
        }
        try:
            json.dumps(meta)
        except TypeError as e:
            raise TypeError(f"checkpoint meta must be JSON-serialisable: {e}") from e
        args = ocp.args.Composite(
            **{integrity.STATE: ocp.args.StandardSave(state), integrity.META: ocp.args.JsonSave(meta)}
        )
        metrics = {k: float(v) for k, v in metrics.items()} if metrics else None
        return self._mgr.save(step, args=args, metrics=metrics, force=True)

    def wait_until_finished(self) -> None:
        """Block until the in-flight async save is finalized on disk."""
        self._mgr.wait_until_finished()

    def close(self) -> None:
        """Finish any in-flight save and release Orbax's threads. Never saves anything itself."""
        self._mgr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- restore -------------------------------------------------------------------------------------

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """(state, meta) of `step` (default: latest complete), state placed as `target` asks.

        `target` is a pytree of `jax.ShapeDtypeStruct` with `.sharding` (see `abstract_target`) of the same
        structure as the saved state; the mesh may differ from the one that saved it. Raises
        identity.ConfigChangedError (touching nothing) when the step was saved by another run identity or a
        state of another structure. When `step` is None and, in a single-process run, the latest step fails to
        read or fails its checksums, it is moved aside with a warning and the previous step is tried.
        """
        steps = [int(step)] if step is not None else sorted(self._mgr.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"No finalized checkpoint in {self.directory}")
        for i, s in enumerate(steps):
            saved = self._saved_integrity(s, target)  # a ConfigChangedError passes straight up
            try:
                return self._restore_step(s, target, saved)
            except Exception as e:  # any read failure or checksum mismatch of a corrupt step
                if step is not None or jax.process_count() > 1 or i == len(steps) - 1:
                    raise
                moved = integrity.quarantine(self.directory / str(s))
                log.warning(
                    "Could not restore checkpoint step %d (%s: %s); moved it aside to %s, trying step %d",
                    s, type(e).__name__, e, moved, steps[i + 1],
                )  # fmt: skip
                self._mgr.reload()
        raise AssertionError("unreachable")

    def _saved_integrity(self, step: int, target: Any) -> dict[str, Any]:
        """The step's integrity record ({} when unreadable or absent); compares structure and identity."""
        try:
            meta = json.loads((self.directory / str(step) / integrity.META / "metadata").read_text())
            saved = meta.get(identity.INTEGRITY_KEY) or {}
        except (OSError, ValueError, AttributeError):
            return {}  # unreadable: the Orbax read below fails and the step counts as corrupt
        where = f"step {step} in {self.directory}"
        identity.check(saved, target, self.run_identity, allow=self.allow_config_change,
                       where=where)  # fmt: skip
        return saved

    def _restore_step(self, step: int, target: Any, saved: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        args = ocp.args.Composite(
            **{integrity.STATE: ocp.args.StandardRestore(target), integrity.META: ocp.args.JsonRestore()}
        )
        out = self._mgr.restore(step, args=args)
        state, meta = out[integrity.STATE], dict(out[integrity.META])
        meta.pop(identity.INTEGRITY_KEY, None)
        if saved.get("checksums") is not None:
            diff = checksum.differences(saved["checksums"], checksum.checksums(state), limit=3)
            if diff:
                raise ChecksumError(
                    f"step {step}'s array data does not match its saved checksums ({'; '.join(diff)})"
                )
        return state, meta
