"""SIGTERM (preemption) and SIGINT (Ctrl-C) handling that every process agrees on.

Single process: a Python handler for SIGTERM and SIGINT sets a flag; `should_stop(step)` returns it, and the
trainer saves the current step and exits 0. A second SIGINT ends the process at once (killed by SIGINT, no
cleanup, nothing saved), for when the save itself is not wanted or hangs.

Several processes with JAX's preemption service (started by `jax.distributed.initialize`, on by default):
JAX's own notifier catches SIGTERM and agrees on a step (max over hosts + 1), so `should_stop(step)` is
`multihost_utils.reached_preemption_sync_point(step)` and no Python handler is installed (one would shadow
JAX's); SIGINT keeps Python's default there (it aborts). Every process must call `should_stop` at every step, from the same first step.

Several processes without it: the Python flag is OR-reduced over processes (`process_allgather`) every
`sync_every` steps — a step-deterministic collective, so all processes stop at the same step.

After `should_stop` is True the trainer saves once (`Checkpointer.save(..., force=True)`), closes the
checkpointer and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Self

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


def _jax_preemption_service_running() -> bool:
    try:
        from jax._src import distributed  # the public API has no query for this

        return distributed.global_state.preemption_sync_manager is not None
    except (ImportError, AttributeError):
        return False


class PreemptionGuard:
    """Context manager (or `install()` / `uninstall()`) that turns SIGTERM into a clean stop request."""

    def __init__(self, *, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT), sync_every: int = 1):
        if sync_every < 1:
            raise ValueError(f"checkpoint sync_every must be >= 1, got {sync_every}")
        self.signals = signals
        self.sync_every = sync_every
        self._requested = threading.Event()
        self._previous: dict[int, object] = {}
        self._use_jax_service = False

    def install(self) -> Self:
        """Install the handler (main thread only); idempotent."""
        if self._previous or self._use_jax_service:
            return self
        if jax.process_count() > 1 and _jax_preemption_service_running():
            self._use_jax_service = True
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        """Restore the handlers that were there before `install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self._use_jax_service = False

    def __enter__(self) -> Self:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def _on_signal(self, signum, frame) -> None:
        # Set the flag before logging: a second signal can run this handler again inside the log call.
        first = not self._requested.is_set()
        self._requested.set()
        if signum == signal.SIGINT and not first:
            # Die of SIGINT itself rather than raise KeyboardInterrupt, whose `finally` blocks would wait for
            # the in-flight save; a half-written step is swept aside at the next start.
            os.write(
                2, b"tsdkd_jax: error: aborted by a second Ctrl-C: nothing saved since the last checkpoint\n"
            )
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
            return
        if first:
            again = " (Ctrl-C again aborts without saving)" if signum == signal.SIGINT else ""
            log.warning("Received %s: will save a checkpoint and stop%s", signal.Signals(signum).name, again)

    def request_stop(self) -> None:
        """Ask for a stop as if a signal had arrived (tests, or a trainer's own reasons)."""
        self._requested.set()

    @property
    def mode(self) -> str:
        """How stops are agreed: "signal" (one process), "jax_preemption_service" or "allgather"."""
        if jax.process_count() == 1:
            return "signal"
        return "jax_preemption_service" if self._use_jax_service else "allgather"

    @property
    def requested(self) -> bool:
        """Whether THIS process has seen a stop request (no cross-process agreement)."""
        return self._requested.is_set()

    def should_stop(self, step: int) -> bool:
        """True when every process should save at `step` and stop. Collective with several processes: call
        it on all of them at every step."""
        if jax.process_count() == 1:
            return self.requested
        if self._use_jax_service:
            if multihost_utils.reached_preemption_sync_point(int(step)):
                self._requested.set()
                return True
            return False
        if step % self.sync_every:
            return False
        flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
        return bool(np.any(flags))
